"""Reading image files: one decoding for every path, so each sees what an image viewer shows.

The manifest (:mod:`leaf.datasets`), the BRISQUE and MLLM teachers, frozen-feature extraction,
the full-mode image cache, ``leaf predict`` and the export checks all read images through
:func:`read_rgb` (or :func:`oriented_size` for the size alone):

* **EXIF orientation** is applied (``PIL.ImageOps.exif_transpose``): a photo stored sideways
  with orientation 6 is read upright, with the size a viewer shows.
* **Modes** become 8-bit RGB. High-bit-depth grayscale (``I;16``/``I;16B``/``I;16L``, and ``I``
  or ``F`` holding values above 255, e.g. 16-bit PNGs) is scaled from 0..65535 to 0..255
  (``value / 257``), so a 16-bit file reads like its 8-bit twin instead of saturating to
  white. Every other mode (palette, alpha, CMYK, 1-bit, ...) uses Pillow's ``convert("RGB")``.
* **Decompression bombs**: Pillow refuses images above twice ``Image.MAX_IMAGE_PIXELS`` (about
  179 million pixels by default). Real large-image datasets can raise the limit with the
  environment variable ``LEAF_MAX_IMAGE_PIXELS`` (a pixel count; ``0`` or ``none`` for no limit).
* Anything that cannot be read raises :class:`ImageReadError`, which names the file.

Degenerate content (a blank or constant image) is read like any other; what each consumer does
with it is documented there (e.g. the BRISQUE teacher's uniform likelihoods, counted and named).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

MAX_PIXELS_ENV = "LEAF_MAX_IMAGE_PIXELS"
# EXIF orientations that swap width and height (transpose, rotate 90/270, transverse).
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112
_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class ImageReadError(OSError):
    """An image file that cannot be read (missing, not an image, truncated, too large)."""


def apply_pixel_limit() -> None:
    """Set Pillow's decompression-bomb limit from ``LEAF_MAX_IMAGE_PIXELS`` when it is set."""
    value = os.environ.get(MAX_PIXELS_ENV)
    if value is None or not value.strip():
        return
    if value.strip().lower() in {"0", "none"}:
        Image.MAX_IMAGE_PIXELS = None
        return
    try:
        Image.MAX_IMAGE_PIXELS = int(float(value))
    except ValueError as error:
        raise ValueError(
            f"{MAX_PIXELS_ENV}={value!r} is not a pixel count (use e.g. 400000000, or 0/none)"
        ) from error


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """A high-bit-depth grayscale image as 8-bit ``L`` (16-bit values scaled by 1/257)."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or (values.size and float(values.max()) > 255.0):
        values = values / 257.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def _as_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        image = _to_8bit_gray(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """An already opened PIL image as :func:`read_rgb` reads files: upright (EXIF orientation
    applied) and in 8-bit RGB."""
    return _as_rgb(ImageOps.exif_transpose(image))


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block: read as stored
        return 1


def read_rgb(
    source: str | Path | BinaryIO, min_size: tuple[int, int] | None = None, name: str | None = None
) -> Image.Image:
    """The image at ``source`` (a path, or a binary file object named ``name`` in errors),
    fully decoded, upright (EXIF orientation applied) and in 8-bit RGB.

    ``min_size`` (width, height, as displayed) lets a JPEG decode at a reduced scale that is
    still at least that large (Pillow's ``draft``: faster for large photos). Raises
    :class:`ImageReadError` naming the file for anything it cannot read.
    """
    label = name or str(source)
    apply_pixel_limit()
    try:
        with Image.open(source) as image:
            if min_size is not None:
                width, height = min_size
                if _orientation(image) in _SWAPPING_ORIENTATIONS:
                    width, height = height, width
                image.draft("RGB", (width, height))
            image.load()
            return to_rgb(image)
    except FileNotFoundError as error:
        raise ImageReadError(f"{label}: file not found") from error
    except Image.DecompressionBombError as error:
        raise ImageReadError(
            f"{label}: {error} Set {MAX_PIXELS_ENV} (pixels, or 0 for no limit) to allow it."
        ) from error
    except Exception as error:  # any decoder failure makes the image unusable
        raise ImageReadError(
            f"{label}: cannot decode image: {type(error).__name__}: {error}"
        ) from error


def read_rgb_bytes(content: bytes, name: str) -> Image.Image:
    """:func:`read_rgb` of an image file's bytes (``name`` is used in errors)."""
    return read_rgb(io.BytesIO(content), name=name)


def oriented_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the image at ``path`` as displayed (EXIF orientation applied), from
    its header; nothing is decoded."""
    apply_pixel_limit()
    try:
        with Image.open(path) as image:
            width, height = image.size
            if _orientation(image) in _SWAPPING_ORIENTATIONS:
                width, height = height, width
            return width, height
    except FileNotFoundError as error:
        raise ImageReadError(f"{path}: file not found") from error
    except Exception as error:
        raise ImageReadError(
            f"{path}: cannot read image: {type(error).__name__}: {error}"
        ) from error
