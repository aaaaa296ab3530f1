"""The evaluation input of a full-mode student, shared by end-to-end fine-tuning
(:mod:`leaf.student.finetune_inputs`) and deployed artifacts (:mod:`leaf.deploy`): the image
cache's decoding (:func:`decode_resized`, also used to build the cache), the evaluation resize and
centre crop of uint8 pixels, and the normalisation.

Light on purpose (numpy, torch, torchvision, PIL): scoring with a deployed full-mode student
imports this module, never the training code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from leaf.images import oriented_size, read_rgb
from leaf.torch_compat import ensure_torchvision_importable


def short_side_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) of an image scaled so that its short side is ``short_side``."""
    if width <= 0 or height <= 0:
        raise ValueError(f"bad image size {width}x{height}")
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_resized(path: str | Path, short_side: int) -> np.ndarray:
    """The RGB image at ``path`` (:func:`leaf.images.read_rgb`: upright, 8-bit) as uint8
    (height, width, 3), short side ``short_side``."""
    size = short_side_size(*oriented_size(path), short_side)
    image = read_rgb(path, min_size=size)  # JPEG: decoded at a reduced scale still >= size
    if image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def v2_transforms():
    """torchvision's ``transforms.v2`` (made importable beside the CPU torch build)."""
    ensure_torchvision_importable()
    from torchvision.transforms import v2

    return v2


def pixels_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels (height, width, 3) -> a (3, height, width) uint8 tensor (a copy with
    channels-last strides: the fast uint8 resize path)."""
    return torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1)


def eval_crop(image: torch.Tensor, resize: int, crop: int) -> torch.Tensor:
    """The evaluation input of a uint8 image (3, h, w): short side resized to ``resize``
    (bilinear, antialiased; skipped when it already is), then centre-cropped to ``crop``."""
    v2 = v2_transforms()
    if min(image.shape[-2:]) != resize:
        image = v2.functional.resize(
            image, resize, interpolation=v2.InterpolationMode.BILINEAR, antialias=True
        )
    return v2.functional.center_crop(image, [crop, crop])


def pixel_statistic(values: tuple[float, ...] | list[float]) -> torch.Tensor:
    """A per-channel mean or std on the 0-255 pixel scale, shaped (3, 1, 1) (broadcasts over
    one image or a batch)."""
    return torch.tensor(values, dtype=torch.float32).view(3, 1, 1) * 255


def normalise(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 model input, with :func:`pixel_statistic` ``mean`` and ``std``."""
    return (pixels.float() - mean) / std


class EvalTransform:
    """One image -> the model input a full-mode student is evaluated on: the image-cache
    decoding (:func:`decode_resized`: RGB, short side ``cache_short_side``, bicubic) followed by
    the evaluation crop of :class:`leaf.student.finetune_inputs.CachedInputs`
    (:func:`eval_crop`) and its normalisation, float32 (3, crop, crop).

    Calling it on a PIL image skips the cache's JPEG draft decoding (the image is already
    decoded); :meth:`read` decodes a file exactly as the image cache does.
    """

    def __init__(
        self,
        cache_short_side: int,
        resize: int,
        crop: int,
        mean: tuple[float, ...] | list[float],
        std: tuple[float, ...] | list[float],
    ):
        self.cache_short_side = int(cache_short_side)
        self.resize, self.crop = int(resize), int(crop)
        self._mean, self._std = pixel_statistic(mean), pixel_statistic(std)

    @classmethod
    def from_artifact(cls, preprocess: dict[str, Any]) -> EvalTransform:
        """The transform of an artifact ``preprocess`` section made by
        :func:`artifact_preprocess`."""
        return cls(
            preprocess["cache_short_side"],
            preprocess["resize"],
            preprocess["image_size"],
            preprocess["mean"],
            preprocess["std"],
        )

    def from_pixels(self, pixels: np.ndarray) -> torch.Tensor:
        """Cached-size uint8 pixels (height, width, 3) -> the model input."""
        crop = eval_crop(pixels_tensor(pixels), self.resize, self.crop).contiguous()
        return normalise(crop, self._mean, self._std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        size = short_side_size(*image.size, self.cache_short_side)
        pixels = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        return self.from_pixels(np.asarray(pixels))

    def read(self, path: str | Path) -> torch.Tensor:
        """The model input of the image file at ``path``, decoded as the image cache does."""
        return self.from_pixels(decode_resized(path, self.cache_short_side))


def artifact_preprocess(preprocess: dict[str, Any]) -> dict[str, Any]:
    """The ``preprocess`` section of a deployed artifact (:mod:`leaf.deploy`) of a full-mode
    checkpoint with input settings ``preprocess``
    (see :func:`leaf.student.finetune_inputs.preprocess_of`): the keys of a head-mode artifact
    (``resize``/``interpolation`` describe the second, evaluation resize) plus ``mode: "full"``
    and the image cache's ``cache_short_side``/``cache_interpolation``."""
    return {
        "mode": "full",
        "cache_short_side": int(preprocess["cache_short_side"]),
        "cache_interpolation": "bicubic",
        "image_size": int(preprocess["crop"]),
        "resize": int(preprocess["resize"]),
        "interpolation": "bilinear",
        "mean": [float(v) for v in preprocess["mean"]],
        "std": [float(v) for v in preprocess["std"]],
        "crop": "center",
        "pooling": "center_crop",
    }
