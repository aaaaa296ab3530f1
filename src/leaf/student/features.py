"""Frozen-backbone features, computed once per (dataset, backbone) and cached ("head" mode).

Pooling modes (``pooling``):

* ``center_crop`` (default): timm's evaluation recipe. Resize the short side to ``resize``
  (``floor(image_size / crop_pct)``) with the model's interpolation, centre-crop
  ``image_size``, scale to [0, 1], normalise with the model's mean/std; the model's own pooled
  features (d = ``num_features``). ``image_size``, ``crop_pct``, interpolation and mean/std come
  from the backbone's pretrained data config (timm ``resolve_model_data_config``) unless the
  config sets them (:func:`eval_settings`; e.g. Lite0 224/0.875, Lite1 240/0.882).
* ``native_meanmax``: the whole image at its native size (no resize, no crop; scaled and
  normalised the same way) through the backbone's feature map, then the global mean- and
  max-pooled features concatenated (d = 2 x ``num_features``). Quality cues such as fine
  texture and artefacts survive that a 224 px centre crop throws away; the cost grows with the
  pixel count (AGIQA-3K at 512 x 512: about 5x the centre-crop cost). Images of different sizes
  are run in separate forward passes (same-size images of a batch are stacked).
* ``stages_meanstd``: the whole image, its short side resized to ``image_size`` (aspect ratio
  kept, no crop; model interpolation, scaled and normalised as above), through the backbone;
  the feature map of every stage (timm ``forward_intermediates``: for EfficientNet the five
  stages of strides 2..32, before the final 1x1 ``conv_head``) global mean- and std-pooled,
  concatenated stage by stage (d = 2 x the sum of the stage widths: 1024 for Lite0, 1120 for
  Lite2). Low stages carry texture, noise and sharpness statistics, high stages content and
  aesthetics; the std is a contrast/texture-energy measure that a mean alone misses.
* ``native_stages_meanstd``: the same multi-stage mean+std pooling at the native image size.

Engines (``engine``, :data:`FEATURE_ENGINES`; :func:`choose_engine`):

* ``torch``: PyTorch eager in eval mode under ``torch.inference_mode``, with bf16 autocast on
  CPUs that run bf16 natively (AVX512-BF16 or AMX; ``amp=True``), else float32; the model and
  its inputs in channels-last memory format.
* ``onnxruntime``: the backbone with its pooling exported to ONNX and run by ONNX Runtime in
  float32 (:mod:`leaf.student.onnx_features`; the ``export`` extra), checked against PyTorch's
  float32 features on the first image. Measured on AGIQA-3K at 512 x 512 (bench/speed.md):
  2-3x PyTorch eager float32, and about 1.5x bf16 autocast on an AMX CPU, but not the same
  numbers as bf16 (bf16 features are about 5 % (L2) away from float32 ones).
* ``auto`` (default): ``torch`` with bf16 autocast where the CPU runs bf16 natively and ``amp``
  is on (the features then stay those of earlier LEAF versions on such a CPU), else
  ``onnxruntime`` when its packages are installed (float32, as PyTorch's float32 to ~1e-5),
  else ``torch`` in float32. If the export or its check fails, ``auto`` falls back to
  ``torch`` (logged); an explicit ``onnxruntime`` raises.

Images are decoded and transformed in a background thread while the engine runs the batch
before (:func:`leaf.prefetch.prefetched`). Pooled statistics are computed in float32. The
engine, precision and throughput (images/s) are logged. Results are deterministic for the same
inputs, settings, engine and thread count.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from leaf.atomic_io import torch_save_atomic
from leaf.images import read_rgb
from leaf.prefetch import prefetched
from leaf.student.backbones import create_backbone, preprocess_config
from leaf.student.onnx_features import (
    EngineMismatchError,
    OnnxFeatures,
    check_against_torch,
    onnxruntime_installed,
)
from leaf.torch_compat import ensure_torchvision_importable

log = logging.getLogger(__name__)

DEFAULT_CROP_PCT = 0.875
POOLING_MODES = ("center_crop", "native_meanmax", "stages_meanstd", "native_stages_meanstd")
NATIVE_MODES = ("native_meanmax", "native_stages_meanstd")
STAGE_MODES = ("stages_meanstd", "native_stages_meanstd")
POOL_STATISTICS = ("mean", "std", "max")
FEATURE_ENGINES = ("auto", "onnxruntime", "torch")


def default_resize(image_size: int, crop_pct: float = DEFAULT_CROP_PCT) -> int:
    """Short-side resize before the centre crop: ``floor(image_size / crop_pct)`` (timm's
    evaluation rule; 256 for 224 at the ImageNet crop_pct 0.875)."""
    return math.floor(image_size / crop_pct)


def eval_settings(
    model: torch.nn.Module, image_size: int | None = None, crop_pct: float | None = None
) -> dict:
    """What the student sees of an image, from the backbone's pretrained data config (timm
    ``resolve_model_data_config``) unless the config sets it: ``image_size`` (the crop; default
    the model's input size, e.g. 224 for EfficientNet-Lite0, 240 for Lite1), ``crop_pct``
    (default the model's), ``resize`` = :func:`default_resize` of both, ``interpolation``,
    ``mean`` and ``std``. ``student.image_size: 224`` with ``crop_pct: 0.875`` is the paper's
    256 -> 224 protocol."""
    data = preprocess_config(model)
    size = int(image_size or data["input_size"][-1])
    pct = float(crop_pct or data.get("crop_pct") or DEFAULT_CROP_PCT)
    return {
        "image_size": size,
        "crop_pct": pct,
        "resize": default_resize(size, pct),
        "interpolation": str(data.get("interpolation", "bicubic")),
        "mean": [float(v) for v in data["mean"]],
        "std": [float(v) for v in data["std"]],
    }


def build_transform(
    data_config: dict, image_size: int, resize: int | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised (3, image_size, image_size) float tensor."""
    ensure_torchvision_importable()
    from torchvision import transforms

    interpolation = transforms.InterpolationMode(data_config.get("interpolation", "bicubic"))
    return transforms.Compose(
        [
            transforms.Resize(resize or default_resize(image_size), interpolation=interpolation),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(mean=data_config["mean"], std=data_config["std"]),
        ]
    )


def build_native_transform(data_config: dict) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised (3, height, width) float tensor at the image's native size."""
    ensure_torchvision_importable()
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.ToTensor(),
            transforms.Normalize(mean=data_config["mean"], std=data_config["std"]),
        ]
    )


def build_resize_transform(
    data_config: dict, image_size: int
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised tensor of the whole image, short side resized to ``image_size``
    (aspect ratio kept, no crop)."""
    ensure_torchvision_importable()
    from torchvision import transforms

    interpolation = transforms.InterpolationMode(data_config.get("interpolation", "bicubic"))
    return transforms.Compose(
        [
            transforms.Resize(image_size, interpolation=interpolation),
            transforms.ToTensor(),
            transforms.Normalize(mean=data_config["mean"], std=data_config["std"]),
        ]
    )


def pool_statistics(
    feature_map: torch.Tensor, statistics: Sequence[str] = ("mean", "std")
) -> torch.Tensor:
    """(n, c, h, w) feature map -> (n, len(statistics) * c): the global ``statistics`` (of
    :data:`POOL_STATISTICS`; std is the population std) of every channel, in float32, one
    statistic after the other."""
    unknown = [s for s in statistics if s not in POOL_STATISTICS]
    if unknown:
        raise ValueError(f"unknown pooling statistics {unknown}; choose from {POOL_STATISTICS}")
    flat = feature_map.float().flatten(2)
    pooled = {
        "mean": lambda: flat.mean(dim=2),
        "std": lambda: flat.std(dim=2, unbiased=False),
        "max": lambda: flat.amax(dim=2),
    }
    return torch.cat([pooled[s]() for s in statistics], dim=1)


def stage_feature_maps(model: torch.nn.Module, batch: torch.Tensor) -> list[torch.Tensor]:
    """Feature maps of every stage of ``model`` (timm ``forward_intermediates``), shallow to
    deep, followed by the final feature map (after the model's last convolution)."""
    final, intermediates = model.forward_intermediates(batch)
    return [*intermediates, final]


def stage_widths(model: torch.nn.Module) -> list[int]:
    """Channel counts of the stage feature maps of ``model`` (its timm ``feature_info``)."""
    return [int(info["num_chs"]) for info in model.feature_info]


def stages_pool(
    model: torch.nn.Module, batch: torch.Tensor, statistics: Sequence[str] = ("mean", "std")
) -> torch.Tensor:
    """Every stage's feature map of ``batch`` pooled with :func:`pool_statistics`, concatenated
    stage by stage (the final feature map after the last convolution is not included)."""
    maps = stage_feature_maps(model, batch)[:-1]
    return torch.cat([pool_statistics(m, statistics) for m in maps], dim=1)


def mean_max_pool(feature_map: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) feature map -> (n, 2c): global mean-pooled then max-pooled channels."""
    return torch.cat([feature_map.mean(dim=(2, 3)), feature_map.amax(dim=(2, 3))], dim=1)


def _final_meanmax(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean+max pooled final feature map (``forward_features``) of ``batch``."""
    return mean_max_pool(model.forward_features(batch).float())


def _stages_meanstd(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return stages_pool(model, batch, ("mean", "std"))


def _grouped_forward(
    forward: Callable[[torch.Tensor], torch.Tensor], images: list[torch.Tensor]
) -> torch.Tensor:
    """``forward(batch)`` of images of any size; same-size images are stacked into one forward
    pass, the rows come back in input order."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape), []).append(index)
    rows: list[torch.Tensor | None] = [None] * len(images)
    for indices in by_shape.values():
        pooled = forward(torch.stack([images[i] for i in indices]))
        for row, index in zip(pooled, indices, strict=True):
            rows[index] = row
    return torch.stack(rows)  # type: ignore[arg-type]


def _as_list(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    """DataLoader collate that keeps images of different sizes apart."""
    return batch


class ImagePathDataset(Dataset):
    """Images read from files (converted to RGB) and transformed."""

    def __init__(
        self, paths: Sequence[str | Path], transform: Callable[[Image.Image], torch.Tensor]
    ):
        self.paths = [Path(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(read_rgb(self.paths[index]))


def bf16_autocast_supported() -> bool:
    """True when this CPU runs bf16 natively (oneDNN bf16: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class FeatureEngine:
    """How a stacked batch (n, 3, H, W) of same-size normalised inputs becomes (n, d) float32
    features: ``forward``, run inside ``context()``; ``name`` is one of :data:`FEATURE_ENGINES`
    (not ``auto``), ``precision`` ``"fp32"`` or ``"bf16"``."""

    name: str
    precision: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


def choose_engine(engine: str = "auto", amp: bool = True) -> str:
    """The engine that ``engine`` (one of :data:`FEATURE_ENGINES`) means on this machine: an
    explicit one as given; ``auto``: ``torch`` where ``amp`` is on and the CPU runs bf16
    natively, else ``onnxruntime`` when ``onnx`` and ``onnxruntime`` are installed, else
    ``torch`` (see the module docstring). Raises ValueError for an unknown engine."""
    if engine not in FEATURE_ENGINES:
        raise ValueError(f"unknown feature engine {engine!r}; choose one of {FEATURE_ENGINES}")
    if engine != "auto":
        return engine
    if amp and bf16_autocast_supported():
        return "torch"
    return "onnxruntime" if onnxruntime_installed() else "torch"


def torch_engine(
    model: torch.nn.Module,
    pool: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None,
    amp: bool = True,
) -> FeatureEngine:
    """PyTorch eager: ``pool(model, batch)`` (None: ``model(batch)``) of channels-last inputs
    under ``inference_mode`` and, with ``amp`` where the CPU runs bf16 natively, bf16
    autocast. Puts ``model`` in eval mode and channels-last memory format."""
    use_amp = amp and bf16_autocast_supported()
    if amp and not use_amp:
        log.info("bf16 autocast is not supported on this CPU: extracting in float32")
    model.eval().to(memory_format=torch.channels_last)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.contiguous(memory_format=torch.channels_last)
        return (model(batch) if pool is None else pool(model, batch)).float()

    def context() -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_amp))
        return stack

    return FeatureEngine("torch", "bf16" if use_amp else "fp32", forward, context)


def feature_engine(
    model: torch.nn.Module,
    pool: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None,
    engine: str = "auto",
    amp: bool = True,
    sample: torch.Tensor | None = None,
) -> FeatureEngine:
    """The :class:`FeatureEngine` that ``engine`` means here (:func:`choose_engine`). For
    ONNX Runtime the model is exported (threads: ``torch.get_num_threads()``) and, given a
    ``sample`` input (3, H, W), checked against PyTorch float32 on it; if the export or the
    check fails, ``auto`` falls back to :func:`torch_engine` (logged), while an explicit
    ``onnxruntime`` raises (:class:`leaf.optional.MissingExtraError` when the ``export`` extra
    is missing, :class:`leaf.student.onnx_features.EngineMismatchError` for a failed check)."""
    name = choose_engine(engine, amp)
    if name == "torch":
        return torch_engine(model, pool, amp)
    model.eval()
    try:
        runner = OnnxFeatures(model, pool, torch.get_num_threads())
        if sample is not None:
            difference = check_against_torch(runner, model, pool, sample)
            log.info(
                "ONNX Runtime vs PyTorch float32 on the first image: %.2e relative", difference
            )
    except (ImportError, RuntimeError, EngineMismatchError) as error:
        if engine != "auto":
            raise
        log.warning("ONNX Runtime feature extraction failed (%s): using PyTorch instead", error)
        return torch_engine(model, pool, amp)
    return FeatureEngine("onnxruntime", "fp32", runner)


def pooling_transform(
    pooling: str, data_config: dict, image_size: int = 224, resize: int | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> model input of ``pooling`` (see the module docstring): a centre crop, the
    native image, or the whole image with its short side resized to ``image_size``."""
    if pooling not in POOLING_MODES:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLING_MODES}")
    if pooling == "center_crop":
        return build_transform(data_config, image_size, resize)
    if pooling in NATIVE_MODES:
        return build_native_transform(data_config)
    return build_resize_transform(data_config, image_size)


def pooling_function(
    pooling: str,
) -> Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None:
    """``pool(model, batch)`` -> (batch, d) features of ``pooling`` for a stacked batch of
    same-size inputs; None for ``center_crop`` (the model's own pooled output)."""
    if pooling not in POOLING_MODES:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLING_MODES}")
    if pooling == "center_crop":
        return None
    return _stages_meanstd if pooling in STAGE_MODES else _final_meanmax


def pool_batch(model: torch.nn.Module, batch: torch.Tensor, pooling: str) -> torch.Tensor:
    """(batch, d) float32 features of a stacked batch of same-size model inputs, as the
    extraction computes them for ``pooling`` (the deployed student uses this too)."""
    pool = pooling_function(pooling)
    return (model(batch) if pool is None else pool(model, batch)).float()


def feature_width(model: torch.nn.Module, pooling: str) -> int:
    """d, the number of features ``pooling`` gives for ``model``."""
    if pooling in STAGE_MODES:
        return 2 * sum(stage_widths(model))
    return int(model.num_features) * (2 if pooling == "native_meanmax" else 1)


def variable_size(pooling: str) -> bool:
    """True when ``pooling`` takes inputs of any height and width (no centre crop)."""
    return pooling != "center_crop"


@dataclass(frozen=True)
class Extraction:
    """Features (n, d) float32 of n images, the engine and precision that computed them, and
    the throughput in images/s (decoding, preprocessing and the model)."""

    features: np.ndarray
    engine: str
    precision: str
    images_per_second: float


def extract(
    model: torch.nn.Module,
    paths: Sequence[str | Path],
    image_size: int | None = None,
    batch_size: int = 32,
    resize: int | None = None,
    amp: bool = True,
    progress: bool = True,
    pooling: str = "center_crop",
    crop_pct: float | None = None,
    engine: str = "auto",
) -> Extraction:
    """Pooled features of the images at ``paths`` through ``model``, with the engine used.

    ``pooling`` is one of :data:`POOLING_MODES` (see the module docstring; ``resize`` and
    ``crop_pct`` only apply to ``center_crop``, ``image_size`` to ``center_crop`` and
    ``stages_meanstd``; None: :func:`eval_settings`, the backbone's own). ``engine`` is one of
    :data:`FEATURE_ENGINES` (:func:`feature_engine`); ``amp`` allows bf16 autocast in the
    ``torch`` engine where the CPU runs bf16 natively.
    """
    settings = eval_settings(model, image_size, crop_pct)
    transform = pooling_transform(
        pooling, settings, settings["image_size"], resize or settings["resize"]
    )
    pool = pooling_function(pooling)
    return run_extraction(model, paths, transform, pool, batch_size, amp, progress, engine)


def embed_images(
    model: torch.nn.Module, paths: Sequence[str | Path], *args: Any, **kwargs: Any
) -> np.ndarray:
    """Pooled features (n, d) float32 of the images at ``paths`` through ``model``: the
    ``features`` of :func:`extract` with the same arguments (``image_size``, ``batch_size``,
    ``resize``, ``amp``, ``progress``, ``pooling``, ``crop_pct``, ``engine``)."""
    return extract(model, paths, *args, **kwargs).features


def run_extraction(
    model: torch.nn.Module,
    paths: Sequence[str | Path],
    transform: Callable[[Image.Image], torch.Tensor],
    pool: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None,
    batch_size: int = 32,
    amp: bool = True,
    progress: bool = True,
    engine: str = "auto",
) -> Extraction:
    """The extraction loop: images read and ``transform``-ed (in a background thread, one
    batch ahead), then ``pool(model, batch)`` of same-size images (``pool=None``:
    ``model(batch)`` of a stacked batch, the model's own pooled features) by the
    :func:`feature_engine` of ``engine`` (checked on the first image)."""
    grouped = pool is not None
    dataset = ImagePathDataset(paths, transform)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=0,
        collate_fn=_as_list if grouped else None,
    )
    start = time.perf_counter()
    chosen = feature_engine(model, pool, engine, amp, dataset[0] if len(dataset) else None)
    chunks: list[np.ndarray] = []
    with chosen.context():
        batches = tqdm(
            prefetched(loader),
            desc="features",
            total=len(loader),
            unit="batch",
            disable=not progress,
        )
        for batch in batches:
            features = _grouped_forward(chosen.forward, batch) if grouped else chosen.forward(batch)
            chunks.append(features.numpy())
    elapsed = time.perf_counter() - start
    features = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    rate = len(paths) / max(elapsed, 1e-9)
    log.info(
        "extracted %s features of %d images in %.1f s (%.1f images/s, %s %s, %d threads)",
        features.shape,
        len(paths),
        elapsed,
        rate,
        chosen.name,
        chosen.precision,
        torch.get_num_threads(),
    )
    return Extraction(features.astype(np.float32, copy=False), chosen.name, chosen.precision, rate)


def extract_features(
    paths: Sequence[str | Path],
    backbone: str,
    weights: str,
    image_size: int | None = None,
    batch_size: int = 32,
    resize: int | None = None,
    amp: bool = True,
    progress: bool = True,
    pooling: str = "center_crop",
    crop_pct: float | None = None,
    engine: str = "auto",
) -> np.ndarray:
    """Pooled features (n, d) float32 of the images at ``paths`` through the frozen timm
    ``backbone`` with pretrained ``weights`` (see
    :func:`leaf.student.backbones.create_backbone`)."""
    model = create_backbone(backbone, weights)
    return embed_images(
        model, paths, image_size, batch_size, resize, amp, progress, pooling, crop_pct, engine
    )


@dataclass(frozen=True)
class FeatureTable:
    """Cached features: one row of ``features`` per ``image_ids`` entry."""

    image_ids: list[str]
    features: np.ndarray
    backbone: str = ""

    def rows(self, wanted: Sequence[str]) -> np.ndarray:
        """Features of the images ``wanted``, in that order (raises if any is missing)."""
        index = {image_id: row for row, image_id in enumerate(self.image_ids)}
        missing = [image_id for image_id in wanted if image_id not in index]
        if missing:
            raise KeyError(
                f"{len(missing)} images have no cached features (e.g. {missing[:3]}); "
                "rebuild the features"
            )
        return self.features[[index[image_id] for image_id in wanted]]


def load_features(path: str | Path) -> FeatureTable:
    """Read a features file written by :func:`features_step`."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    return FeatureTable(
        image_ids=list(data["image_ids"]),
        features=data["features"].numpy().astype(np.float32, copy=False),
        backbone=str(data.get("backbone", "")),
    )


def features_step(
    manifest: str,
    features: str,
    backbone: str,
    weights: str,
    image_size: int | None,
    batch_size: int,
    threads: int,
    pooling: str = "center_crop",
    crop_pct: float | None = None,
    engine: str = "auto",
) -> None:
    """Rule ``features``: frozen-backbone features of every manifest image, saved with
    ``torch.save`` as {image_ids, features (n, d) float32, backbone, weights, image_size,
    pooling, engine, precision}; ``image_size``/``crop_pct`` None: the backbone's own
    (:func:`eval_settings`); ``engine`` one of :data:`FEATURE_ENGINES` (the one used and its
    precision are recorded: ``torch``/``onnxruntime``, ``fp32``/``bf16``)."""
    import pandas as pd  # the workflow's (scoring with a deployed student never reads Parquet)

    torch.set_num_threads(threads)
    table = pd.read_parquet(manifest, columns=["image_id", "path"])
    model = create_backbone(backbone, weights)
    image_size = eval_settings(model, image_size, crop_pct)["image_size"]
    result = extract(
        model,
        table["path"].tolist(),
        image_size=image_size,
        batch_size=batch_size,
        pooling=pooling,
        crop_pct=crop_pct,
        engine=engine,
    )
    torch_save_atomic(
        {
            "image_ids": table["image_id"].astype(str).tolist(),
            "features": torch.from_numpy(result.features),
            "backbone": backbone,
            "weights": weights,
            "image_size": int(image_size),
            "pooling": pooling,
            "engine": result.engine,
            "precision": result.precision,
        },
        features,
    )
