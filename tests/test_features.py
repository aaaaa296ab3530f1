"""Frozen-feature extraction and the features step."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage import data

from leaf.student.backbones import create_backbone, preprocess_config
from leaf.student.features import (
    build_transform,
    default_resize,
    embed_images,
    features_step,
    load_features,
)

LITE0 = "tf_efficientnet_lite0"


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: fast on a loaded 2-core machine, and a fixed thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.camera()]
    paths = []
    for index, photo in enumerate(photos):
        path = folder / f"img{index}.png"
        Image.fromarray(photo).resize((120, 90)).save(path)  # small: fast tests; camera is grey
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def backbone():
    return create_backbone(LITE0, "package")


def test_transform_resizes_short_side_then_centre_crops(backbone):
    assert default_resize(224) == 256
    transform = build_transform(preprocess_config(backbone), image_size=64)
    tensor = transform(Image.fromarray(data.chelsea()))
    assert tensor.shape == (3, 64, 64) and tensor.dtype == torch.float32
    assert -1.0 <= float(tensor.min()) and float(tensor.max()) <= 1.0  # mean/std 0.5


def test_features_are_deterministic_and_bf16_is_close_to_fp32(backbone, image_paths):
    kwargs = {"image_size": 96, "batch_size": 3, "progress": False}
    first = embed_images(backbone, image_paths, amp=True, **kwargs)
    again = embed_images(backbone, image_paths, amp=True, **kwargs)
    fp32 = embed_images(backbone, image_paths, amp=False, **kwargs)
    assert first.shape == (4, 1280) and first.dtype == np.float32
    assert np.array_equal(first, again)
    assert np.corrcoef(first.ravel(), fp32.ravel())[0, 1] > 0.99
    assert not np.allclose(first[0], first[1])  # different images, different features


def test_features_step_writes_the_contract(image_paths, tmp_path):
    manifest = tmp_path / "manifest.parquet"
    ids = [f"img{i}.png" for i in range(len(image_paths))]
    pd.DataFrame({"image_id": ids, "path": image_paths, "mos": 1.0}).to_parquet(manifest)
    out = tmp_path / "features" / "lite0.pt"
    features_step(
        manifest=str(manifest),
        features=str(out),
        backbone=LITE0,
        weights="package",
        image_size=64,
        batch_size=2,
        threads=1,
    )
    saved = torch.load(out, weights_only=True)
    assert set(saved) == {"image_ids", "features", "backbone", "weights", "image_size"}
    assert saved["image_ids"] == ids and saved["features"].dtype == torch.float32
    assert saved["features"].shape == (4, 1280) and saved["image_size"] == 64
    table = load_features(out)
    assert np.array_equal(table.rows(["img2.png", "img0.png"]), table.features[[2, 0]])
    with pytest.raises(KeyError, match="no cached features"):
        table.rows(["unknown.png"])
    assert not list(out.parent.glob(".*tmp*"))  # no temporary file left behind
