"""Build a teacher backend from the ``teacher`` config section, and hash what defines it.

The teacher config looks like::

    teacher:
      backend: brisque            # brisque | import | vllm | transformers
      levels: {words: [Excellent, Good, Fair, Poor, Bad], values: [5, 4, 3, 2, 1]}
      model: ...                  # MLLM backends (default of <backend>.model)
      prompts: {...}              # MLLM backends
      brisque: {best: 0, worst: 100, sigma: 0.75, temperature: 0.5, workers: 1}
      import: {path: ..., format: qbench}
      vllm: {...}
      tau: 0.5                    # not part of the hash
      shards: 1                   # not part of the hash

:func:`judgment_config` keeps what the backend needs (the rules pass it as a param, so changing
``tau``, ``shards`` or another backend's options does not rerun the teacher); :func:`teacher_hash`
hashes what defines the judgments: that, minus the options that only change speed or logging
(:data:`NON_JUDGMENT_OPTIONS`). ``teacher_hash(judgment_config(cfg)) == teacher_hash(cfg)``.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
from typing import Any

from leaf.teacher.backend import Levels, TeacherBackend

HASH_LENGTH = 12
# Top-level keys that define the judgments (besides the selected backend's own options).
JUDGMENT_KEYS = ("backend", "levels", "model", "prompts", "pairs")
# Backend options that change speed or logging only, never a judgment.
NON_JUDGMENT_OPTIONS = frozenset({"workers", "num_workers", "progress", "shards", "tau"})
# backend name -> (module, class) for the MLLM backends, imported only when selected.
LAZY_BACKENDS = {
    "vllm": ("leaf.teacher.vllm_backend", "VllmTeacher"),
    "transformers": ("leaf.teacher.hf_backend", "TransformersTeacher"),
}
BACKENDS = ("brisque", "import", *LAZY_BACKENDS)


def _backend_name(teacher_cfg: dict) -> str:
    name = teacher_cfg.get("backend")
    if name not in BACKENDS:
        raise ValueError(f"unknown teacher backend {name!r}; choose one of {BACKENDS}")
    return name


def _backend_options(teacher_cfg: dict, name: str) -> dict[str, Any]:
    return dict(teacher_cfg.get(name) or {})


def judgment_config(teacher_cfg: dict) -> dict[str, Any]:
    """The teacher config without tau, shards and the options of unselected backends."""
    name = _backend_name(teacher_cfg)
    selected = {key: teacher_cfg[key] for key in (*JUDGMENT_KEYS, name) if key in teacher_cfg}
    return copy.deepcopy(selected)


def teacher_identity(teacher_cfg: dict) -> dict[str, Any]:
    """The part of the teacher config that determines its judgments (what is hashed)."""
    name = _backend_name(teacher_cfg)
    identity = {key: teacher_cfg.get(key) for key in JUDGMENT_KEYS}
    options = _backend_options(teacher_cfg, name)
    identity["options"] = {k: v for k, v in options.items() if k not in NON_JUDGMENT_OPTIONS}
    return copy.deepcopy(identity)


def teacher_hash(teacher_cfg: dict) -> str:
    """Stable 12-hex sha256 of the canonical JSON of :func:`teacher_identity`."""
    canonical = json.dumps(teacher_identity(teacher_cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LENGTH]


def make_backend(teacher_cfg: dict) -> TeacherBackend:
    """Instantiate the backend named by ``teacher_cfg["backend"]``."""
    name = _backend_name(teacher_cfg)
    levels = Levels.from_config(teacher_cfg["levels"])
    options = _backend_options(teacher_cfg, name)
    if name == "brisque":
        from leaf.teacher.brisque_backend import BrisqueTeacher

        return BrisqueTeacher(levels, **options)
    if name == "import":
        from leaf.teacher.import_backend import ImportedEnsemble, ImportedTeacher

        if "path" not in options:
            raise ValueError("teacher backend 'import' needs teacher.import.path")
        if isinstance(options["path"], list):  # several files: an ensemble
            return ImportedEnsemble(levels, **options)
        return ImportedTeacher(levels, **options)
    module_name, class_name = LAZY_BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
        backend_class = getattr(module, class_name)
    except (ImportError, AttributeError) as error:
        raise ImportError(
            f"teacher backend {name!r} needs {module_name}.{class_name}, which cannot be "
            f"imported ({error}); is the backend installed (e.g. pip install '.[vllm]')?"
        ) from error
    if "model" in teacher_cfg:
        options.setdefault("model", teacher_cfg["model"])
    return backend_class(levels, **options, prompts=teacher_cfg.get("prompts"))
