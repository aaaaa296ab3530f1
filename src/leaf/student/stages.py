"""The student stages as the workflow runs them: one step function per stage, in either mode.

Each stage (``distill``, ``calibrate``, ``calibrate_cft``, ``evaluate``) is one Snakemake rule,
whatever ``student.mode`` says. The mode only decides what the stage reads and which
implementation runs it:

* ``head``: a small head over cached frozen-backbone features (:mod:`leaf.student.steps`); the
  rule reads ``features``;
* ``full``: the backbone fine-tuned end to end (the paper's protocol) from the decoded-image
  cache (:mod:`leaf.student.finetune_steps`); the rule reads ``image_cache`` and ``cache_index``.

A rule passes ``mode`` and ``settings`` (what :func:`stage_settings` picks from the ``student``
config section for that mode) next to its named inputs, outputs and params; the step function
here hands them to the implementation. :func:`stage_gpus` says how many GPUs such a job needs:
one for every job that trains or evaluates a fine-tuned backbone, none for a head.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from leaf.workflow_io import resolve

STUDENT_MODES = ("head", "full")
STAGES = ("distill", "calibrate", "calibrate_cft", "evaluate")

# (stage, mode) -> "module:function" of the implementation, imported only when it runs.
IMPLEMENTATIONS: dict[tuple[str, str], str] = {
    ("distill", "head"): "leaf.student.steps:distill_step",
    ("distill", "full"): "leaf.student.finetune_steps:full_distill_step",
    ("calibrate", "head"): "leaf.student.steps:calibrate_step",
    ("calibrate", "full"): "leaf.student.finetune_steps:full_calibrate_step",
    ("calibrate_cft", "head"): "leaf.student.steps:calibrate_step",
    ("calibrate_cft", "full"): "leaf.student.finetune_steps:full_cft_step",
    ("evaluate", "head"): "leaf.student.steps:evaluate_step",
    ("evaluate", "full"): "leaf.student.finetune_steps:full_evaluate_step",
}

# Keys of the `student` section each (stage, mode) reads (besides the rule's own params).
_SETTINGS: dict[tuple[str, str], tuple[str, ...]] = {
    ("distill", "head"): ("head",),
    ("distill", "full"): ("weights", "full"),
    ("calibrate", "head"): (),
    ("calibrate", "full"): ("full",),
    ("calibrate_cft", "head"): ("head",),
    ("calibrate_cft", "full"): ("weights", "full"),
    ("evaluate", "head"): (),
    ("evaluate", "full"): (),
}
# Stages that build their network from the pretrained backbone named in the path.
_NEEDS_BACKBONE = {("distill", "full"), ("calibrate_cft", "full")}


def _check_mode(mode: str) -> None:
    if mode not in STUDENT_MODES:
        raise ValueError(f"unknown student.mode {mode!r}; choose one of {STUDENT_MODES}")


def _check(stage: str, mode: str) -> None:
    _check_mode(mode)
    if stage not in STAGES:
        raise ValueError(f"unknown student stage {stage!r}; choose one of {STAGES}")


def implementation(stage: str, mode: str) -> Callable[..., Any]:
    """The step function that runs ``stage`` in ``mode`` (imported on first use)."""
    _check(stage, mode)
    return resolve(IMPLEMENTATIONS[(stage, mode)])


def stage_settings(stage: str, mode: str, student: dict, backbone: str) -> dict[str, Any]:
    """The settings ``stage`` reads in ``mode``: entries of the ``student`` config section
    (``head`` for a head, ``weights`` and ``full`` for fine-tuning) and, where the stage builds
    a pretrained network, the ``backbone`` name of the run. Only these are rule params, so a
    change of the other mode's settings reruns nothing."""
    _check(stage, mode)
    settings = {key: student[key] for key in _SETTINGS[(stage, mode)]}
    if (stage, mode) in _NEEDS_BACKBONE:
        settings["backbone"] = backbone
    return settings


def stage_gpus(mode: str) -> int:
    """GPUs one student job asks for: 1 in ``full`` mode (the backbone is trained or run end to
    end), 0 in ``head`` mode (a small head on cached features)."""
    _check_mode(mode)
    return 1 if mode == "full" else 0


def stage_threads(mode: str) -> int:
    """CPU threads of one student job: 2 for fine-tuning (data loading beside the network),
    1 for a head (too small to gain from more)."""
    _check_mode(mode)
    return 2 if mode == "full" else 1


def light_job(kwargs: dict[str, Any]) -> bool:
    """Whether a student job may run in the warm worker (:mod:`leaf.warm_worker`): head mode
    (seconds of work on cached features, where imports cost more than the work); full mode
    fine-tunes a backbone in a process of its own."""
    return kwargs["mode"] == "head"


def write_history(model: str, history: str) -> None:
    """The per-epoch training history stored in checkpoint ``model`` as CSV ``history``: one row
    per epoch with the implementation's columns (loss, teacher_srcc, select_srcc, ...; see
    :mod:`leaf.student.train` and :mod:`leaf.student.finetune`) and ``chosen`` (the epoch the
    checkpoint kept)."""
    import pandas as pd
    import torch

    from leaf.atomic_io import atomic_path

    checkpoint = torch.load(model, map_location="cpu", weights_only=True, mmap=True)
    table = pd.DataFrame(checkpoint["history"])
    if "epoch" in table and "chosen_epoch" in checkpoint:
        table["chosen"] = table["epoch"] == int(checkpoint["chosen_epoch"])
    table.insert(0, "stage", checkpoint.get("stage", ""))
    with atomic_path(history) as tmp:
        table.to_csv(tmp, index=False)


def _run(stage: str, mode: str, settings: dict, threads: int, named: dict) -> Any:
    function = implementation(stage, mode)
    history = named.pop("history", None)
    kwargs = {**named, **settings}
    if "threads" in inspect.signature(function).parameters:
        kwargs["threads"] = threads
    result = function(**kwargs)
    if history is not None:
        write_history(named["model"], history)
    return result


def distill_step(mode: str, settings: dict, threads: int = 1, **named: Any) -> Any:
    """Rule ``distill`` (stage 1): :func:`leaf.student.steps.distill_step` (head) or
    :func:`leaf.student.finetune_steps.full_distill_step` (full) with the rule's named I/O and
    params."""
    return _run("distill", mode, settings, threads, named)


def calibrate_step(mode: str, settings: dict, threads: int = 1, **named: Any) -> Any:
    """Rule ``calibrate`` (stage 2 from the distilled student): see :func:`distill_step`."""
    return _run("calibrate", mode, settings, threads, named)


def calibrate_cft_step(mode: str, settings: dict, threads: int = 1, **named: Any) -> Any:
    """Rule ``calibrate_cft``: the CFT-only baseline (calibration fine-tuning alone, stage 2
    without stage 1, from a fresh head or the ImageNet backbone): see :func:`distill_step`."""
    return _run("calibrate_cft", mode, settings, threads, named)


def evaluate_step(mode: str, settings: dict, threads: int = 1, **named: Any) -> Any:
    """Rules ``evaluate`` and ``evaluate_cft``: test-split predictions and metrics of a student
    checkpoint: see :func:`distill_step`."""
    return _run("evaluate", mode, settings, threads, named)
