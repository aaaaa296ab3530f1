"""Tests for leaf.datasets: adapters on small fixtures in each dataset's real format, manifest."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leaf import datasets
from leaf.datasets import DatasetError, build_manifest, load_labels, prepare_step

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED = Path(__file__).resolve().parents[2] / "shared"
AGIQA3K = SHARED / "datasets" / "agiqa3k"


def copy_fixture(name: str, root: Path) -> Path:
    """Copy the label files of fixture ``name`` into ``root`` (the dataset root)."""
    shutil.copytree(FIXTURES / name, root, dirs_exist_ok=True)
    return root


def write_images(labels: pd.DataFrame) -> None:
    """Write a tiny distinct image (format from the extension) at every ``path`` of ``labels``."""
    rng = np.random.default_rng(0)
    for index, path in enumerate(labels["path"]):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(6 + index, 8 + index, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)


# adapter -> (fixture folder, default image folder, expected ids, expected MOS, expected extras)
ADAPTER_CASES = {
    "agiqa3k": (
        "agiqa3k",
        "images",
        ["GLIDE_normal_010.jpg", "midjourney_lowstep_020.jpg", "sd1.5_highcorr_030.jpg"],
        [2.104, 3.877, 1.25],
        {"prompt": ["a red bicycle", "a lighthouse, at dusk", "a bowl of ramen"]},
    ),
    "koniq10k": (
        "koniq10k",
        "1024x768",
        ["1000000001.jpg", "1000000002.jpg", "1000000003.jpg"],
        [70.125, 52.5, 84.75],
        {"set": ["training", "validation", "test"]},
    ),
    "spaq": (
        "spaq",
        "TestImage",
        ["00007.jpg", "00008.jpg", "00009.jpg"],
        [41.5, 73.0, 58.25],
        {},
    ),
    "aigiqa20k": (
        "aigiqa20k",
        "train",
        ["SDXL_0101.png", "DALLE2_0102.png", "midjourney_0103.png"],
        [3.8412, 2.1503, 4.4027],
        {
            "prompt": [
                "a castle on a hill, fog, golden hour, highly detailed, artstation",
                "a plain white mug on a wooden table",
                "portrait of an old sailor, oil painting, by an unknown master",
            ]
        },
    ),
    "demo": (
        "demo",
        "images",
        ["toy__pristine.png", "toy__blur_1.png", "toy__noise_2.png"],
        [5.0, 4.2, 2.75],
        {"source": ["toy"] * 3, "distortion": ["pristine", "blur", "noise"], "level": [0, 1, 2]},
    ),
}


@pytest.mark.parametrize("adapter", sorted(ADAPTER_CASES))
def test_adapter_reads_native_format(adapter: str, tmp_path: Path) -> None:
    fixture, image_dir, ids, mos, extras = ADAPTER_CASES[adapter]
    root = copy_fixture(fixture, tmp_path / "data")
    labels = load_labels(adapter, root)
    assert list(labels.columns) == ["image_id", "path", "mos", *extras]
    assert labels["image_id"].tolist() == ids
    assert labels["path"].tolist() == [str((root / image_dir / i).absolute()) for i in ids]
    np.testing.assert_allclose(labels["mos"].to_numpy(dtype=float), mos)
    for column, values in extras.items():
        assert labels[column].tolist() == values

    write_images(labels)
    manifest = build_manifest(labels, progress=False)
    assert list(manifest.columns) == [*datasets.MANIFEST_COLUMNS, *extras]
    assert manifest["width"].tolist() == [8, 9, 10]
    assert manifest["height"].tolist() == [6, 7, 8]
    expected_hashes = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in labels["path"]]
    assert manifest["sha256"].tolist() == expected_hashes


def test_image_dir_option_overrides_default(tmp_path: Path) -> None:
    root = copy_fixture("koniq10k", tmp_path)
    labels = load_labels("koniq10k", root, {"image_dir": "512x384"})
    assert all(Path(p).parent == (root / "512x384").absolute() for p in labels["path"])


def test_koniq_scores_file_without_set_column(tmp_path: Path) -> None:
    root = copy_fixture("koniq10k_scores", tmp_path)
    labels = load_labels("koniq10k", root)
    assert list(labels.columns) == ["image_id", "path", "mos"]
    assert labels["mos"].tolist() == [3.7, 3.03]


def test_koniq_without_label_file_names_both_candidates(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as error:
        load_labels("koniq10k", tmp_path)
    assert "koniq10k_distributions_sets.csv" in str(error.value)
    assert "koniq10k_scores_and_distributions.csv" in str(error.value)


def test_spaq_xlsx_without_openpyxl_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "MOS and Image attribute scores.xlsx").write_bytes(b"PK\x03\x04 not really")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "openpyxl" else real_find_spec(name, *args),
    )
    with pytest.raises(DatasetError, match="pip install openpyxl") as error:
        load_labels("spaq", tmp_path)
    assert "MOS and Image attribute scores.xlsx" in str(error.value)


def test_spaq_xlsx_is_read_when_openpyxl_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("openpyxl")
    table = pd.read_csv(FIXTURES / "spaq" / "MOS and Image attribute scores.csv", dtype=str)
    table["MOS"] = table["MOS"].astype(float)
    annotations = tmp_path / "Annotations"
    annotations.mkdir()
    table.to_excel(annotations / "MOS and Image attribute scores.xlsx", index=False)
    labels = load_labels("spaq", tmp_path)
    assert labels["image_id"].tolist() == ["00007.jpg", "00008.jpg", "00009.jpg"]
    assert labels["mos"].tolist() == [41.5, 73.0, 58.25]


def test_generic_adapter_keeps_extras_and_nested_paths(tmp_path: Path) -> None:
    root = copy_fixture("generic", tmp_path / "data")
    labels = load_labels("generic", root, {"labels": "labels.csv", "image_dir": "imgs"})
    assert labels["image_id"].tolist() == ["a.png", "sub/b.png", "c.jpg"]
    assert labels["path"].iloc[1] == str((root / "imgs" / "sub" / "b.png").absolute())
    assert labels["mos"].iloc[:2].tolist() == [3.5, 1.25]
    assert np.isnan(labels["mos"].iloc[2])
    assert labels["group"].tolist() == ["x", "y", "x"]


def test_generic_adapter_without_mos_column_gives_nan(tmp_path: Path) -> None:
    (tmp_path / "list.csv").write_text("file\none.png\ntwo.png\n")
    labels = load_labels("generic", tmp_path, {"labels": "list.csv", "path_column": "file"})
    assert labels["image_id"].tolist() == ["one.png", "two.png"]
    assert labels["mos"].isna().all()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"labels": "labels.csv", "path_column": "file"}, ["labels.csv", "'file'"]),
        ({"labels": "labels.csv", "mos_column": "score"}, ["labels.csv", "'score'"]),
        ({"labels": "absent.csv"}, ["absent.csv"]),
        ({}, ["'labels'"]),
        ({"labels": "labels.csv", "colour": "red"}, ["'colour'"]),
    ],
)
def test_generic_adapter_errors_name_file_and_column(
    tmp_path: Path, options: dict, expected: list[str]
) -> None:
    copy_fixture("generic", tmp_path)
    with pytest.raises(DatasetError) as error:
        load_labels("generic", tmp_path, options)
    for text in expected:
        assert text in str(error.value)


def test_missing_required_column_names_file_and_column(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("name,prompt,mos\nx.jpg,a cat,3.0\n")
    with pytest.raises(DatasetError) as error:
        load_labels("agiqa3k", tmp_path)
    assert "data.csv" in str(error.value)
    assert "mos_quality" in str(error.value)


def test_unknown_adapter_and_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset adapter 'livec'"):
        load_labels("livec", tmp_path)
    with pytest.raises(DatasetError, match="not a directory"):
        load_labels("agiqa3k", tmp_path / "nowhere")
    assert issubclass(DatasetError, ValueError)


def test_non_numeric_mos_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("image_id,mos\na.png,4.0\nb.png,good\n")
    with pytest.raises(DatasetError, match="good"):
        load_labels("demo", tmp_path)


def test_duplicate_ids_in_label_file(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("path,mos\na.png,1\nb.png,2\na.png,3\n")
    with pytest.raises(DatasetError, match="duplicate image_id") as error:
        load_labels("generic", tmp_path, {"labels": "labels.csv"})
    assert "a.png" in str(error.value)
    assert "b.png" not in str(error.value)


def test_build_manifest_rejects_duplicate_ids(tmp_path: Path) -> None:
    labels = pd.DataFrame(
        {"image_id": ["x.png", "x.png"], "path": [str(tmp_path / "x.png")] * 2, "mos": [1.0, 2.0]}
    )
    write_images(labels.iloc[:1])
    with pytest.raises(DatasetError, match=r"duplicate image_id.*x\.png"):
        build_manifest(labels, progress=False)


def test_build_manifest_reports_every_bad_image_at_once(tmp_path: Path) -> None:
    root = copy_fixture("demo", tmp_path)
    labels = load_labels("demo", root)
    write_images(labels)
    Path(labels["path"].iloc[0]).unlink()  # missing
    Path(labels["path"].iloc[2]).write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # corrupt
    with pytest.raises(DatasetError) as error:
        build_manifest(labels, progress=False)
    message = str(error.value)
    assert "2 of 3" in message
    assert f"toy__pristine.png ({labels['path'].iloc[0]}): file not found" in message
    assert f"toy__noise_2.png ({labels['path'].iloc[2]}): cannot decode image" in message
    assert "toy__blur_1.png" not in message


def test_build_manifest_detects_truncated_jpeg(tmp_path: Path) -> None:
    labels = pd.DataFrame({"image_id": ["t.jpg"], "path": [str(tmp_path / "t.jpg")], "mos": [1.0]})
    write_images(labels)
    content = Path(labels["path"].iloc[0]).read_bytes()
    Path(labels["path"].iloc[0]).write_bytes(content[: len(content) // 2])
    with pytest.raises(DatasetError, match="t.jpg.*cannot decode"):
        build_manifest(labels, progress=False)


def test_prepare_manifest_step_writes_parquet(tmp_path: Path) -> None:
    root = copy_fixture("aigiqa20k", tmp_path / "data")
    write_images(load_labels("aigiqa20k", root))
    out = tmp_path / "results" / "aigiqa20k" / "manifest.parquet"
    prepare_step(manifest=str(out), adapter="aigiqa20k", root=str(root), options={})
    manifest = pd.read_parquet(out)
    assert list(manifest.columns) == [*datasets.MANIFEST_COLUMNS, "prompt"]
    assert len(manifest) == 3
    assert sorted(p.name for p in out.parent.iterdir()) == ["manifest.parquet"]


def test_prepare_manifest_step_accepts_the_demo_rule_inputs(tmp_path: Path) -> None:
    root = copy_fixture("demo", tmp_path / "demo")
    write_images(load_labels("demo", root))
    out = tmp_path / "manifest.parquet"
    prepare_step(
        manifest=str(out),
        adapter="demo",
        root=str(root),
        options={},
        labels=str(root / "labels.csv"),
        threads=2,
    )
    manifest = pd.read_parquet(out)
    assert manifest["image_id"].tolist() == ADAPTER_CASES["demo"][2]
    assert manifest["level"].tolist() == [0, 1, 2]


def test_prepare_manifest_step_leaves_no_file_on_failure(tmp_path: Path) -> None:
    root = copy_fixture("aigiqa20k", tmp_path / "data")  # no images written
    out = tmp_path / "results" / "manifest.parquet"
    with pytest.raises(DatasetError, match="3 of 3"):
        prepare_step(manifest=str(out), adapter="aigiqa20k", root=str(root), options={})
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())


@pytest.mark.realdata
def test_real_agiqa3k_labels() -> None:
    if not (AGIQA3K / "data.csv").is_file():
        pytest.skip(f"real AGIQA-3K data not found at {AGIQA3K}")
    labels = load_labels("agiqa3k", AGIQA3K)
    raw = pd.read_csv(AGIQA3K / "data.csv")
    assert len(labels) == 2982
    assert labels["image_id"].tolist() == raw["name"].tolist()
    np.testing.assert_array_equal(labels["mos"].to_numpy(), raw["mos_quality"].to_numpy())
    assert labels["prompt"].notna().all()
    assert Path(labels["path"].iloc[0]).is_file()
