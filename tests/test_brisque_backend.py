"""BRISQUE teacher: features/score equal the brisque package's, mapping, degenerate images."""

import importlib.util
import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leaf.teacher import brisque_backend as bb
from leaf.teacher.brisque_backend import (
    BrisqueSVR,
    BrisqueTeacher,
    brisque_to_quality,
    quality_logliks,
    quality_pair_logprobs,
)
from leaf.teacher.levels import Levels, expected_score, level_probabilities, pair_probability

LEVELS = Levels(("Excellent", "Good", "Fair", "Poor", "Bad"), (5.0, 4.0, 3.0, 2.0, 1.0))
AGIQA_IMAGE = (
    Path(__file__).resolve().parents[2] / "shared/datasets/agiqa3k/images/midjourney_normal_014.jpg"
)


def _save(path: Path, pixels: np.ndarray) -> str:
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    """A textured RGB image, one of flat colour blocks, and a constant one (non-square).

    In flat blocks the MSCN coefficients are rounding noise whose sign BRISQUE uses, so the
    blocks image only matches the package if the arithmetic is reproduced to the last bit.
    """
    folder = tmp_path_factory.mktemp("brisque_images")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:90, 0:120] / 30.0
    smooth = 120 + 60 * np.sin(2 * x) * np.cos(3 * y)
    texture = np.stack([smooth + rng.normal(0, s, smooth.shape) for s in (3, 6, 9)], axis=2)
    blocks = np.kron(rng.integers(0, 256, size=(6, 8, 3)), np.ones((16, 16, 1)))
    return {
        "texture": _save(folder / "texture.png", texture),
        "blocks": _save(folder / "blocks.png", blocks),
        "constant": _save(folder / "constant.png", np.full((40, 60, 3), 128.0)),
    }


def _package_score(rgb: np.ndarray, monkeypatch) -> float:
    """The brisque package's own score: as is where it runs, else with its numpy-2.4 crash
    (float() of shape-(1,) arrays in scale_features) patched; `requests` is stubbed if absent."""
    if importlib.util.find_spec("requests") is None:
        monkeypatch.setitem(sys.modules, "requests", types.ModuleType("requests"))
    from brisque import BRISQUE

    reference = BRISQUE(url=False)
    try:
        return float(reference.score(rgb))
    except TypeError:

        def scale_features(self, features):
            flat = np.array([np.asarray(f, dtype=np.float64).item() for f in features])
            low = np.asarray(self.scale_params["min_"], dtype=np.float64)
            high = np.asarray(self.scale_params["max_"], dtype=np.float64)
            return -1 + 2.0 / (high - low) * (flat - low)

        monkeypatch.setattr(BRISQUE, "scale_features", scale_features)
        return float(reference.score(rgb))


@pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")
@pytest.mark.parametrize("name", ["texture", "blocks", "agiqa"])
def test_score_equals_the_brisque_package(images, name, monkeypatch):
    if name == "agiqa" and not AGIQA_IMAGE.exists():
        pytest.skip("../shared/datasets/agiqa3k is absent")
    path = str(AGIQA_IMAGE) if name == "agiqa" else images[name]
    rgb = np.asarray(Image.open(path).convert("RGB"))
    ours = BrisqueSVR().predict(bb.image_features(path))
    assert ours == pytest.approx(_package_score(rgb, monkeypatch), abs=1e-6)
    teacher = BrisqueTeacher(LEVELS, progress=False)
    assert teacher.brisque_scores([path])[0] == ours


def test_svr_equals_libsvm_prediction_and_is_deterministic(images):
    from libsvm import svmutil

    svr = BrisqueSVR()
    features = bb.image_features(images["blocks"])
    scaled = -1 + 2.0 / (svr.feature_max - svr.feature_min) * (features - svr.feature_min)
    nodes, _ = svmutil.gen_svm_nodearray(scaled.tolist(), isKernel=False)
    model = svmutil.svm_load_model(str(bb.brisque_model_dir() / "svm.txt"))
    assert svr.predict(features) == pytest.approx(
        svmutil.libsvm.svm_predict(model, nodes), abs=1e-9
    )
    assert len({svr.predict(features) for _ in range(20)}) == 1


def test_features_are_36_finite_values_and_nan_when_flat(images):
    features = bb.image_features(images["texture"])
    assert features.shape == (36,) and np.all(np.isfinite(features))
    assert np.all(np.isnan(bb.image_features(images["constant"])))
    assert np.isnan(BrisqueSVR().predict(bb.image_features(images["constant"])))


def test_quality_mapping_by_hand():
    scores = np.array([-5.0, 0.0, 25.0, 100.0, 150.0, np.nan])
    quality = brisque_to_quality(scores, best=0.0, worst=100.0, values=LEVELS.values)
    assert quality[:5] == pytest.approx([5.0, 5.0, 4.0, 1.0, 1.0]) and np.isnan(quality[5])
    assert brisque_to_quality(np.array([30.0]), 10.0, 50.0, [1.0, 0.0]) == pytest.approx([0.5])


def test_level_logliks_are_a_gaussian_around_the_quality():
    logliks = quality_logliks(np.array([3.0, 4.5, np.nan]), LEVELS.values, sigma=1.0)
    assert logliks[0] == pytest.approx([-2.0, -0.5, 0.0, -0.5, -2.0])
    assert logliks[2].tolist() == [0.0] * 5
    scores = expected_score(level_probabilities(logliks), np.asarray(LEVELS.values))
    assert scores[0] == pytest.approx(3.0) and scores[2] == pytest.approx(3.0)
    assert 4.0 < scores[1] < 4.5  # pulled towards the middle by the discrete levels


def test_pair_logprobs_are_log_sigmoids():
    logprobs = quality_pair_logprobs(
        np.array([4.0, 3.0, 1.0, 2.0]), np.array([3.0, 3.0, 5.0, np.nan]), temperature=0.5
    )
    assert np.exp(logprobs).sum(axis=1) == pytest.approx(np.ones(4))
    assert logprobs[0] == pytest.approx([-np.log1p(np.exp(-2.0)), -np.log1p(np.exp(2.0))])
    assert logprobs[1] == pytest.approx([np.log(0.5)] * 2)
    assert logprobs[3] == pytest.approx([np.log(0.5)] * 2)
    assert np.all(np.isfinite(quality_pair_logprobs(np.array([5.0]), np.array([1.0]), 1e-3)))
    p_a = pair_probability(logprobs[:, 0], logprobs[:, 1])
    assert p_a[:3] == pytest.approx([1 / (1 + np.exp(-2.0)), 0.5, 1 / (1 + np.exp(8.0))])


def test_degenerate_image_gets_no_opinion(images, caplog):
    teacher = BrisqueTeacher(LEVELS, progress=False)
    paths = [images["texture"], images["constant"]]
    with caplog.at_level(logging.WARNING):
        logliks = teacher.point_logliks(paths)
    assert "1 of 2 images are (near-)constant" in caplog.text
    assert logliks[1].tolist() == [0.0] * 5 and np.ptp(logliks[0]) > 0
    pairs = teacher.pair_logprobs([images["constant"], images["texture"]], paths)
    assert pairs[0] == pytest.approx([np.log(0.5)] * 2)
    assert pairs[1] == pytest.approx([np.log(0.5)] * 2)  # an image against itself
    assert teacher.provenance()["counts"] == {"n_images": 2, "n_degenerate": 1}


def test_scores_are_memoised_per_path(images, monkeypatch):
    calls: list[str] = []
    original = bb.image_features
    monkeypatch.setattr(bb, "image_features", lambda path: calls.append(path) or original(path))
    teacher = BrisqueTeacher(LEVELS, progress=False)
    first = teacher.point_logliks([images["texture"], images["blocks"], images["texture"]])
    again = teacher.point_logliks([images["blocks"]])
    teacher.pair_logprobs([images["texture"]], [images["blocks"]])
    assert sorted(calls) == sorted([images["texture"], images["blocks"]])
    assert np.array_equal(first[1], again[0]) and np.array_equal(first[0], first[2])


def test_worker_pool_gives_the_same_scores(images):
    paths = [images["texture"], images["blocks"], images["constant"]]
    serial = BrisqueTeacher(LEVELS, progress=False).brisque_scores(paths)
    parallel = BrisqueTeacher(LEVELS, workers=2, progress=False).brisque_scores(paths)
    np.testing.assert_array_equal(serial, parallel)


def test_invalid_options_and_provenance():
    with pytest.raises(ValueError, match="worst > best"):
        BrisqueTeacher(LEVELS, best=50, worst=10)
    with pytest.raises(ValueError, match="sigma"):
        BrisqueTeacher(LEVELS, sigma=0)
    provenance = BrisqueTeacher(LEVELS, sigma=0.5).provenance()
    assert provenance["backend"] == "brisque" and "not an MLLM" in provenance["signal"]
    assert provenance["mapping"] == {"best": 0.0, "worst": 100.0, "sigma": 0.5, "temperature": 0.5}
    assert provenance["brisque_version"] == "0.2.0"
