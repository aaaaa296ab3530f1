"""Student artifacts (leaf.deploy) and `leaf predict` (leaf.predict)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage import data

from leaf.cli import main
from leaf.deploy import (
    ArtifactError,
    build_artifact,
    chosen_epoch_select_metrics,
    load_artifact,
    pick_best,
    save_artifact,
)
from leaf.predict import errors_path, predict_images
from leaf.student.backbones import create_backbone
from leaf.student.features import (
    POOLING_MODES,
    bf16_autocast_supported,
    embed_images,
    feature_width,
)
from leaf.student.heads import CalibratedHead, QualityHead, head_checkpoint

LITE0 = "tf_efficientnet_lite0"
IMAGE_SIZE = 64  # small: fast tests
PROVENANCE = {
    "dataset": "demo",
    "backbone": LITE0,
    "teacher_hash": "0123456789ab",
    "teacher_backend": "brisque",
    "ratio": 0.1,
    "seed": 3,
    "config_hash": "feedfacecafe",
    "stage": "calibrate",
}


def tiny_head(in_dim: int, seed: int = 0) -> dict:
    """A random calibrated head checkpoint with a wide MOS scale (scores spread out)."""
    torch.manual_seed(seed)
    head = CalibratedHead(QualityHead(in_dim, hidden=8))
    head.set_mos_scale(50.0, 20.0)
    with torch.no_grad():
        head.affine.weight.fill_(3.0)
    return head_checkpoint(head.eval())


def tiny_artifact(
    path: Path, backbone: torch.nn.Module, pooling: str = "center_crop", **provenance
) -> Path:
    """Save an artifact of a random head on ``backbone`` (lite0 packaged weights) at ``path``."""
    in_dim = feature_width(backbone, pooling)
    artifact = build_artifact(
        tiny_head(in_dim),
        LITE0,
        backbone,
        image_size=IMAGE_SIZE,
        provenance={**PROVENANCE, **provenance},
        pooling=pooling,
    )
    save_artifact(artifact, path)
    return path


@pytest.fixture(scope="module")
def backbone():
    return create_backbone(LITE0, "package")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, backbone) -> Path:
    return tiny_artifact(tmp_path_factory.mktemp("model") / "tiny.leaf.pt", backbone)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Four small photos (two sizes, one in a subfolder), a corrupt and a truncated JPEG, and a
    non-image file."""
    folder = tmp_path_factory.mktemp("images")
    (folder / "sub").mkdir()
    photos = {
        "a.png": data.chelsea(),
        "b.jpg": data.coffee(),
        "sub/c.png": data.astronaut(),
        "d.png": data.camera(),  # greyscale: converted to RGB
    }
    for index, (name, photo) in enumerate(photos.items()):
        Image.fromarray(photo).resize((96, 72) if index % 2 else (80, 80)).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    whole = (folder / "b.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "notes.txt").write_text("not an image")
    return folder


GOOD = ["a.png", "b.jpg", "d.png", "sub/c.png"]


def reference_scores(model_path: Path, folder: Path, names: list[str]) -> np.ndarray:
    """Scores of images one by one through the loaded model (no batching, no file output)."""
    model = load_artifact(model_path)
    transform = model.transform()
    with torch.inference_mode():
        return np.array(
            [float(model(transform(Image.open(folder / n).convert("RGB"))[None])) for n in names]
        )


def test_predict_folder_reports_corrupt_file_and_writes_the_others(
    artifact, image_folder, tmp_path, capsys
):
    output = tmp_path / "scores.parquet"
    code = main(
        ["predict", "--model", str(artifact), str(image_folder), "-o", str(output)]
        + ["--batch-size", "2", "--no-progress"]
    )
    assert code == 0
    table = pd.read_parquet(output)
    assert [Path(p).relative_to(image_folder).as_posix() for p in table["path"]] == GOOD
    np.testing.assert_allclose(
        table["score"], reference_scores(artifact, image_folder, GOOD), atol=1e-4
    )
    assert table["score"].std() > 0.1  # the images really get different scores
    for column in ("dataset", "teacher_hash", "teacher_backend", "ratio", "seed", "config_hash"):
        assert (table[column] == PROVENANCE[column]).all(), column

    errors = pd.read_csv(errors_path(output))
    assert [Path(p).name for p in errors["path"]] == ["broken.jpg", "cut.jpg"]
    assert errors["error"].str.contains("Error").all()
    stderr = capsys.readouterr().err
    assert "scored 4 images" in stderr and "skipped 2 unreadable" in stderr
    assert "broken.jpg" in stderr and "cut.jpg" in stderr


def test_predict_csv_in_csv_out_and_glob(artifact, image_folder, tmp_path):
    listing = image_folder / "list.csv"
    listing.write_text("path,comment\nsub/c.png,x\nbroken.jpg,y\na.png,z\n")  # relative paths
    out_csv = tmp_path / "scores.csv"
    summary = predict_images(artifact, listing, out_csv, batch_size=8, progress=False)
    assert summary.scored == 2 and [Path(p).name for p, _ in summary.errors] == ["broken.jpg"]
    table = pd.read_csv(out_csv)
    assert list(table.columns[:2]) == ["path", "score"]
    assert [Path(p).name for p in table["path"]] == ["c.png", "a.png"]
    np.testing.assert_allclose(
        table["score"], reference_scores(artifact, image_folder, ["sub/c.png", "a.png"]), atol=1e-4
    )

    bare = tmp_path / "bare.csv"  # no header: the first row is a path too
    bare.write_text(f"{image_folder / 'a.png'}\n{image_folder / 'd.png'}\n")
    summary = predict_images(artifact, bare, tmp_path / "bare.parquet", progress=False)
    assert summary.scored == 2

    # A headerless list whose first row is a missing image (a typo): data, reported as an
    # error, not silently taken for a header (a field-tested case).
    typo = tmp_path / "typo.csv"
    typo.write_text(f"typo_missing.jpg\n{image_folder / 'a.png'}\n{image_folder / 'd.png'}\n")
    summary = predict_images(artifact, typo, tmp_path / "typo.parquet", progress=False)
    assert summary.scored == 2
    assert [Path(p).name for p, _ in summary.errors] == ["typo_missing.jpg"]
    # A real header without a `path` column (first cell not an image name) is still a header.
    named = tmp_path / "named.csv"
    named.write_text(f"file,note\n{image_folder / 'a.png'},x\n")
    summary = predict_images(artifact, named, tmp_path / "named.parquet", progress=False)
    assert summary.scored == 1 and not summary.errors

    out_glob = tmp_path / "glob.parquet"
    summary = predict_images(artifact, str(image_folder / "*.png"), out_glob, progress=False)
    assert summary.scored == 2 and not summary.errors
    assert not errors_path(out_glob).exists()  # no errors: no error listing


def test_predict_with_nothing_readable_fails(artifact, image_folder, tmp_path, capsys):
    output = tmp_path / "none.parquet"
    code = main(
        ["predict", "--model", str(artifact), str(image_folder / "broken.jpg"), "-o", str(output)]
    )
    assert code == 1 and "skipped 1" in capsys.readouterr().err
    assert pd.read_parquet(output).empty


@pytest.mark.skipif(not bf16_autocast_supported(), reason="CPU without native bf16")
def test_bf16_scores_are_close_to_fp32(artifact, image_folder, tmp_path):
    fp32 = predict_images(artifact, image_folder, tmp_path / "a.parquet", progress=False)
    bf16 = predict_images(artifact, image_folder, tmp_path / "b.parquet", bf16=True, progress=False)
    assert bf16.backend == "pytorch bf16" and fp32.backend == "pytorch fp32"
    a, b = pd.read_parquet(fp32.output)["score"], pd.read_parquet(bf16.output)["score"]
    assert not np.array_equal(a, b)  # really ran in bf16
    rounded = torch.tensor(b.to_numpy()).bfloat16().double().numpy()
    assert not np.array_equal(b.to_numpy(), rounded)  # the head ran in fp32: not bf16-rounded
    assert (a.rank() == b.rank()).all()  # the random head amplifies bf16 feature error: loose
    assert (a - b).abs().max() < 0.1 * (a.max() - a.min())


@pytest.mark.parametrize("pooling", POOLING_MODES)
def test_artifact_scores_match_the_feature_path_of_training(
    pooling, backbone, image_folder, tmp_path
):
    """Artifact = cached features (same preprocessing and pooling, fp32) + the trained head."""
    path = tiny_artifact(tmp_path / f"{pooling}.leaf.pt", backbone, pooling=pooling)
    paths = [image_folder / name for name in GOOD]
    features = embed_images(
        backbone, paths, IMAGE_SIZE, batch_size=4, amp=False, progress=False, pooling=pooling
    )
    model = load_artifact(path)
    with torch.inference_mode():
        expected = model.head(torch.from_numpy(features)).numpy()
    summary = predict_images(path, image_folder, tmp_path / "s.parquet", progress=False)
    scores = pd.read_parquet(summary.output)["score"].to_numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-4)


def test_artifact_loads_in_a_fresh_process_without_any_config(artifact, tmp_path):
    batch = torch.linspace(-1, 1, 2 * 3 * IMAGE_SIZE * IMAGE_SIZE).reshape(2, 3, IMAGE_SIZE, -1)
    with torch.inference_mode():
        expected = load_artifact(artifact)(batch).numpy()
    script = (
        "import sys, json, torch\n"
        "from leaf.deploy import load_artifact\n"
        "m = load_artifact(sys.argv[1])\n"
        "b = torch.linspace(-1, 1, 2 * 3 * 64 * 64).reshape(2, 3, 64, -1)\n"
        "with torch.inference_mode():\n"
        "    s = m(b).tolist()\n"
        "print(json.dumps({'scores': s, 'provenance': m.provenance, 'pre': m.preprocess}))\n"
    )
    empty = tmp_path / "elsewhere"  # no config/, no results/: nothing of the run around
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", script, str(artifact)],
        cwd=empty,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(loaded["scores"], expected, atol=1e-5)
    assert loaded["provenance"]["config_hash"] == PROVENANCE["config_hash"]
    assert loaded["pre"]["image_size"] == IMAGE_SIZE and loaded["pre"]["resize"] == 73


def test_a_head_checkpoint_is_not_an_artifact(tmp_path):
    path = tmp_path / "head.pt"
    torch.save({"head": tiny_head(4)}, path)
    with pytest.raises(ArtifactError, match="not a LEAF student artifact"):
        load_artifact(path)


def test_build_artifact_rejects_a_head_of_the_wrong_width(backbone):
    with pytest.raises(ArtifactError, match="takes 7 features"):
        build_artifact(tiny_head(7), LITE0, backbone, IMAGE_SIZE)


def test_select_metrics_are_read_at_the_chosen_epoch():
    checkpoint = {
        "stage": "calibrate",
        "chosen_epoch": 2,
        "history": {
            "epoch": [0, 1, 2, 3],
            "select_srcc": [0.1, 0.5, 0.7, 0.6],
            "select_mse": [1.0, 0.6, 0.4, 0.5],
        },
    }
    assert chosen_epoch_select_metrics(checkpoint) == {"select_srcc": 0.7, "select_mse": 0.4}
    distilled = {"stage": "distill", "chosen_epoch": 3}
    assert chosen_epoch_select_metrics(distilled)["select_srcc"] is None


def test_best_is_chosen_by_select_part_srcc_never_test():
    candidates = [
        {"stage": "calibrate", "ratio": 0.1, "seed": 0, "select_srcc": 0.60, "select_mse": 0.2,
         "test_srcc": 0.99},
        {"stage": "calibrate", "ratio": 0.3, "seed": 0, "select_srcc": 0.80, "select_mse": 0.5},
        {"stage": "calibrate", "ratio": 0.3, "seed": 1, "select_srcc": 0.80, "select_mse": 0.3},
        {"stage": "distill", "ratio": 0.0, "seed": 0, "select_srcc": None},
    ]  # fmt: skip
    assert pick_best(candidates, 0.3) == 2  # best SRCC, tie broken by the lower MSE
    with pytest.raises(ArtifactError, match="no calibrated candidate"):
        pick_best(candidates[3:], 0.3)


def test_leaf_version_is_the_installed_package_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"leaf {version('leaf-iqa')}"
