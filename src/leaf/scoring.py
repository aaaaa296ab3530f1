"""Reading images into a deployed student's inputs and scoring them: what ``leaf predict``,
``leaf export``'s checks and the Python API (:mod:`leaf.api`) share, below all three.

* Image sources: a folder (recursive, image suffixes), a CSV of paths or a glob
  (:func:`iter_image_paths`), decoded in batches with the model's transform (:func:`load_batch`,
  :func:`iter_batches`; every file through :func:`leaf.images.read_rgb`).
* Scorers: batch (n, 3, H, W) -> scores (n,) float32 through PyTorch (:func:`torch_scorer`, fp32
  or bf16 autocast) or ONNX Runtime (:func:`onnx_scorer`, an exported model whose stored
  provenance must match the artifact's); :func:`score_by_shape` stacks same-size inputs.
"""

from __future__ import annotations

import csv
import glob
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from leaf.deploy import ArtifactError, StudentModel
from leaf.images import read_rgb
from leaf.student.features import bf16_autocast_supported

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
)


Scorer = Callable[[torch.Tensor], np.ndarray]


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


METADATA_KEYS = ("preprocess", "calibration", "provenance")


# Provenance fields an ONNX file must share with the artifact it is run beside.
IDENTITY_KEYS = ("dataset", "backbone", "teacher_hash", "ratio", "seed", "config_hash")


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


def onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The LEAF metadata (preprocess, calibration, provenance) stored in an exported ONNX
    file, decoded from JSON (empty sections when absent)."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return {key: json.loads(props.get(f"leaf.{key}", "{}")) for key in METADATA_KEYS}


def onnx_scorer(
    path: str | Path, student: StudentModel | None = None, threads: int | None = None
) -> Scorer:
    """Batch (n, 3, H, W) -> scores (n,) through ONNX Runtime (CPU) on the ONNX file ``path``.

    With ``student`` the file's provenance must match the artifact's (same dataset, backbone,
    teacher, ratio, seed and config hash), so the preprocessing used is the right one.
    """
    import onnxruntime as ort

    if student is not None:
        stored = onnx_metadata(path)["provenance"]
        mismatched = [
            key for key in IDENTITY_KEYS if stored.get(key) != student.provenance.get(key)
        ]
        if mismatched:
            raise ArtifactError(
                f"{path} was not exported from this model artifact (differs in {mismatched})"
            )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def score(batch: torch.Tensor) -> np.ndarray:
        array = batch.detach().float().contiguous().numpy()
        return np.asarray(session.run(None, {input_name: array})[0], np.float32).reshape(-1)

    return score


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
