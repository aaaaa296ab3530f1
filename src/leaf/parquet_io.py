"""Atomic file writes: a killed job never leaves a readable partial output."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

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
