"""Shared test set-up."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def single_thread():
    """One torch intra-op thread in every test: a fixed thread count (deterministic sums), and
    fast on a loaded 2-core machine (spinning OpenMP threads otherwise stall each other)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Test modules that start in-process vLLM engines.
ENGINE_TEST_MODULES = ("test_mllm_backends", "test_teacher_presets")


def pytest_collection_modifyitems(session, config, items):
    """Run the in-process vLLM engine tests first.

    vLLM 0.32's kernel-override scan (vllm/triton_utils/dispatcher.py) walks every loaded module
    and crashes on llvmlite's function wrappers, which the `brisque` package (imported by the
    BRISQUE comparison tests) loads. Workflow runs are unaffected: each teacher job is its own
    process.
    """
    items.sort(key=lambda item: item.module.__name__ not in ENGINE_TEST_MODULES)
