"""The one-line Python API: leaf.create_metric(artifact)(images) scores like `leaf predict`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage import data
from test_predict import LITE0, tiny_head

import leaf
from leaf.deploy import build_artifact, save_artifact
from leaf.predict import predict_images
from leaf.student.backbones import create_backbone
from leaf.student.features import feature_width


@pytest.fixture(scope="module")
def backbone():
    return create_backbone(LITE0, "package")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for index, photo in enumerate([data.chelsea(), data.coffee(), data.astronaut()]):
        Image.fromarray(photo).resize((96, 72) if index else (80, 80)).save(folder / f"{index}.png")
    return sorted(folder.glob("*.png"))


def artifact(backbone, folder, pooling="center_crop", mos_range=(1.0, 5.0)):
    built = build_artifact(
        tiny_head(feature_width(backbone, pooling)),
        LITE0,
        backbone,
        image_size=64,
        provenance={"dataset": "toy"},
        pooling=pooling,
        mos_range=mos_range,
    )
    path = folder / f"{pooling}.leaf.pt"
    save_artifact(built, path)
    return path


@pytest.mark.parametrize("pooling", ["center_crop", "native_stages_meanstd"])
def test_create_metric_scores_like_leaf_predict(backbone, photos, tmp_path, pooling):
    path = artifact(backbone, tmp_path, pooling)
    summary = predict_images(path, photos[0].parent, tmp_path / "s.parquet", progress=False)
    expected = pd.read_parquet(summary.output).set_index("path")["score"]
    expected = expected.loc[[str(p) for p in photos]].to_numpy()

    metric = leaf.create_metric(path, device="cpu")
    assert isinstance(metric, torch.nn.Module)
    assert metric.lower_better is False and metric.metric_mode == "NR"
    assert metric.score_range == (1.0, 5.0)
    np.testing.assert_allclose(metric([str(p) for p in photos]).numpy(), expected, rtol=1e-5)
    one = metric(photos[1])  # a single path
    assert one.shape == (1,) and one.item() == pytest.approx(expected[1], rel=1e-5)
    with Image.open(photos[2]) as image:  # a PIL image
        assert metric(image).item() == pytest.approx(expected[2], rel=1e-5)
    # A float tensor in [0, 1] (N, 3, H, W): the same pixels as the file.
    pixels = np.asarray(Image.open(photos[0]).convert("RGB"), dtype=np.float32) / 255
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    assert metric(tensor).item() == pytest.approx(expected[0], rel=1e-5)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        metric(torch.zeros(1, 1, 8, 8))
    with pytest.raises(TypeError, match="not an image path"):
        metric([3])


def test_label_free_or_unrecorded_students_have_no_score_range(backbone, tmp_path):
    metric = leaf.load_model(artifact(backbone, tmp_path, mos_range=None), device="cpu")
    assert metric.score_range is None


def test_import_leaf_stays_light():
    """`import leaf` (also done by the workflow when it parses) loads no torch."""
    import subprocess
    import sys

    code = "import sys, leaf; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tensor_inputs_outside_zero_one_are_errors_not_clamped(backbone, photos, tmp_path):
    metric = leaf.create_metric(artifact(backbone, tmp_path), device="cpu")
    pixels = torch.from_numpy(np.asarray(Image.open(photos[0]).convert("RGB")).copy())
    tensor = pixels.permute(2, 0, 1)[None]  # uint8 (N, 3, H, W)
    with pytest.raises(TypeError, match="divide 8-bit pixels by 255"):
        metric(tensor)
    with pytest.raises(ValueError, match="0-255 pixels"):
        metric(tensor.float())
    with pytest.raises(ValueError, match="normalised"):
        metric(tensor.float() / 255 - 0.5)
    assert metric(tensor.float() / 255).shape == (1,)


def test_the_metric_stays_in_eval_mode_inside_a_training_model(backbone, photos, tmp_path):
    metric = leaf.create_metric(artifact(backbone, tmp_path), device="cpu")
    before = metric(photos[0]).item()
    assert not metric.training
    host = torch.nn.ModuleDict({"metric": metric}).train()  # e.g. a metric used as a loss
    assert not host["metric"].training and not metric.student.training
    scores = [metric(photos[0]).item() for _ in range(3)]
    assert scores == [before] * 3  # no dropout, no BatchNorm statistics changed
