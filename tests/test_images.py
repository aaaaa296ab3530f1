"""One image, one decoding: every path sees what a viewer shows (field-tested cases).

* A 16-bit grayscale PNG (values x 257) reads like its 8-bit twin, not like a white image.
* A JPEG stored sideways with EXIF orientation 6 reads like the same picture stored upright:
  same size, same pixels (up to JPEG noise), on every path: the manifest, the BRISQUE teacher,
  the MLLM teachers' image loading, frozen features, the full-mode image cache, leaf predict.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data

from leaf.datasets import build_manifest
from leaf.images import MAX_PIXELS_ENV, ImageReadError, oriented_size, read_rgb
from leaf.student.backbones import create_backbone
from leaf.student.features import embed_images
from leaf.student.image_cache import decode_resized
from leaf.teacher.brisque_backend import load_gray
from leaf.teacher.prompts import load_rgb_images

EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """{name: path}: a grayscale picture as 8-bit and 16-bit PNG, and a colour photo as an
    upright JPEG (320 x 480) and the same photo stored sideways (480 x 320) with orientation 6."""
    folder = tmp_path_factory.mktemp("pictures")
    gray = np.asarray(Image.fromarray(data.camera()).resize((160, 120)))
    Image.fromarray(gray).save(folder / "gray8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "gray16.png")
    photo = Image.fromarray(data.astronaut()).resize((320, 480))  # upright: 320 wide, 480 high
    photo.save(folder / "upright.jpg", quality=95)
    # Stored rotated 90 degrees clockwise (480 x 320); orientation 6 = "rotate 90 CW to view".
    stored = photo.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    stored.save(folder / "sideways.jpg", quality=95, exif=exif)
    return {p.stem: p for p in folder.iterdir()}


def test_16bit_gray_reads_like_8bit(pictures):
    with Image.open(pictures["gray16"]) as raw:
        assert raw.mode.startswith("I")  # the case: a high-bit-depth mode
    eight, sixteen = (np.asarray(read_rgb(pictures[n]), np.int16) for n in ("gray8", "gray16"))
    assert eight.shape == sixteen.shape == (120, 160, 3)
    assert np.abs(eight - sixteen).max() <= 1
    assert sixteen.mean() < 200  # not saturated to white


def test_exif_orientation_is_applied(pictures):
    assert oriented_size(pictures["sideways"]) == oriented_size(pictures["upright"]) == (320, 480)
    upright, sideways = (
        np.asarray(read_rgb(pictures[n]), np.float64) for n in ("upright", "sideways")
    )
    assert upright.shape == sideways.shape == (480, 320, 3)
    assert np.abs(upright - sideways).mean() < 3  # the same picture up to JPEG noise


@pytest.mark.parametrize(("a", "b"), [("gray8", "gray16"), ("upright", "sideways")])
def test_every_path_sees_the_same_image(pictures, a, b, tmp_path):
    paths = [str(pictures[a]), str(pictures[b])]
    # Manifest: the same (displayed) size.
    labels = pd.DataFrame({"image_id": [a, b], "path": paths, "mos": [1.0, 1.0]})
    manifest = build_manifest(labels, progress=False)
    assert manifest["width"].nunique() == 1 and manifest["height"].nunique() == 1
    # BRISQUE's grayscale input and the MLLM teachers' RGB images.
    first, second = (load_gray(p) for p in paths)
    assert first.shape == second.shape and np.abs(first - second).mean() < 3 / 255
    images = load_rgb_images(paths)
    assert images[0].size == images[1].size
    # The full-mode image cache.
    cached = [decode_resized(p, 64).astype(np.float64) for p in paths]
    assert cached[0].shape == cached[1].shape and np.abs(cached[0] - cached[1]).mean() < 4
    # Frozen features (the student's input; leaf predict reads files the same way).
    backbone = create_backbone("tf_efficientnet_lite0", "package")
    features = embed_images(backbone, paths, 64, batch_size=2, amp=False, progress=False)
    cosine = features[0] @ features[1] / np.linalg.norm(features[0]) / np.linalg.norm(features[1])
    assert cosine > 0.99


def test_unreadable_images_name_the_file(tmp_path, monkeypatch):
    bad = tmp_path / "not_an_image.jpg"
    bad.write_bytes(b"plain text")
    with pytest.raises(ImageReadError, match="not_an_image.jpg"):
        read_rgb(bad)
    with pytest.raises(ImageReadError, match="missing.png: file not found"):
        read_rgb(tmp_path / "missing.png")
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(big)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")  # 90000 pixels > 2 x 1000: refused as a bomb
    with pytest.raises(ImageReadError, match=f"big.png.*{MAX_PIXELS_ENV}"):
        read_rgb(big)
    monkeypatch.setenv(MAX_PIXELS_ENV, "0")  # no limit
    assert read_rgb(big).size == (300, 300)
