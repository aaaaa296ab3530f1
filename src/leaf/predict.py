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
import glob
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from tqdm import tqdm

from leaf.deploy import StudentModel, load_artifact
from leaf.images import read_rgb
from leaf.parquet_io import atomic_path, atomic_target
from leaf.student.features import bf16_autocast_supported

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
)
# Provenance fields copied into every output row (constant per model).
PROVENANCE_COLUMNS = ("dataset", "teacher_hash", "teacher_backend", "ratio", "seed", "config_hash")
ROW_GROUP_ROWS = 8192

Scorer = Callable[[torch.Tensor], np.ndarray]


# ----------------------------------------------------------------------------- image sources


def _walk_images(folder: Path) -> Iterator[Path]:
    """Image files under ``folder``, depth first, in name order within each folder (only one
    folder's names are listed at a time)."""
    with os.scandir(folder) as entries:
        names = sorted((entry.name, entry.is_dir()) for entry in entries)
    for name, is_dir in names:
        path = folder / name
        if is_dir:
            yield from _walk_images(path)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            yield path


def _csv_paths(table: Path) -> Iterator[Path]:
    """Paths listed in a CSV (column ``path``, else the first column), read row by row. Without
    a ``path`` header, a first row whose first cell looks like an image path (an image suffix,
    or an existing file) is data, not a header: a missing file there is reported like any other
    row's, never silently taken for a column name."""

    def resolve(text: str) -> Path:
        path = Path(text.strip())
        return path if path.is_absolute() else table.parent / path

    with open(table, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            return
        column = header.index("path") if "path" in header else 0
        first = header[0].strip()
        looks_like_image = Path(first).suffix.lower() in IMAGE_SUFFIXES
        if "path" not in header and first and (looks_like_image or resolve(first).is_file()):
            yield resolve(first)
        for row in reader:
            if len(row) > column and row[column].strip():
                yield resolve(row[column])


def iter_image_paths(source: str | Path) -> Iterator[Path]:
    """Image paths of ``source``: a folder (recursive, image suffixes only, in name order), a
    ``.csv`` of paths (in row order) or a glob pattern (``**`` allowed, in file-system order),
    yielded lazily."""
    text = str(source)
    path = Path(text)
    if path.is_dir():
        return _walk_images(path)
    if path.suffix.lower() == ".csv" and path.is_file():
        return _csv_paths(path)
    if glob.has_magic(text):
        return (Path(p) for p in glob.iglob(text, recursive=True) if Path(p).is_file())
    if path.is_file():
        return iter([path])
    raise FileNotFoundError(f"{text} is neither a folder, a CSV of paths, a glob nor an image")


# ----------------------------------------------------------------------------- scoring


def torch_scorer(model: StudentModel, bf16: bool = False) -> Scorer:
    """Batch (n, 3, H, W) -> scores (n,) float32 through ``model`` (channels-last, inference
    mode; with ``bf16``, the backbone runs under bf16 autocast when the CPU supports it, the
    small head stays in float32)."""
    use_bf16 = bf16 and bf16_autocast_supported()
    if bf16 and not use_bf16:
        log.warning("bf16 autocast is not supported on this CPU: scoring in float32")
    model.eval().to(memory_format=torch.channels_last)

    def score(batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                features = model.features(batch.contiguous(memory_format=torch.channels_last))
            return model.head(features.float()).numpy()  # the head in fp32: keeps MOS precision

    return score


def score_by_shape(scorer: Scorer, tensors: list[torch.Tensor]) -> np.ndarray:
    """Scores of ``tensors`` in order; tensors of one shape are stacked into one call (all of
    them for centre crops; per image size for native-resolution students)."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, tensor in enumerate(tensors):
        by_shape.setdefault(tuple(tensor.shape), []).append(index)
    scores = np.empty(len(tensors), dtype=np.float32)
    for indices in by_shape.values():
        scores[indices] = scorer(torch.stack([tensors[i] for i in indices]))
    return scores


@dataclass
class ImageBatch:
    """Decoded images of one chunk of paths, and the paths that failed with their errors."""

    paths: list[str] = field(default_factory=list)
    tensors: list[torch.Tensor] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)


def chunked(items: Iterable[Path], size: int) -> Iterator[list[Path]]:
    """Consecutive lists of ``size`` items (the last may be shorter), consumed lazily."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def read_image(path: str | Path, transform: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
    """The model input of the image file at ``path``: ``transform.read(path)`` when the
    transform decodes files itself (a full-mode student: the image cache's decoding, see
    :class:`leaf.student.full.EvalTransform`), else ``transform`` of the image in RGB."""
    read = getattr(transform, "read", None)
    if read is not None:
        return read(path)
    return transform(read_rgb(path))


def load_batch(
    paths: Iterable[Path], transform: Callable[[Image.Image], torch.Tensor]
) -> ImageBatch:
    """Read and transform ``paths`` (:func:`read_image`); a file that cannot be decoded is
    recorded, not raised."""
    batch = ImageBatch()
    for path in paths:
        try:
            tensor = read_image(path, transform)
        except Exception as err:  # any decoding failure: report and go on
            batch.errors.append((str(path), f"{type(err).__name__}: {err}"))
            continue
        batch.paths.append(str(path))
        batch.tensors.append(tensor)
    return batch


def iter_batches(
    paths: Iterable[Path],
    transform: Callable[[Image.Image], torch.Tensor],
    batch_size: int,
    prefetch: bool = True,
) -> Iterator[ImageBatch]:
    """Decoded batches of ``paths``; with ``prefetch`` the next batch is decoded in a background
    thread while the caller scores the current one (PIL releases the GIL while decoding)."""
    chunks = chunked(paths, batch_size)
    if not prefetch:
        yield from (load_batch(chunk, transform) for chunk in chunks)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="leaf-decode") as pool:
        pending: Future | None = None
        for chunk in chunks:
            upcoming = pool.submit(load_batch, chunk, transform)
            if pending is not None:
                yield pending.result()
            pending = upcoming
        if pending is not None:
            yield pending.result()


# ----------------------------------------------------------------------------- output


class ScoreWriter:
    """Appends (path, score, provenance...) rows to a Parquet or CSV file, written to a
    temporary sibling and renamed into place by :meth:`close` (removed by :meth:`abort`)."""

    def __init__(self, path: str | Path, provenance: dict[str, Any]):
        self.path = Path(path)
        self.tmp = atomic_target(self.path)
        self.csv = self.path.suffix.lower() == ".csv"
        self.constants = {name: provenance.get(name) for name in PROVENANCE_COLUMNS}
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
        self.rows = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        if self.csv:
            self._handle = open(self.tmp, "w", newline="")
            self._csv = csv.writer(self._handle)
            self._csv.writerow(self.schema.names)
        else:
            self._parquet = pq.ParquetWriter(self.tmp, self.schema)

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
        self._pending.append(pa.RecordBatch.from_pydict(columns, schema=self.schema))
        self._pending_rows += len(paths)
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._parquet.write_table(pa.Table.from_batches(self._pending, schema=self.schema))
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
    student = load_artifact(model)
    if onnx is not None:
        if bf16:
            raise ValueError("--bf16 applies to PyTorch only; the ONNX model runs in float32")
        from leaf.export import onnx_scorer

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
