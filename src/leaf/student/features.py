"""Frozen-backbone features, computed once per (dataset, backbone) and cached ("head" mode).

Two pooling modes (``pooling``):

* ``center_crop`` (default): timm's evaluation recipe. Resize the short side to ``resize``
  (default ``round(image_size / 0.875)``) with the model's interpolation, centre-crop
  ``image_size``, scale to [0, 1], normalise with the model's mean/std; the model's own pooled
  features (d = ``num_features``).
* ``native_meanmax``: the whole image at its native size (no resize, no crop; scaled and
  normalised the same way) through the backbone's feature map, then the global mean- and
  max-pooled features concatenated (d = 2 x ``num_features``). Quality cues such as fine
  texture and artefacts survive that a 224 px centre crop throws away; the cost grows with the
  pixel count (AGIQA-3K at 512 x 512: about 5x the centre-crop cost). Images of different sizes
  are run in separate forward passes (same-size images of a batch are stacked).

Extraction runs in eval mode under ``torch.inference_mode``, with bf16 autocast on CPUs that
support it (``amp=True``). Results are deterministic for the same inputs, settings and thread
count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from leaf.student import torch_save_atomic
from leaf.student.backbones import create_backbone, preprocess_config
from leaf.torch_compat import ensure_torchvision_importable

log = logging.getLogger(__name__)

DEFAULT_CROP_PCT = 0.875
POOLING_MODES = ("center_crop", "native_meanmax")


def default_resize(image_size: int) -> int:
    """Short-side resize before the centre crop: ``round(image_size / 0.875)``."""
    return round(image_size / DEFAULT_CROP_PCT)


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


def mean_max_pool(feature_map: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) feature map -> (n, 2c): global mean-pooled then max-pooled channels."""
    return torch.cat([feature_map.mean(dim=(2, 3)), feature_map.amax(dim=(2, 3))], dim=1)


def _native_forward(model: torch.nn.Module, images: list[torch.Tensor]) -> torch.Tensor:
    """Mean+max pooled feature maps of native-size ``images``; same-size images are stacked
    into one forward pass, the rows come back in input order."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape), []).append(index)
    rows: list[torch.Tensor | None] = [None] * len(images)
    for indices in by_shape.values():
        batch = torch.stack([images[i] for i in indices])
        pooled = mean_max_pool(
            model.forward_features(batch.contiguous(memory_format=torch.channels_last)).float()
        )
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
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))


def bf16_autocast_supported() -> bool:
    """True when this CPU runs bf16 natively (oneDNN bf16: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def embed_images(
    model: torch.nn.Module,
    paths: Sequence[str | Path],
    image_size: int = 224,
    batch_size: int = 32,
    resize: int | None = None,
    amp: bool = True,
    progress: bool = True,
    pooling: str = "center_crop",
) -> np.ndarray:
    """Pooled features (n, d) float32 of the images at ``paths`` through ``model``.

    ``pooling`` is one of :data:`POOLING_MODES` (see the module docstring; ``image_size`` and
    ``resize`` only apply to ``center_crop``). ``model`` is put in eval mode and channels-last
    memory format (faster oneDNN convolutions).
    """
    if pooling not in POOLING_MODES:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLING_MODES}")
    native = pooling == "native_meanmax"
    data_config = preprocess_config(model)
    transform = (
        build_native_transform(data_config)
        if native
        else build_transform(data_config, image_size, resize)
    )
    loader = DataLoader(
        ImagePathDataset(paths, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=0,
        collate_fn=_as_list if native else None,
    )
    use_amp = amp and bf16_autocast_supported()
    if amp and not use_amp:
        log.info("bf16 autocast is not supported on this CPU: extracting in float32")
    model.eval().to(memory_format=torch.channels_last)
    chunks: list[np.ndarray] = []
    start = time.perf_counter()
    with (
        torch.inference_mode(),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_amp),
    ):
        for batch in tqdm(loader, desc="features", unit="batch", disable=not progress):
            if native:
                chunks.append(_native_forward(model, batch).numpy())
                continue
            batch = batch.contiguous(memory_format=torch.channels_last)
            chunks.append(model(batch).float().numpy())
    elapsed = time.perf_counter() - start
    width = model.num_features * (2 if native else 1)
    features = np.concatenate(chunks) if chunks else np.zeros((0, width), np.float32)
    log.info(
        "extracted %s features of %d images in %.1f s (%.1f images/s, %s)",
        features.shape,
        len(paths),
        elapsed,
        len(paths) / max(elapsed, 1e-9),
        "bf16" if use_amp else "fp32",
    )
    return features.astype(np.float32, copy=False)


def extract_features(
    paths: Sequence[str | Path],
    backbone: str,
    weights: str,
    image_size: int = 224,
    batch_size: int = 32,
    resize: int | None = None,
    amp: bool = True,
    progress: bool = True,
    pooling: str = "center_crop",
) -> np.ndarray:
    """Pooled features (n, d) float32 of the images at ``paths`` through the frozen timm
    ``backbone`` with pretrained ``weights`` (see
    :func:`leaf.student.backbones.create_backbone`)."""
    model = create_backbone(backbone, weights)
    return embed_images(model, paths, image_size, batch_size, resize, amp, progress, pooling)


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
    image_size: int,
    batch_size: int,
    threads: int,
    pooling: str = "center_crop",
) -> None:
    """Rule ``features``: frozen-backbone features of every manifest image, saved with
    ``torch.save`` as {image_ids, features (n, d) float32, backbone, weights, image_size,
    pooling}."""
    torch.set_num_threads(threads)
    table = pd.read_parquet(manifest, columns=["image_id", "path"])
    array = extract_features(
        table["path"].tolist(),
        backbone,
        weights,
        image_size=image_size,
        batch_size=batch_size,
        pooling=pooling,
    )
    torch_save_atomic(
        {
            "image_ids": table["image_id"].astype(str).tolist(),
            "features": torch.from_numpy(array),
            "backbone": backbone,
            "weights": weights,
            "image_size": int(image_size),
            "pooling": pooling,
        },
        features,
    )
