"""The CNN student: frozen timm backbone features, a small trainable quality head, the two-stage
training (stage 1: distillation from the MLLM teacher, no MOS; stage 2: calibration on a small MOS
subset) and the workflow step functions.

Modules: :mod:`~leaf.student.backbones` (timm models with offline weights),
:mod:`~leaf.student.features` (frozen-feature extraction), :mod:`~leaf.student.heads` (the head and
its checkpoints), :mod:`~leaf.student.losses`, :mod:`~leaf.student.train` and
:mod:`~leaf.student.steps` (the rules' functions).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from leaf.parquet_io import atomic_path

# Idle OpenMP threads sleep instead of spinning. With spinning (the default), a 2-thread torch job
# beside any other busy process waits ~1 s per forward pass on a 2-core machine. Must be set
# before torch loads its OpenMP runtime; users can still override it in the environment.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def torch_save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` ``obj`` to ``path`` through a temporary sibling and an atomic rename."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def json_write_atomic(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as strict, indented JSON (no NaN: use None) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
