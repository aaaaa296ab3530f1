"""Atomic file writes: a killed job never leaves a readable partial output."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def atomic_target(path: Path) -> Path:
    """A temporary sibling name for ``path`` (same folder, so os.replace is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = atomic_target(path)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
