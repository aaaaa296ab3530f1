"""``leaf predict``: score new images with a deployed student artifact (``*.leaf.pt``).

Images come from a folder (searched recursively), a CSV of paths (column ``path``, else the first
column; relative paths are taken from the CSV's folder) or a glob pattern, and are read lazily:
only one batch of decoded images (plus the next one, being decoded in a background thread) is in
memory at a time, and scores are appended to the output file batch by batch (Parquet through
``pyarrow.parquet.ParquetWriter``, or CSV when the output name ends with ``.csv``), so memory stays
flat however many images there are. The output appears atomically when the run ends.

Unreadable images are skipped and listed (path, error) in ``<output>.errors.csv``, and a summary
goes to stderr. Scores come from PyTorch (fp32, or bf16 autocast with ``bf16=True``) or from an
exported ONNX model run by ONNX Runtime (``onnx=...``, see :mod:`leaf.export`).
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from leaf.atomic_io import atomic_path, atomic_target
from leaf.model_folder import load_student
from leaf.optional import optional_import
from leaf.scoring import (
    iter_batches,
    iter_image_paths,
    onnx_scorer,
    score_by_shape,
    torch_scorer,
)
from leaf.student.features import bf16_autocast_supported

log = logging.getLogger(__name__)

# Provenance fields copied into every output row (constant per model).
PROVENANCE_COLUMNS = ("dataset", "teacher_hash", "teacher_backend", "ratio", "seed", "config_hash")
ROW_GROUP_ROWS = 8192


# ----------------------------------------------------------------------------- image sources


# ----------------------------------------------------------------------------- scoring


# ----------------------------------------------------------------------------- output


class ScoreWriter:
    """Appends (path, score, provenance...) rows to a Parquet or CSV file, written to a
    temporary sibling and renamed into place by :meth:`close` (removed by :meth:`abort`)."""

    def __init__(self, path: str | Path, provenance: dict[str, Any]):
        self.path = Path(path)
        self.tmp = atomic_target(self.path)
        self.csv = self.path.suffix.lower() == ".csv"
        self.constants = {name: provenance.get(name) for name in PROVENANCE_COLUMNS}
        self.names = ["path", "score", *PROVENANCE_COLUMNS]
        self.rows = 0
        self._pending: list = []
        self._pending_rows = 0
        if self.csv:
            self._handle = open(self.tmp, "w", newline="")
            self._csv = csv.writer(self._handle)
            self._csv.writerow(self.names)
            return
        # Parquet needs pyarrow (the [workflow] extra); CSV output needs nothing more.
        self._pa = optional_import("pyarrow", "workflow", "Parquet output (use a .csv name)")
        pa = self._pa
        self.schema = pa.schema(
            [
                ("path", pa.string()),
                ("score", pa.float64()),
                ("dataset", pa.string()),
                ("teacher_hash", pa.string()),
                ("teacher_backend", pa.string()),
                ("ratio", pa.float64()),
                ("seed", pa.int64()),
                ("config_hash", pa.string()),
            ]
        )
        self._parquet = optional_import("pyarrow.parquet", "workflow", "Parquet output")
        self._parquet = self._parquet.ParquetWriter(self.tmp, self.schema)

    def write(self, paths: list[str], scores: np.ndarray) -> None:
        """Append one batch of rows."""
        if not paths:
            return
        self.rows += len(paths)
        if self.csv:
            constants = [self.constants[name] for name in PROVENANCE_COLUMNS]
            self._csv.writerows(
                [path, repr(float(score)), *constants]
                for path, score in zip(paths, scores, strict=True)
            )
            return
        columns = {"path": paths, "score": np.asarray(scores, dtype=np.float64)}
        columns.update({name: [value] * len(paths) for name, value in self.constants.items()})
        self._pending.append(self._pa.RecordBatch.from_pydict(columns, schema=self.schema))
        self._pending_rows += len(paths)
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = self._pa.Table.from_batches(self._pending, schema=self.schema)
            self._parquet.write_table(table)
            self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        """Finish the file and move it into place."""
        if self.csv:
            self._handle.close()
        else:
            self._flush()
            self._parquet.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Drop the partial output."""
        try:
            if self.csv:
                self._handle.close()
            else:
                self._parquet.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def errors_path(output: str | Path) -> Path:
    """Where the unreadable files of a run writing ``output`` are listed."""
    output = Path(output)
    return output.with_name(f"{output.name}.errors.csv")


@dataclass
class PredictSummary:
    """What a :func:`predict_images` run did."""

    output: Path
    scored: int
    errors: list[tuple[str, str]]
    seconds: float
    backend: str

    @property
    def images_per_second(self) -> float:
        """Scored images per second (decoding included)."""
        return self.scored / max(self.seconds, 1e-9)

    def report(self) -> str:
        """Human-readable summary (for stderr)."""
        lines = [
            f"scored {self.scored} images in {self.seconds:.1f} s "
            f"({self.images_per_second:.1f} images/s, {self.backend}) -> {self.output}"
        ]
        if self.errors:
            lines.append(
                f"skipped {len(self.errors)} unreadable files (listed in "
                f"{errors_path(self.output)}):"
            )
            lines += [f"  {path}: {error}" for path, error in self.errors[:10]]
            if len(self.errors) > 10:
                lines.append(f"  ... and {len(self.errors) - 10} more")
        return "\n".join(lines)


def _write_errors(output: Path, errors: list[tuple[str, str]]) -> None:
    target = errors_path(output)
    if not errors:
        target.unlink(missing_ok=True)
        return
    with atomic_path(target) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "error"])
        writer.writerows(errors)


def predict_images(
    model: str | Path,
    source: str | Path | Iterable[str | Path],
    output: str | Path,
    batch_size: int = 32,
    bf16: bool = False,
    onnx: str | Path | None = None,
    threads: int | None = None,
    progress: bool = True,
    prefetch: bool = True,
) -> PredictSummary:
    """Score every image of ``source`` with the artifact ``model`` and write ``output``
    (Parquet, or CSV for a ``.csv`` name): one row per readable image with path, score and the
    model's provenance (dataset, teacher_hash, teacher_backend, ratio, seed, config_hash).

    ``source`` is a folder, a CSV of paths, a glob (see :func:`iter_image_paths`) or an iterable
    of paths. ``onnx`` runs that exported ONNX model (see :mod:`leaf.export`; it must come from
    ``model``) with ONNX Runtime instead of PyTorch; ``bf16`` enables CPU bf16 autocast for
    PyTorch. Unreadable files are skipped and listed in :func:`errors_path` of ``output``.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    if threads:
        torch.set_num_threads(threads)
    student = load_student(model)
    if onnx is not None:
        if bf16:
            raise ValueError("--bf16 applies to PyTorch only; the ONNX model runs in float32")
        scorer, backend = onnx_scorer(onnx, student, threads), "onnxruntime fp32"
    else:
        scorer = torch_scorer(student, bf16)
        backend = "pytorch bf16" if bf16 and bf16_autocast_supported() else "pytorch fp32"
    if isinstance(source, str | Path):
        paths: Iterable[Path] = iter_image_paths(source)
    else:
        paths = (Path(p) for p in source)

    output = Path(output)
    writer = ScoreWriter(output, student.provenance)
    errors: list[tuple[str, str]] = []
    start = time.perf_counter()
    try:
        with tqdm(desc="predict", unit="img", disable=not progress, file=sys.stderr) as bar:
            for batch in iter_batches(paths, student.transform(), batch_size, prefetch):
                errors.extend(batch.errors)
                if batch.tensors:
                    writer.write(batch.paths, score_by_shape(scorer, batch.tensors))
                bar.update(len(batch.paths) + len(batch.errors))
                if batch.errors:
                    bar.set_postfix(errors=len(errors))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    _write_errors(output, errors)
    return PredictSummary(output, writer.rows, errors, time.perf_counter() - start, backend)


def run_predict(
    model: str,
    source: str,
    output: str,
    batch_size: int = 32,
    bf16: bool = False,
    onnx: str | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> int:
    """``leaf predict``: run :func:`predict_images`, print its summary to stderr and return the
    exit code (1 when no image could be scored)."""
    summary = predict_images(
        model, source, output, batch_size, bf16, onnx, threads, progress=progress
    )
    print(summary.report(), file=sys.stderr)
    return 0 if summary.scored else 1
