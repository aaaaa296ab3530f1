"""The embedded CPU demo dataset: graded distortions of scikit-image's bundled colour photos.

Nothing is downloaded: the pristine sources are the colour photographs that ship inside the
``scikit-image`` wheel. Each source is centre-cropped to a square, resized, then degraded by six
distortion types at ``levels`` graded strengths. The MOS is SYNTHETIC, computed from a
full-reference formula against the pristine image (see :func:`synthetic_mos` and
``docs/demo_dataset.md``); it is meant for exercising the workflow, not for benchmarking.

Output layout (the ``demo`` adapter of :mod:`leaf.datasets` reads it)::

    <out_dir>/labels.csv      image_id, mos, source, distortion, level
    <out_dir>/images/<source>__<distortion>_<level>.png   (pristine: <source>__pristine.png)
"""

from __future__ import annotations

import io
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from skimage import data as skdata
from skimage.metrics import structural_similarity

from leaf.atomic_io import atomic_target

log = logging.getLogger(__name__)

PRISTINE = "pristine"
MOS_MIN, MOS_MAX = 1.0, 5.0
LABEL_COLUMNS = ["image_id", "mos", "source", "distortion", "level"]


@dataclass(frozen=True)
class Source:
    """A pristine source photo: a loader from ``skimage.data`` and the central fraction kept."""

    name: str
    load: Callable[[], np.ndarray]
    zoom: float = 1.0


# Colour photos bundled with scikit-image (no network needed; checked with scikit-image 0.26).
SOURCES: tuple[Source, ...] = (
    Source("astronaut", skdata.astronaut),
    Source("chelsea", skdata.chelsea),
    Source("coffee", skdata.coffee),
    Source("rocket", skdata.rocket),
    Source("motorcycle", lambda: skdata.stereo_motorcycle()[0]),
    Source("retina", skdata.retina, zoom=0.6),  # skip most of the black border
    Source("hubble", skdata.hubble_deep_field),
    Source("ihc", skdata.immunohistochemistry),
)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Round and clip a float image to uint8."""
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def _gaussian_blur(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels (per channel)."""
    return _to_uint8(ndimage.gaussian_filter(image.astype(np.float64), sigma=(sigma, sigma, 0)))


def _gaussian_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise with standard deviation ``std`` (0..255 scale)."""
    return _to_uint8(image + rng.normal(0.0, std, size=image.shape))


def _jpeg(image: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    """JPEG round trip through Pillow at the given quality (1..95)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(round(quality)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def _contrast(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Contrast reduction: blend each channel towards its mean by ``factor`` (1 = unchanged)."""
    mean = image.reshape(-1, 3).mean(axis=0)
    return _to_uint8(mean + factor * (image - mean))


def _pixelate(image: np.ndarray, block: float, rng: np.random.Generator) -> np.ndarray:
    """Pixelation: box-downsample by ``block`` then nearest-neighbour upsample to the same size."""
    height, width = image.shape[:2]
    small = (max(1, round(width / block)), max(1, round(height / block)))
    pil = Image.fromarray(image).resize(small, Image.Resampling.BOX)
    return np.asarray(pil.resize((width, height), Image.Resampling.NEAREST))


def _saturation(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Colour saturation change around the luma (ITU-R 601): ``factor`` > 1 over-saturates."""
    luma = (image.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))[..., None]
    return _to_uint8(luma + factor * (image - luma))


@dataclass(frozen=True)
class Distortion:
    """A distortion type with the strength at the mildest and the strongest level."""

    name: str
    apply: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
    mildest: float
    strongest: float
    geometric: bool = False  # space the strengths geometrically instead of linearly

    def strengths(self, levels: int) -> np.ndarray:
        """The strength for each level 1..``levels`` (mildest first)."""
        space = np.geomspace if self.geometric else np.linspace
        return space(self.mildest, self.strongest, levels)


DISTORTIONS: tuple[Distortion, ...] = (
    Distortion("blur", _gaussian_blur, mildest=0.8, strongest=4.0),
    Distortion("noise", _gaussian_noise, mildest=5.0, strongest=40.0),
    Distortion("jpeg", _jpeg, mildest=40.0, strongest=4.0, geometric=True),
    Distortion("contrast", _contrast, mildest=0.8, strongest=0.2),
    Distortion("pixelate", _pixelate, mildest=2.0, strongest=12.0),
    Distortion("saturation", _saturation, mildest=1.5, strongest=3.5),
)


def synthetic_mos(pristine: np.ndarray, distorted: np.ndarray) -> float:
    """Synthetic MOS on 1..5: ``1 + 4 * clip(SSIM, 0, 1)``.

    SSIM is scikit-image's ``structural_similarity`` on the RGB images (0..255 data range,
    default 7x7 window), averaged over the three channels, so colour changes also lower it.
    The pristine image scores exactly 5.
    """
    ssim = structural_similarity(pristine, distorted, channel_axis=-1, data_range=255)
    return MOS_MIN + (MOS_MAX - MOS_MIN) * float(np.clip(ssim, 0.0, 1.0))


def pristine_image(source: Source, size: int) -> np.ndarray:
    """Centre-crop ``source`` to a square (times its zoom) and resize it to ``size`` x ``size``."""
    image = np.asarray(source.load())[..., :3]
    height, width = image.shape[:2]
    side = int(min(height, width) * source.zoom)
    top, left = (height - side) // 2, (width - side) // 2
    crop = Image.fromarray(np.ascontiguousarray(image[top : top + side, left : left + side]))
    return np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS))


def _image_id(source: str, distortion: str, level: int) -> str:
    """File name of one demo image."""
    if distortion == PRISTINE:
        return f"{source}__{PRISTINE}.png"
    return f"{source}__{distortion}_{level}.png"


def _write_images(images_dir: Path, size: int, levels: int, seed: int) -> pd.DataFrame:
    """Render every demo image into ``images_dir`` and return the label table."""
    rows = []
    for source_index, source in enumerate(SOURCES):
        pristine = pristine_image(source, size)
        variants = [(PRISTINE, 0, pristine)]
        for distortion_index, distortion in enumerate(DISTORTIONS):
            for level, strength in enumerate(distortion.strengths(levels), start=1):
                rng = np.random.default_rng([seed, source_index, distortion_index, level])
                variants.append((distortion.name, level, distortion.apply(pristine, strength, rng)))
        for distortion_name, level, image in variants:
            image_id = _image_id(source.name, distortion_name, level)
            # Fast zlib level: noisy images barely compress anyway, and it halves the run time.
            Image.fromarray(image).save(images_dir / image_id, format="PNG", compress_level=1)
            mos = round(synthetic_mos(pristine, image), 4)
            rows.append((image_id, mos, source.name, distortion_name, level))
    return pd.DataFrame(rows, columns=LABEL_COLUMNS)


def write_demo_dataset(
    labels_path: str | Path, images_dir: str | Path, size: int = 256, levels: int = 5, seed: int = 0
) -> pd.DataFrame:
    """Generate the demo dataset into ``images_dir`` and ``labels_path``; return the labels.

    Both outputs are written under temporary names and moved into place at the end, so an
    interrupted run leaves no partial output. An existing ``images_dir`` is replaced.
    """
    if size < 16:
        raise ValueError(f"demo image size must be >= 16 pixels, got {size}")
    if levels < 1:
        raise ValueError(f"demo distortion levels must be >= 1, got {levels}")
    labels_path, images_dir = Path(labels_path), Path(images_dir)
    tmp_images, tmp_labels = atomic_target(images_dir), atomic_target(labels_path)
    shutil.rmtree(tmp_images, ignore_errors=True)
    tmp_images.mkdir()
    try:
        labels = _write_images(tmp_images, size, levels, seed)
        labels.to_csv(tmp_labels, index=False)
        if images_dir.exists():
            shutil.rmtree(images_dir)
        os.replace(tmp_images, images_dir)
        os.replace(tmp_labels, labels_path)
    finally:
        shutil.rmtree(tmp_images, ignore_errors=True)
        tmp_labels.unlink(missing_ok=True)
    log.info(
        "demo dataset: %d images (%d sources x (1 + %d distortions x %d levels)), "
        "synthetic MOS %.3f..%.3f -> %s",
        len(labels),
        len(SOURCES),
        len(DISTORTIONS),
        levels,
        labels["mos"].min(),
        labels["mos"].max(),
        images_dir,
    )
    return labels


def make_demo_dataset(
    out_dir: str | Path, size: int = 256, levels: int = 5, seed: int = 0
) -> pd.DataFrame:
    """Generate the demo dataset as ``out_dir/images/*.png`` + ``out_dir/labels.csv``.

    Deterministic: the same arguments give byte-identical files. Returns the label table
    (columns image_id, mos, source, distortion, level).
    """
    out_dir = Path(out_dir)
    return write_demo_dataset(out_dir / "labels.csv", out_dir / "images", size, levels, seed)


def demo_dataset_step(labels: str, images: str, size: int, levels: int, seed: int) -> None:
    """Snakemake step for the ``demo_dataset`` rule (outputs ``labels`` and ``images``)."""
    write_demo_dataset(labels, images, size=int(size), levels=int(levels), seed=int(seed))
