"""Frozen-feature engines: ONNX Runtime gives PyTorch's float32 features, the torch engine the
same numbers as a plain extraction loop, and the engine choice and its fallbacks."""

import logging
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from leaf.images import read_rgb
from leaf.optional import MissingExtraError
from leaf.prefetch import prefetched
from leaf.student import features as features_module
from leaf.student.backbones import create_backbone
from leaf.student.features import (
    FEATURE_ENGINES,
    build_native_transform,
    choose_engine,
    eval_settings,
    extract,
    feature_engine,
    mean_max_pool,
    pooling_function,
)
from leaf.student.onnx_features import (
    MAX_RELATIVE_DIFFERENCE,
    EngineMismatchError,
    relative_difference,
)

LITE0 = "tf_efficientnet_lite0"
needs_onnxruntime = pytest.mark.skipif(
    not features_module.onnxruntime_installed(), reason="onnx/onnxruntime not installed"
)


@pytest.fixture(scope="module")
def backbone():
    return create_backbone(LITE0, "package")


@pytest.fixture(scope="module")
def mixed_paths(tmp_path_factory):
    """Demo photos: three at 120 x 90 and one at 72 x 100 (two shapes in one batch, neither
    the traced one)."""
    folder = tmp_path_factory.mktemp("engine_images")
    sizes = [(120, 90), (72, 100), (120, 90), (120, 90)]
    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.camera()]
    paths = []
    for index, (photo, size) in enumerate(zip(photos, sizes, strict=True)):
        path = folder / f"img{index}.png"
        Image.fromarray(photo).resize(size).save(path)
        paths.append(str(path))
    return paths


def per_image_relative(features: np.ndarray, reference: np.ndarray) -> float:
    """The largest :func:`relative_difference` over the images (rows)."""
    return max(relative_difference(a, b) for a, b in zip(features, reference, strict=True))


@needs_onnxruntime
@pytest.mark.parametrize(
    ("pooling", "image_size"),
    [("center_crop", 64), ("native_meanmax", None), ("stages_meanstd", 48)],
)
def test_onnxruntime_features_equal_torch_float32(backbone, mixed_paths, pooling, image_size):
    kwargs = {"batch_size": 3, "progress": False, "amp": False, "pooling": pooling}
    if image_size:
        kwargs["image_size"] = image_size
    onnx = extract(backbone, mixed_paths, engine="onnxruntime", **kwargs)
    eager = extract(backbone, mixed_paths, engine="torch", **kwargs)
    assert (onnx.engine, onnx.precision) == ("onnxruntime", "fp32")
    assert (eager.engine, eager.precision) == ("torch", "fp32")
    assert onnx.features.shape == eager.features.shape and onnx.features.dtype == np.float32
    assert per_image_relative(onnx.features, eager.features) < 1e-4  # the goal: 1e-3
    assert not np.allclose(onnx.features[0], onnx.features[1])  # different images


@pytest.mark.parametrize("amp", [True, False])
def test_torch_engine_gives_a_plain_loops_numbers(backbone, mixed_paths, amp):
    """The torch engine (decoding in a background thread, engine objects) computes exactly what
    the plain loop of earlier versions did: same-size images stacked, channels-last, bf16
    autocast where supported, mean+max pooled in float32."""
    got = extract(
        backbone,
        mixed_paths,
        batch_size=4,
        amp=amp,
        progress=False,
        pooling="native_meanmax",
        engine="torch",
    )
    transform = build_native_transform(eval_settings(backbone))
    tensors = [transform(read_rgb(path)) for path in mixed_paths]
    use_amp = amp and features_module.bf16_autocast_supported()
    assert got.precision == ("bf16" if use_amp else "fp32")
    expected = np.zeros_like(got.features)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=use_amp):
        for rows in ([0, 2, 3], [1]):  # the two sizes of the batch, as the extraction groups them
            batch = torch.stack([tensors[i] for i in rows])
            batch = batch.contiguous(memory_format=torch.channels_last)
            expected[rows] = mean_max_pool(backbone.forward_features(batch).float()).numpy()
    assert np.array_equal(got.features, expected)


def test_auto_engine_follows_the_machine_and_the_installed_packages(monkeypatch):
    def machine(bf16: bool, ort: bool) -> None:
        monkeypatch.setattr(features_module, "bf16_autocast_supported", lambda: bf16)
        monkeypatch.setattr(features_module, "onnxruntime_installed", lambda: ort)

    machine(bf16=True, ort=True)
    assert choose_engine("auto", amp=True) == "torch"  # native bf16: the bf16 path as before
    assert choose_engine("auto", amp=False) == "onnxruntime"
    machine(bf16=False, ort=True)  # an AVX2 CPU: float32 either way
    assert choose_engine("auto", amp=True) == "onnxruntime"
    machine(bf16=False, ort=False)
    assert choose_engine("auto", amp=True) == "torch"
    assert choose_engine("onnxruntime") == "onnxruntime"  # explicit: as given
    assert choose_engine("torch") == "torch"
    assert set(FEATURE_ENGINES) == {"auto", "onnxruntime", "torch"}
    with pytest.raises(ValueError, match="unknown feature engine"):
        choose_engine("tensorrt")


def test_missing_onnxruntime_falls_back_under_auto_and_raises_when_asked_for(
    backbone, monkeypatch, caplog
):
    pool = pooling_function("native_meanmax")
    monkeypatch.setattr(features_module, "bf16_autocast_supported", lambda: False)
    monkeypatch.setattr(features_module, "onnxruntime_installed", lambda: True)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as when absent
    with caplog.at_level(logging.WARNING, logger="leaf.student.features"):
        engine = feature_engine(backbone, pool, "auto", amp=True)
    assert (engine.name, engine.precision) == ("torch", "fp32")
    assert "using PyTorch instead" in caplog.text
    with pytest.raises(MissingExtraError, match=r"leaf-iqa\[export\]"):
        feature_engine(backbone, pool, "onnxruntime", amp=True)


def test_an_engine_that_disagrees_with_torch_is_not_used(backbone, monkeypatch, caplog):
    """The first image is checked against PyTorch float32: a wrong engine (here one that
    returns features 1 % off) falls back under auto and raises when asked for."""

    class OffByOnePercent:
        def __init__(self, model, pool, threads):
            self.model, self.pool = model, pool

        def __call__(self, batch):
            with torch.inference_mode():
                return self.pool(self.model, batch).float() * 1.01

    pool = pooling_function("native_meanmax")
    sample = torch.rand(3, 40, 56)
    monkeypatch.setattr(features_module, "OnnxFeatures", OffByOnePercent)
    monkeypatch.setattr(features_module, "bf16_autocast_supported", lambda: False)
    monkeypatch.setattr(features_module, "onnxruntime_installed", lambda: True)
    with caplog.at_level(logging.WARNING, logger="leaf.student.features"):
        engine = feature_engine(backbone, pool, "auto", amp=False, sample=sample)
    assert engine.name == "torch" and "differ from PyTorch float32" in caplog.text
    with pytest.raises(EngineMismatchError, match="tolerance"):
        feature_engine(backbone, pool, "onnxruntime", amp=False, sample=sample)
    assert MAX_RELATIVE_DIFFERENCE == 1e-3


def test_relative_difference():
    reference = np.array([[0.0, 2.0, -4.0]])
    assert relative_difference(reference, reference) == 0.0
    assert relative_difference(reference + 0.04, reference) == pytest.approx(0.01)
    assert relative_difference(np.zeros(3), np.zeros(3)) == 0.0


def test_prefetched_keeps_order_runs_one_ahead_and_raises_in_place():
    produced: list[int] = []

    def numbers():
        for number in range(5):
            produced.append(number)
            yield number

    seen = []
    for number in prefetched(numbers()):
        seen.append(number)
        assert len(produced) <= number + 2  # at most one computed ahead
    assert seen == [0, 1, 2, 3, 4]

    def failing():
        yield 1
        raise OSError("broken image")

    items = prefetched(failing())
    assert next(items) == 1
    with pytest.raises(OSError, match="broken image"):
        next(items)
