"""The workflow steps of end-to-end fine-tuning (``student.mode: full``): rules ``distill``,
``calibrate``, ``calibrate_cft`` and ``evaluate`` as :mod:`leaf.student.stages` runs them.

The CFT-only baseline (calibration fine-tuning alone, :func:`full_cft_step`) runs the same stage 2
as :func:`full_calibrate_step`, started from the pretrained backbone and a fresh head
(:func:`~leaf.student.finetune_model.fresh_student`) instead of the stage-1 model. Every step
writes its checkpoint (:func:`~leaf.student.finetune_model.full_checkpoint`) or evaluation
atomically.
"""

from __future__ import annotations

from typing import Any

import torch

from leaf.atomic_io import torch_save_atomic
from leaf.student.backbones import create_backbone
from leaf.student.finetune import calibrate_full, cpu_copy, distill_full, embed_cached, on_device
from leaf.student.finetune_inputs import open_cached_inputs, preprocess_of
from leaf.student.finetune_model import (
    FullStudent,
    fresh_student,
    full_checkpoint,
    load_full_model,
)
from leaf.student.precision import choose_precision
from leaf.student.steps import (
    calibration_subset,
    distill_data,
    distill_flags,
    history_records,
    mos_range,
    split_ids,
    write_evaluation,
)
from leaf.student.train import deterministic, predict


def _training_settings(full: dict, seed: int) -> dict[str, Any]:
    """The optimiser, batching, seed and precision arguments shared by both full-mode stages."""
    return {
        "lr": float(full["lr"]),
        "weight_decay": float(full["weight_decay"]),
        "batch_size": int(full["batch_size"]),
        "seed": int(seed),
        "precision": choose_precision(bool(full["amp"])),
    }


def full_distill_step(
    image_cache: str,
    cache_index: str,
    split: str,
    teacher_points: str,
    teacher_pairs: str,
    model: str,
    seed: int,
    backbone: str,
    weights: str,
    distill: dict,
    full: dict,
    threads: int = 1,
) -> None:
    """Rule ``distill_full``: stage 1 of the full mode on the scored train images (see
    :func:`~leaf.student.steps.distill_data`). ``distill`` gives lambda_dis and the ablation
    flags, ``full`` the optimiser and input settings (epochs_distill, lr, weight_decay,
    batch_size, amp, channels_last, crop, resize, cache_short_side)."""
    torch.set_num_threads(threads)
    network = create_backbone(backbone, weights)
    preprocess = preprocess_of(network, full)
    inputs = open_cached_inputs(image_cache, cache_index, preprocess, full)
    data = distill_data(split, teacher_points, teacher_pairs)
    flags = distill_flags(distill)
    student, history = distill_full(
        network,
        inputs,
        inputs.cache.rows(data.image_ids),
        data.scores,
        data.index_a,
        data.index_b,
        data.t_ab,
        data.omega,
        lambda_dis=float(distill["lambda_dis"]),
        epochs=int(full["epochs_distill"]),
        **_training_settings(full, seed),
        **flags,
    )
    _save(
        model,
        student,
        "distill",
        history,
        full,
        {"seed": seed, "backbone": backbone, "weights": weights, "preprocess": preprocess},
        n_images=len(data.image_ids),
        n_pairs=len(data.index_a),
        chosen_epoch=int(full["epochs_distill"]),
        **flags,
    )


def _calibrate_and_save(
    student: FullStudent,
    preprocess: dict[str, Any],
    backbone: str,
    weights: str,
    distilled: bool,
    *,
    image_cache: str,
    cache_index: str,
    manifest: str,
    subsets: str,
    model: str,
    ratio: float,
    seed: int,
    calibration: dict,
    full: dict,
) -> None:
    """Stage 2 (:func:`~leaf.student.finetune.calibrate_full`) of ``student`` on the MOS subset
    of ``ratio``, saved as a calibrate checkpoint at ``model``; shared by the distilled student
    and the CFT-only baseline, so that both run exactly the same stage 2."""
    inputs = open_cached_inputs(image_cache, cache_index, preprocess, full)
    fit_ids, fit_mos, select_ids, select_mos = calibration_subset(manifest, subsets, ratio)
    calibrated, chosen_epoch, history = calibrate_full(
        student,
        inputs,
        inputs.cache.rows(fit_ids),
        fit_mos,
        inputs.cache.rows(select_ids),
        select_mos,
        lambda_cal=float(calibration["lambda_cal"]),
        epochs=int(full["epochs_calibrate"]),
        **_training_settings(full, seed),
    )
    _save(
        model,
        calibrated,
        "calibrate",
        history,
        full,
        {"seed": seed, "backbone": backbone, "weights": weights, "preprocess": preprocess},
        ratio=float(ratio),
        distilled=distilled,
        n_fit=len(fit_ids),
        n_select=len(select_ids),
        chosen_epoch=int(chosen_epoch),
        mos_range=mos_range(fit_mos, select_mos),
    )


def _save(
    path: str,
    student: FullStudent,
    stage: str,
    history: Any,
    full: dict,
    run: dict[str, Any],
    **entries: Any,
) -> None:
    """Write a fine-tuned ``stage`` checkpoint: the student, its history, the run (seed,
    backbone, weights, preprocess), the ``full`` settings and the stage's own ``entries``."""
    torch_save_atomic(
        full_checkpoint(
            student,
            stage=stage,
            history=history_records(history),
            seed=int(run["seed"]),
            backbone=run["backbone"],
            weights=run["weights"],
            preprocess=run["preprocess"],
            full=dict(full),
            **entries,
        ),
        path,
    )


def full_calibrate_step(
    image_cache: str,
    cache_index: str,
    manifest: str,
    subsets: str,
    distilled: str,
    model: str,
    ratio: float,
    seed: int,
    calibration: dict,
    full: dict,
    threads: int = 1,
) -> None:
    """Rule ``calibrate_full``: stage 2 of the full mode on the MOS subset of ``ratio``, from
    the stage-1 checkpoint ``distilled``. ``calibration`` gives lambda_cal, ``full`` the
    optimiser settings (epochs_calibrate, lr, weight_decay, batch_size, amp, channels_last);
    the input settings are the stage-1 checkpoint's."""
    torch.set_num_threads(threads)
    student, stage1 = load_full_model(distilled)
    _calibrate_and_save(
        student,
        stage1["preprocess"],
        stage1["backbone"],
        stage1["weights"],
        distilled=True,
        image_cache=image_cache,
        cache_index=cache_index,
        manifest=manifest,
        subsets=subsets,
        model=model,
        ratio=ratio,
        seed=seed,
        calibration=calibration,
        full=full,
    )


def full_cft_step(
    image_cache: str,
    cache_index: str,
    manifest: str,
    subsets: str,
    model: str,
    ratio: float,
    seed: int,
    backbone: str,
    weights: str,
    calibration: dict,
    full: dict,
    threads: int = 1,
) -> None:
    """Rule ``calibrate_cft`` of the full mode, the CFT-only baseline: stage 2 alone, exactly as
    :func:`full_calibrate_step` runs it, but from the pretrained ``backbone`` (``weights``, e.g.
    ImageNet) and a fresh one-output head
    (:func:`~leaf.student.finetune_model.fresh_student`, initialised under ``seed``) instead of a
    distilled student. The input settings come from ``full``, as in stage 1. The checkpoint
    (``distilled: False``) is evaluated by :func:`full_evaluate_step` like any other."""
    torch.set_num_threads(threads)
    network = create_backbone(backbone, weights)
    with deterministic(int(seed)):
        student = fresh_student(network)
    _calibrate_and_save(
        student,
        preprocess_of(network, full),
        backbone,
        weights,
        distilled=False,
        image_cache=image_cache,
        cache_index=cache_index,
        manifest=manifest,
        subsets=subsets,
        model=model,
        ratio=ratio,
        seed=seed,
        calibration=calibration,
        full=full,
    )


def full_evaluate_step(
    image_cache: str,
    cache_index: str,
    split: str,
    manifest: str,
    model: str,
    predictions: str,
    metrics: str,
    threads: int = 1,
) -> None:
    """Rule ``evaluate_full``: test-split predictions of a full-mode checkpoint (evaluation
    crops of the image cache, the checkpoint's input and precision settings), written as in
    head mode by :func:`~leaf.student.steps.write_evaluation`."""
    torch.set_num_threads(threads)
    student, checkpoint = load_full_model(model)
    full = checkpoint["full"]
    inputs = open_cached_inputs(image_cache, cache_index, checkpoint["preprocess"], full)
    precision = choose_precision(bool(full["amp"]))
    test_ids = split_ids(split, "test")
    features = embed_cached(
        on_device(student, inputs, precision.device),
        inputs,
        inputs.cache.rows(test_ids),
        int(full["batch_size"]),
        precision,
    )
    predicted = predict(cpu_copy(student.head), features)
    write_evaluation(test_ids, predicted, manifest, checkpoint, predictions, metrics)
