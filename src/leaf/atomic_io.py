"""Atomic file writes: a killed job never leaves a readable partial output.

Every output of the package is written through a temporary sibling and an atomic rename:
:func:`atomic_path` (any writer), :func:`write_parquet_atomic`, :func:`torch_save_atomic` and
:func:`json_write_atomic` (strict JSON: no NaN).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def atomic_target(path: Path) -> Path:
    """A temporary sibling name for ``path`` (same folder, so os.replace is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; rename it onto ``path`` on success.

    On an exception (or a kill) ``path`` is untouched and the temporary file is removed.
    """
    path = Path(path)
    tmp = atomic_target(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def torch_save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` ``obj`` to ``path`` through a temporary sibling and an atomic rename."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def json_write_atomic(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as strict, indented JSON (no NaN: use None) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
