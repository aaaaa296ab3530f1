"""Tests for leaf.demo_data: the generated demo dataset is deterministic and well ordered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leaf import demo_data
from leaf.datasets import load_labels
from leaf.demo_data import demo_dataset_step, make_demo_dataset, synthetic_mos

SIZE, LEVELS = 64, 3


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo dataset generated once for the module."""
    out = tmp_path_factory.mktemp("demo")
    make_demo_dataset(out, size=SIZE, levels=LEVELS, seed=0)
    return out


@pytest.fixture(scope="module")
def labels(demo_dir: Path) -> pd.DataFrame:
    return pd.read_csv(demo_dir / "labels.csv")


def test_layout_and_count(demo_dir: Path, labels: pd.DataFrame) -> None:
    n_sources, n_distortions = len(demo_data.SOURCES), len(demo_data.DISTORTIONS)
    assert n_sources >= 8
    assert len(labels) == n_sources * (1 + n_distortions * LEVELS)
    assert list(labels.columns) == ["image_id", "mos", "source", "distortion", "level"]
    assert labels["image_id"].is_unique
    assert sorted(p.name for p in (demo_dir / "images").iterdir()) == sorted(labels["image_id"])
    assert "astronaut__blur_3.png" in set(labels["image_id"])
    assert "astronaut__pristine.png" in set(labels["image_id"])
    assert labels["mos"].between(1.0, 5.0).all()


def test_default_size_gives_200_to_260_images() -> None:
    count = len(demo_data.SOURCES) * (1 + len(demo_data.DISTORTIONS) * 5)
    assert 200 <= count <= 260


def test_rerun_is_byte_identical(demo_dir: Path, labels: pd.DataFrame, tmp_path: Path) -> None:
    again = make_demo_dataset(tmp_path, size=SIZE, levels=LEVELS, seed=0)
    assert (tmp_path / "labels.csv").read_bytes() == (demo_dir / "labels.csv").read_bytes()
    pd.testing.assert_frame_equal(again, labels)
    for image_id in ["astronaut__noise_3.png", "coffee__jpeg_2.png", "rocket__pristine.png"]:
        first = (demo_dir / "images" / image_id).read_bytes()
        assert (tmp_path / "images" / image_id).read_bytes() == first


def test_seed_changes_only_the_noise(demo_dir: Path, tmp_path: Path) -> None:
    make_demo_dataset(tmp_path, size=SIZE, levels=LEVELS, seed=1)
    images, reference = tmp_path / "images", demo_dir / "images"
    noisy = "chelsea__noise_2.png"
    assert (images / noisy).read_bytes() != (reference / noisy).read_bytes()
    blurred = "chelsea__blur_2.png"
    assert (images / blurred).read_bytes() == (reference / blurred).read_bytes()


def test_pristine_images_get_the_maximum(labels: pd.DataFrame) -> None:
    pristine = labels[labels["distortion"] == demo_data.PRISTINE]
    assert len(pristine) == len(demo_data.SOURCES)
    assert (pristine["mos"] == 5.0).all()
    distorted = labels[labels["distortion"] != demo_data.PRISTINE]
    assert (distorted["mos"] < 5.0).all()


def test_mos_decreases_with_level_on_average(labels: pd.DataFrame) -> None:
    distorted = labels[labels["distortion"] != demo_data.PRISTINE]
    mean_mos = distorted.groupby(["distortion", "level"])["mos"].mean().unstack("level")
    assert list(mean_mos.columns) == list(range(1, LEVELS + 1))
    assert (mean_mos.diff(axis=1).iloc[:, 1:] < 0).all().all(), mean_mos


def test_synthetic_mos_formula() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    assert synthetic_mos(image, image) == 5.0
    assert synthetic_mos(image, 255 - image) == 1.0  # negative SSIM is clipped to 0


def test_step_writes_both_outputs_readable_by_demo_adapter(tmp_path: Path) -> None:
    root = tmp_path / "resources" / "demo"
    demo_dataset_step(
        labels=str(root / "labels.csv"), images=str(root / "images"), size=32, levels=1, seed=0
    )
    labels = load_labels("demo", root)
    assert len(labels) == len(demo_data.SOURCES) * (1 + len(demo_data.DISTORTIONS))
    assert all(Path(path).is_file() for path in labels["path"])
    assert set(labels.columns) >= {"source", "distortion", "level"}
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="levels"):
        make_demo_dataset(tmp_path, size=SIZE, levels=0)
    with pytest.raises(ValueError, match="size"):
        make_demo_dataset(tmp_path, size=4)
