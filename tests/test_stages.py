"""One step function per student stage: student.mode picks the implementation and settings."""

from __future__ import annotations

import pytest

from leaf.student import stages
from leaf.teacher.factory import teacher_gpus

STUDENT = {
    "head": {"hidden": 8, "dropout": 0.1},
    "weights": "package",
    "full": {"epochs_distill": 1},
    "backbone": "ignored-here",
}


def test_every_stage_and_mode_has_an_importable_implementation():
    for stage in stages.STAGES:
        for mode in stages.STUDENT_MODES:
            assert callable(stages.implementation(stage, mode))


@pytest.mark.parametrize(
    ("stage", "mode", "expected"),
    [
        ("distill", "head", {"head": STUDENT["head"]}),
        ("distill", "full", {"weights": "package", "full": STUDENT["full"], "backbone": "bb"}),
        ("calibrate", "head", {}),
        ("calibrate", "full", {"full": STUDENT["full"]}),
        ("calibrate_cft", "head", {"head": STUDENT["head"]}),
        (
            "calibrate_cft",
            "full",
            {"weights": "package", "full": STUDENT["full"], "backbone": "bb"},
        ),
        ("evaluate", "head", {}),
        ("evaluate", "full", {}),
    ],
)
def test_stage_settings_take_only_what_the_mode_reads(stage, mode, expected):
    assert stages.stage_settings(stage, mode, STUDENT, "bb") == expected


def test_gpus_and_threads_follow_the_mode():
    assert stages.stage_gpus("full") == 1 and stages.stage_gpus("head") == 0
    assert stages.stage_threads("full") == 2 and stages.stage_threads("head") == 1
    with pytest.raises(ValueError, match="student.mode"):
        stages.stage_gpus("gpu")
    with pytest.raises(ValueError, match="stage"):
        stages.implementation("train", "head")


def test_step_hands_named_io_settings_and_threads_to_the_implementation(monkeypatch):
    calls = {}

    def fake(features, model, head, threads):
        calls.update(features=features, model=model, head=head, threads=threads)

    def fake_no_threads(features, model):
        calls.update(no_threads=(features, model))

    monkeypatch.setitem(stages.IMPLEMENTATIONS, ("distill", "head"), "x:y")
    monkeypatch.setattr(stages, "implementation", lambda stage, mode: fake)
    stages.distill_step(
        mode="head", settings={"head": {"hidden": 0}}, threads=3, features="f", model="m"
    )
    assert calls == {"features": "f", "model": "m", "head": {"hidden": 0}, "threads": 3}
    monkeypatch.setattr(stages, "implementation", lambda stage, mode: fake_no_threads)
    stages.evaluate_step(mode="head", settings={}, threads=2, features="f", model="m")
    assert calls["no_threads"] == ("f", "m")


@pytest.mark.parametrize(
    ("section", "gpus"),
    [
        ({"backend": "brisque"}, 0),
        ({"backend": "import", "import": {"path": "x.json"}}, 0),
        ({"backend": "transformers", "transformers": {"device": "cpu"}}, 0),
        ({"backend": "transformers"}, 0),
        ({"backend": "transformers", "transformers": {"device": "cuda"}}, 1),
        ({"backend": "vllm", "vllm": {"model": "m"}}, 1),
        ({"backend": "vllm", "vllm": {"preset": "internvl3_5_8b"}}, 1),
        ({"backend": "vllm", "vllm": {"preset": "qwen3_vl_8b", "tensor_parallel_size": 4}}, 4),
    ],
)
def test_teacher_gpus(section, gpus):
    assert teacher_gpus(section) == gpus


def test_training_stages_write_the_checkpoints_history_as_csv(monkeypatch, tmp_path):
    import pandas as pd
    import torch

    model, history = tmp_path / "calibrated.pt", tmp_path / "calibrated.history.csv"

    def fake(model):
        record = {"epoch": [0, 1, 2], "loss": [0.5, 0.3, 0.4], "select_srcc": [0.1, 0.9, 0.8]}
        torch.save({"stage": "calibrate", "history": record, "chosen_epoch": 1}, model)

    monkeypatch.setattr(stages, "implementation", lambda stage, mode: fake)
    stages.calibrate_step(mode="head", settings={}, model=str(model), history=str(history))
    table = pd.read_csv(history)
    assert table.columns.tolist() == ["stage", "epoch", "loss", "select_srcc", "chosen"]
    assert table["chosen"].tolist() == [False, True, False]
    assert table["stage"].eq("calibrate").all()
