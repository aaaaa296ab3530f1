"""What the end-to-end fine-tuned student sees in training and evaluation, cut from the
decoded-image cache (:mod:`leaf.student.image_cache`).

* training inputs: ``RandomResizedCrop(crop)`` (torchvision's default scale/ratio,
  :data:`CROP_SCALE` and :data:`CROP_RATIO`, bilinear, antialiased) and a random horizontal flip
  of the cached images, drawn from the caller's generator;
* evaluation inputs: the cached image resized to short side ``resize`` (a no-op when it equals the
  cache's short side) and centre-cropped to ``crop``
  (:func:`leaf.student.eval_inputs.eval_crop`, which deployed artifacts share);
* pixels are normalised with the backbone's mean/std on the device, channels-last when asked.

:func:`preprocess_of` says which crop, resize and mean/std a model uses; they are stored in its
checkpoint as ``preprocess``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from leaf.student.eval_inputs import (
    eval_crop,
    normalise,
    pixel_statistic,
    pixels_tensor,
    v2_transforms,
)
from leaf.student.features import eval_settings
from leaf.student.image_cache import ImageCache

CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


class CachedInputs:
    """Model inputs cut from the decoded-image cache.

    :meth:`batch` returns uint8 crops (batch, 3, crop, crop): random resized crops and flips for
    training, centre crops for evaluation. :meth:`to_model` moves them to the device and
    normalises them (channels-last when asked).
    """

    def __init__(
        self,
        cache: ImageCache,
        crop: int,
        resize: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        channels_last: bool = False,
    ):
        self.cache, self.crop, self.resize, self.channels_last = cache, crop, resize, channels_last
        self._v2 = v2_transforms()
        self._mean, self._std = pixel_statistic(mean), pixel_statistic(std)

    def _image(self, row: int) -> torch.Tensor:
        """Cached image ``row`` as a (3, h, w) uint8 tensor."""
        return pixels_tensor(self.cache[row])

    def _train_crop(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random resized crop (torchvision's sampling, with ``generator``) + random flip."""
        height, width = image.shape[-2:]
        area = height * width
        log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
        box = (0, 0, height, width)
        for _ in range(10):
            draws = torch.rand(3, generator=generator).tolist()
            target = area * (CROP_SCALE[0] + draws[0] * (CROP_SCALE[1] - CROP_SCALE[0]))
            ratio = math.exp(log_ratio[0] + draws[1] * (log_ratio[1] - log_ratio[0]))
            w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
                left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
                box = (top, left, h, w)
                break
        else:  # torchvision's fallback: a centre crop at the clamped ratio
            h, w = height, width
            if width / height < CROP_RATIO[0]:
                h = round(width / CROP_RATIO[0])
            elif width / height > CROP_RATIO[1]:
                w = round(height * CROP_RATIO[1])
            box = ((height - h) // 2, (width - w) // 2, h, w)
        crop = self._v2.functional.resized_crop(
            image,
            *box,
            [self.crop, self.crop],
            interpolation=self._v2.InterpolationMode.BILINEAR,
            antialias=True,
        )
        if float(torch.rand(1, generator=generator)) < 0.5:
            crop = crop.flip(-1)
        return crop

    def batch(
        self, rows: np.ndarray | torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """uint8 crops (len(rows), 3, crop, crop) of cache ``rows``: training crops when a
        ``generator`` is given, evaluation crops otherwise."""
        images = [self._image(int(row)) for row in rows]
        if generator is None:
            crops = [eval_crop(image, self.resize, self.crop) for image in images]
        else:
            crops = [self._train_crop(image, generator) for image in images]
        return torch.stack([crop.contiguous() for crop in crops])

    def to_model(self, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
        """uint8 crops -> normalised float32 model input on ``device``."""
        batch = normalise(
            batch.to(device, non_blocking=True), self._mean.to(device), self._std.to(device)
        )
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch


def preprocess_of(backbone: nn.Module, full: dict) -> dict[str, Any]:
    """The input settings a full-mode model is trained and evaluated with: ``full``'s crop and
    resize (the paper's 224 and 256), where null the backbone's pretrained ones
    (:func:`leaf.student.features.eval_settings`: its input size and floor(size / crop_pct)),
    and the backbone's mean/std."""
    settings = eval_settings(backbone, full.get("crop"))
    return {
        "crop": settings["image_size"],
        "resize": int(full.get("resize") or settings["resize"]),
        "cache_short_side": int(full["cache_short_side"]),
        "mean": settings["mean"],
        "std": settings["std"],
    }


def open_cached_inputs(
    image_cache: str, cache_index: str, preprocess: dict, full: dict
) -> CachedInputs:
    """The :class:`CachedInputs` of the image cache ``image_cache`` (index ``cache_index``) with a
    model's input settings ``preprocess`` (:func:`preprocess_of`) and ``full``'s
    ``channels_last``."""
    return CachedInputs(
        ImageCache.open(image_cache, cache_index),
        crop=int(preprocess["crop"]),
        resize=int(preprocess["resize"]),
        mean=tuple(preprocess["mean"]),
        std=tuple(preprocess["std"]),
        channels_last=bool(full["channels_last"]),
    )
