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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from leaf.deploy import ArtifactError, StudentModel
from leaf.images import read_rgb
from leaf.optional import optional_import
from leaf.prefetch import prefetched
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
# What an exported model (leaf export) takes, stored as its ONNX metadata "leaf.input".
INPUT_CONVENTION = {
    "pixels": "rgb01",
    "description": "RGB in [0, 1] (pixels / 255) after the resize and crop of leaf.preprocess; "
    "the normalisation with its mean and std is inside the model",
}


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


def unit_range(batch: torch.Tensor, preprocess: dict[str, Any]) -> torch.Tensor:
    """Normalised model inputs (batch, 3, H, W) back to RGB in [0, 1]: ``x * std + mean`` with
    the ``preprocess`` section's mean and std (what the exported models take)."""
    mean = torch.tensor(preprocess["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(preprocess["std"], dtype=torch.float32).view(1, 3, 1, 1)
    return batch.float() * std + mean


def decode_metadata(props: dict[str, str]) -> dict[str, Any]:
    """The LEAF sections (preprocess, calibration, provenance, input) of an exported ONNX
    model's ``metadata_props`` (key -> JSON text), decoded (empty when absent)."""
    return {key: json.loads(props.get(f"leaf.{key}", "{}")) for key in (*METADATA_KEYS, "input")}


def onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The LEAF metadata (preprocess, calibration, provenance, input) stored in an exported
    ONNX file, decoded from JSON (empty sections when absent). Needs the ``onnx`` package."""
    onnx = optional_import("onnx", "export", "reading ONNX metadata")
    model = onnx.load(str(path), load_external_data=False)
    return decode_metadata({p.key: p.value for p in model.metadata_props})


def onnx_scorer(
    path: str | Path, student: StudentModel | None = None, threads: int | None = None
) -> Scorer:
    """Batch (n, 3, H, W) of preprocessed, normalised inputs (the model's transform, like the
    other scorers) -> scores (n,) through ONNX Runtime (CPU) on the ONNX file ``path``, which
    takes RGB in [0, 1] (metadata ``leaf.input``, :data:`INPUT_CONVENTION`): the batch is mapped
    back with :func:`unit_range`. An export without that record (an earlier LEAF's, which took
    normalised inputs) raises :class:`leaf.deploy.ArtifactError`.

    With ``student`` the file's provenance must match the artifact's (same dataset, backbone,
    teacher, ratio, seed and config hash), so the preprocessing used is the right one.
    """
    ort = optional_import("onnxruntime", "export", "running an ONNX model")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    stored = decode_metadata(dict(session.get_modelmeta().custom_metadata_map))
    if student is not None:
        mismatched = [
            key
            for key in IDENTITY_KEYS
            if stored["provenance"].get(key) != student.provenance.get(key)
        ]
        if mismatched:
            raise ArtifactError(
                f"{path} was not exported from this model artifact (differs in {mismatched})"
            )
    if stored["input"].get("pixels") != INPUT_CONVENTION["pixels"] or not stored["preprocess"]:
        raise ArtifactError(
            f"{path} does not record that it takes RGB in [0, 1] (leaf.input) with its "
            "preprocessing: export it again with this LEAF (leaf export)"
        )

    def score(batch: torch.Tensor) -> np.ndarray:
        batch = unit_range(batch.detach(), stored["preprocess"])
        array = batch.contiguous().numpy()
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
    :class:`leaf.student.eval_inputs.EvalTransform`), else ``transform`` of the image in RGB."""
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
    batches = (load_batch(chunk, transform) for chunk in chunked(paths, batch_size))
    yield from prefetched(batches) if prefetch else batches
