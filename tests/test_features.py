"""Frozen-feature extraction and the features step."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage import data

from leaf.student.backbones import create_backbone, preprocess_config
from leaf.student.features import (
    POOLING_MODES,
    build_native_transform,
    build_resize_transform,
    build_transform,
    default_resize,
    embed_images,
    features_step,
    load_features,
    mean_max_pool,
    pool_statistics,
    stage_widths,
)

LITE0 = "tf_efficientnet_lite0"


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
    assert set(saved) == {
        *("image_ids", "features", "backbone", "weights", "image_size", "pooling"),
        *("engine", "precision"),
    }
    assert saved["pooling"] == "center_crop"
    assert (saved["engine"], saved["precision"]) in {
        ("torch", "bf16"),
        ("torch", "fp32"),
        ("onnxruntime", "fp32"),
    }
    assert saved["image_ids"] == ids and saved["features"].dtype == torch.float32
    assert saved["features"].shape == (4, 1280) and saved["image_size"] == 64
    table = load_features(out)
    assert np.array_equal(table.rows(["img2.png", "img0.png"]), table.features[[2, 0]])
    with pytest.raises(KeyError, match="no cached features"):
        table.rows(["unknown.png"])
    assert not list(out.parent.glob(".*tmp*"))  # no temporary file left behind


def test_mean_max_pool_concatenates_channel_means_then_maxima():
    feature_map = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    pooled = mean_max_pool(feature_map)
    assert pooled.shape == (2, 6)
    assert torch.equal(pooled[0, :3], torch.tensor([1.5, 5.5, 9.5]))
    assert torch.equal(pooled[0, 3:], torch.tensor([3.0, 7.0, 11.0]))


def test_native_meanmax_pools_the_whole_image_of_any_size(backbone, image_paths, tmp_path):
    """Mixed sizes in one batch: every row is the image's own native-size mean+max pooling,
    whose mean half is the model's own (average-pooled) output on the uncropped image."""
    odd = tmp_path / "odd.png"
    Image.fromarray(data.coffee()).resize((72, 100)).save(odd)
    paths = [image_paths[0], str(odd), image_paths[1]]
    kwargs = {"batch_size": 3, "progress": False, "amp": False}
    features = embed_images(backbone, paths, pooling="native_meanmax", **kwargs)
    assert features.shape == (3, 2 * 1280) and features.dtype == np.float32
    transform = build_native_transform(preprocess_config(backbone))
    for row, path in enumerate(paths):
        with Image.open(path) as image:
            tensor = transform(image.convert("RGB")).unsqueeze(0)
        assert tensor.shape[-2:] == ((100, 72) if path == str(odd) else (90, 120))
        with torch.inference_mode():
            expected = backbone(tensor.contiguous(memory_format=torch.channels_last))[0].numpy()
        np.testing.assert_allclose(features[row, :1280], expected, rtol=1e-4, atol=1e-4)
        assert np.all(features[row, 1280:] >= features[row, :1280] - 1e-5)
    cropped = embed_images(backbone, paths, image_size=64, **kwargs)
    assert not np.allclose(features[:, :1280], cropped, atol=1e-3)  # not the centre crop
    with pytest.raises(ValueError, match="unknown pooling"):
        embed_images(backbone, paths, pooling="native_mean", **kwargs)


def test_pool_statistics_mean_std_max_per_channel():
    feature_map = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    pooled = pool_statistics(feature_map, ("mean", "std", "max"))
    assert pooled.shape == (2, 9) and pooled.dtype == torch.float32
    assert torch.equal(pooled[0, :3], torch.tensor([1.5, 5.5, 9.5]))
    std = float(np.std([0.0, 1.0, 2.0, 3.0]))  # population std of every channel here
    torch.testing.assert_close(pooled[0, 3:6], torch.full((3,), std))
    assert torch.equal(pooled[0, 6:], torch.tensor([3.0, 7.0, 11.0]))
    assert torch.equal(pool_statistics(feature_map.bfloat16(), ("mean",)), pooled[:, :3])
    with pytest.raises(ValueError, match="unknown pooling statistics"):
        pool_statistics(feature_map, ("median",))


def _stage_meanstd_reference(backbone, tensor: torch.Tensor) -> np.ndarray:
    """Independent reference: timm's features_only hooks of the same stages, mean/std pooled."""
    with torch.inference_mode():
        _, maps = backbone.forward_intermediates(tensor)
    return torch.cat(
        [torch.cat([m.mean(dim=(2, 3)), m.std(dim=(2, 3), unbiased=False)], 1) for m in maps], 1
    )[0].numpy()


@pytest.mark.parametrize("pooling", ["stages_meanstd", "native_stages_meanstd"])
def test_stage_pooling_modes(backbone, image_paths, tmp_path, pooling):
    """Every stage mean+std pooled (2 x (16+24+40+112+320) = 1024 for Lite0), whole image (no
    crop), images of different sizes in one batch; stage_meanstd resizes the short side."""
    assert pooling in POOLING_MODES
    odd = tmp_path / "odd.png"
    Image.fromarray(data.coffee()).resize((72, 100)).save(odd)
    paths = [image_paths[0], str(odd), image_paths[1]]
    kwargs = {"batch_size": 3, "progress": False, "amp": False, "image_size": 48}
    features = embed_images(backbone, paths, pooling=pooling, **kwargs)
    assert stage_widths(backbone) == [16, 24, 40, 112, 320]
    assert features.shape == (3, 1024) and features.dtype == np.float32
    config = preprocess_config(backbone)
    transform = (
        build_native_transform(config)
        if pooling.startswith("native")
        else build_resize_transform(config, 48)
    )
    for row, path in enumerate(paths):
        with Image.open(path) as image:
            tensor = transform(image.convert("RGB")).unsqueeze(0)
        if pooling == "stages_meanstd":  # short side 48, aspect kept
            assert tensor.shape[-2:] == ((66, 48) if path == str(odd) else (48, 64))
        expected = _stage_meanstd_reference(backbone, tensor)
        np.testing.assert_allclose(features[row], expected, rtol=1e-4, atol=1e-4)
    # bf16 autocast (where supported) stays close to float32
    amp = embed_images(backbone, paths, pooling=pooling, **{**kwargs, "amp": True})
    assert np.corrcoef(amp.ravel(), features.ravel())[0, 1] > 0.99


def test_preprocessing_follows_the_backbones_pretrained_data_config():
    """What the student sees comes from timm's data config of its backbone unless the config
    sets it: Lite1 runs at 240 (crop_pct 0.882), not at a fixed 224 / 0.875."""
    from leaf.student.features import eval_settings

    lite0 = create_backbone("tf_efficientnet_lite0", "package")
    lite1 = create_backbone("tf_efficientnet_lite1", "package")
    settings = eval_settings(lite0)
    assert (settings["image_size"], settings["resize"], settings["crop_pct"]) == (224, 256, 0.875)
    settings = eval_settings(lite1)
    assert (settings["image_size"], settings["resize"], settings["crop_pct"]) == (240, 272, 0.882)
    assert settings["interpolation"] == "bicubic" and settings["mean"] == [0.5, 0.5, 0.5]
    # The paper's 256 -> 224 protocol, set in the config, wins over the backbone's.
    paper = eval_settings(lite1, image_size=224, crop_pct=0.875)
    assert (paper["image_size"], paper["resize"]) == (224, 256)
    # The full mode's crop/resize follow the same rule where the config leaves them null.
    from leaf.student.finetune_inputs import preprocess_of

    base = {"cache_short_side": 256}
    assert preprocess_of(lite1, {**base, "crop": None, "resize": None})["crop"] == 240
    assert preprocess_of(lite1, {**base, "crop": None, "resize": None})["resize"] == 272
    assert preprocess_of(lite1, {**base, "crop": 224, "resize": 256})["resize"] == 256


@pytest.mark.parametrize(
    ("backbone", "image_size", "pooling", "size", "width"),
    [
        (LITE0, 64, "native_meanmax", 64, 2560),
        (LITE0, 64, "stages_meanstd", 64, 1024),
        ("tf_efficientnet_lite1", None, "center_crop", 240, 1280),  # the backbone's own size
    ],
)
def test_features_step_records_pooling_and_input_size(
    image_paths, tmp_path, backbone, image_size, pooling, size, width
):
    manifest = tmp_path / "manifest.parquet"
    ids = [f"img{i}.png" for i in range(2)]
    pd.DataFrame({"image_id": ids, "path": image_paths[:2], "mos": 1.0}).to_parquet(manifest)
    out = tmp_path / "features.pt"
    features_step(
        manifest=str(manifest),
        features=str(out),
        backbone=backbone,
        weights="package",
        image_size=image_size,
        batch_size=2,
        threads=1,
        pooling=pooling,
    )
    saved = torch.load(out, weights_only=True)
    assert saved["pooling"] == pooling and saved["features"].shape == (2, width)
    assert saved["image_size"] == size
