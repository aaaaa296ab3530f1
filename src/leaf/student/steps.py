"""Step functions of the student rules (features, distill, calibrate, evaluate).

Each writes its outputs atomically. Checkpoints are plain dicts of
tensors, numbers, strings and lists, readable with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from leaf.atomic_io import json_write_atomic, torch_save_atomic, write_parquet_atomic
from leaf.metrics import correlation_record
from leaf.student.features import features_step, load_features
from leaf.student.heads import head_checkpoint, head_from_checkpoint
from leaf.student.train import calibrate_head, distill_head, predict

__all__ = ["features_step", "distill_step", "calibrate_step", "evaluate_step"]

log = logging.getLogger(__name__)

DISTILL_FLAGS = ("use_point", "use_pair", "use_omega")


def history_records(history: pd.DataFrame) -> dict[str, list]:
    """A training history as plain Python lists (safe for ``weights_only`` loading)."""
    return history.to_dict(orient="list")


def split_ids(split: str, name: str) -> list[str]:
    """Image ids of split ``name`` ("train"/"test") in ``split.parquet``."""
    table = pd.read_parquet(split, columns=["image_id", "split"])
    return table.loc[table["split"] == name, "image_id"].astype(str).tolist()


def _mos_of(manifest: str, image_ids: list[str]) -> np.ndarray:
    """MOS of ``image_ids`` (in that order) from the manifest; NaN where unknown."""
    table = pd.read_parquet(manifest, columns=["image_id", "mos"])
    mos = table.assign(image_id=table["image_id"].astype(str)).set_index("image_id")["mos"]
    missing = [image_id for image_id in image_ids if image_id not in mos.index]
    if missing:
        raise KeyError(f"{len(missing)} images are not in the manifest (e.g. {missing[:3]})")
    return mos.loc[image_ids].to_numpy(dtype=np.float64)


def load_checkpoint(path: str) -> dict[str, Any]:
    """Read a student checkpoint written by :func:`distill_step` or :func:`calibrate_step`."""
    return torch.load(path, map_location="cpu", weights_only=True)


@dataclass(frozen=True)
class DistillData:
    """Stage-1 training data: the scored train images and the usable teacher pairs, as row
    indices into ``image_ids``."""

    image_ids: list[str]
    scores: np.ndarray
    index_a: np.ndarray
    index_b: np.ndarray
    t_ab: np.ndarray
    omega: np.ndarray


def distill_data(split: str, teacher_points: str, teacher_pairs: str) -> DistillData:
    """The train images with a finite teacher score and the kept pairs between them.

    Train images without a finite teacher score are left out (logged). Pairs touching an image
    that is left out are dropped (an empty pair table is a point-only teacher).
    """
    train_ids = split_ids(split, "train")
    points = pd.read_parquet(teacher_points, columns=["image_id", "score"])
    points = points.assign(image_id=points["image_id"].astype(str)).dropna(subset=["score"])
    scores = points.set_index("image_id")["score"]
    scored = [image_id for image_id in train_ids if image_id in scores.index]
    if len(scored) < len(train_ids):
        log.warning("%d train images have no teacher score: left out", len(train_ids) - len(scored))
    if not scored:
        raise ValueError("no train image has a teacher score")
    row_of = {image_id: row for row, image_id in enumerate(scored)}

    pairs = pd.read_parquet(teacher_pairs, columns=["image_a", "image_b", "t_ab", "omega"])
    pairs = pairs.astype({"image_a": str, "image_b": str})
    usable = pairs["image_a"].isin(row_of) & pairs["image_b"].isin(row_of)
    if not usable.all():
        log.warning(
            "%d teacher pairs touch images outside the scored train set: dropped",
            int((~usable).sum()),
        )
    pairs = pairs[usable]
    log.info("distilling from %d teacher scores and %d pairs", len(scored), len(pairs))
    return DistillData(
        image_ids=scored,
        scores=scores.loc[scored].to_numpy(dtype=np.float32),
        index_a=pairs["image_a"].map(row_of).to_numpy(dtype=np.int64),
        index_b=pairs["image_b"].map(row_of).to_numpy(dtype=np.int64),
        t_ab=pairs["t_ab"].to_numpy(dtype=np.float32),
        omega=pairs["omega"].to_numpy(dtype=np.float32),
    )


def distill_flags(distill: dict) -> dict[str, bool]:
    """The ablation flags use_point/use_pair/use_omega of a ``distill`` config (default on)."""
    return {flag: bool(distill.get(flag, True)) for flag in DISTILL_FLAGS}


def distill_step(
    features: str,
    split: str,
    teacher_points: str,
    teacher_pairs: str,
    model: str,
    seed: int,
    head: dict,
    distill: dict,
    threads: int,
) -> None:
    """Rule ``distill``: stage 1 on the train split, from the teacher's scores and kept pairs
    (see :func:`distill_data`; an empty pair table turns the pair term off). ``distill`` holds
    lambda_dis, epochs, lr, weight_decay, batch_size and optionally the ablation flags
    use_point/use_pair/use_omega.
    """
    torch.set_num_threads(threads)
    table = load_features(features)
    data = distill_data(split, teacher_points, teacher_pairs)
    flags = distill_flags(distill)
    quality_head, history = distill_head(
        table.rows(data.image_ids),
        data.scores,
        data.index_a,
        data.index_b,
        data.t_ab,
        data.omega,
        hidden=int(head["hidden"]),
        dropout=float(head["dropout"]),
        lambda_dis=float(distill["lambda_dis"]),
        epochs=int(distill["epochs"]),
        lr=float(distill["lr"]),
        weight_decay=float(distill["weight_decay"]),
        batch_size=int(distill["batch_size"]),
        seed=int(seed),
        **flags,
    )
    torch_save_atomic(
        {
            "stage": "distill",
            "head": head_checkpoint(quality_head),
            "history": history_records(history),
            "seed": int(seed),
            "backbone": table.backbone,
            "n_images": len(data.image_ids),
            "n_pairs": len(data.index_a),
            "chosen_epoch": int(distill["epochs"]),
            **flags,
        },
        model,
    )


def calibration_subset(
    manifest: str, subsets: str, ratio: float
) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """(fit ids, fit MOS, select ids, select MOS) of the MOS subset of ``ratio`` (float noise in
    ``ratio`` is tolerated); raises if it has no fit image or an image without MOS."""
    roles = pd.read_parquet(subsets, columns=["image_id", "ratio", "role"])
    roles = roles[np.isclose(roles["ratio"].to_numpy(dtype=float), float(ratio))]
    fit_ids = roles.loc[roles["role"] == "fit", "image_id"].astype(str).tolist()
    select_ids = roles.loc[roles["role"] == "select", "image_id"].astype(str).tolist()
    if not fit_ids:
        raise ValueError(f"{subsets} has no 'fit' images for ratio {ratio}")
    fit_mos, select_mos = _mos_of(manifest, fit_ids), _mos_of(manifest, select_ids)
    if not (np.isfinite(fit_mos).all() and np.isfinite(select_mos).all()):
        raise ValueError(f"the MOS subset of ratio {ratio} has images without MOS")
    return fit_ids, fit_mos, select_ids, select_mos


def mos_range(*mos: np.ndarray) -> list[float]:
    """[min, max] of the MOS a student was calibrated on (its deployed ``score_range``)."""
    values = np.concatenate([np.asarray(m, dtype=np.float64) for m in mos])
    return [float(values.min()), float(values.max())]


def calibrate_step(
    features: str,
    manifest: str,
    subsets: str,
    model: str,
    ratio: float,
    seed: int,
    calibration: dict,
    threads: int,
    distilled: str | None = None,
    head: dict | None = None,
) -> None:
    """Rule ``calibrate``: stage 2 on the MOS subset of ``ratio`` (its fit/select roles).

    ``distilled`` is the stage-1 checkpoint to start from; without it a fresh head is built
    from ``head`` ({hidden, dropout}; the "CFT-only" baseline). ``calibration`` holds lambda_cal,
    epochs, lr, weight_decay and batch_size (other keys are ignored).
    """
    torch.set_num_threads(threads)
    table = load_features(features)
    fit_ids, fit_mos, select_ids, select_mos = calibration_subset(manifest, subsets, ratio)

    if distilled is not None:
        head_init = head_from_checkpoint(load_checkpoint(distilled)["head"])
        shape: dict = {}
    elif head is not None:
        head_init, shape = None, {"hidden": int(head["hidden"]), "dropout": float(head["dropout"])}
    else:
        raise ValueError("calibrate_step needs a distilled checkpoint or a head config")
    calibrated, chosen_epoch, history = calibrate_head(
        head_init,
        table.rows(fit_ids),
        fit_mos,
        table.rows(select_ids),
        select_mos,
        lambda_cal=float(calibration["lambda_cal"]),
        epochs=int(calibration["epochs"]),
        lr=float(calibration["lr"]),
        weight_decay=float(calibration["weight_decay"]),
        batch_size=int(calibration["batch_size"]),
        seed=int(seed),
        **shape,
    )
    torch_save_atomic(
        {
            "stage": "calibrate",
            "head": head_checkpoint(calibrated),
            "history": history_records(history),
            "seed": int(seed),
            "ratio": float(ratio),
            "backbone": table.backbone,
            "distilled": distilled is not None,
            "n_fit": len(fit_ids),
            "n_select": len(select_ids),
            "chosen_epoch": int(chosen_epoch),
            "mos_range": mos_range(fit_mos, select_mos),
        },
        model,
    )


def evaluate_step(
    features: str, split: str, manifest: str, model: str, predictions: str, metrics: str
) -> None:
    """Rule ``evaluate``: predictions of a student checkpoint (distilled or calibrated) on the
    test split from the cached features, written by :func:`write_evaluation`."""
    table = load_features(features)
    test_ids = split_ids(split, "test")
    checkpoint = load_checkpoint(model)
    predicted = predict(head_from_checkpoint(checkpoint["head"]), table.rows(test_ids))
    write_evaluation(test_ids, predicted, manifest, checkpoint, predictions, metrics)


def write_evaluation(
    test_ids: list[str],
    predicted: np.ndarray,
    manifest: str,
    checkpoint: dict[str, Any],
    predictions: str,
    metrics: str,
) -> None:
    """Test predictions as Parquet (image_id, pred, mos), and JSON metrics
    (:func:`leaf.metrics.correlation_record`: srcc, plcc (raw Pearson), plcc_logistic (after the
    VQEG 4-parameter logistic fit, null when it did not converge), plcc_logistic_converged,
    constant_predictions (logged as a warning), n (test images with a MOS)), chosen_epoch and
    stage of ``checkpoint``. A distilled student predicts on the teacher's
    scale, so only SRCC and the logistic PLCC are scale-free for it."""
    mos = _mos_of(manifest, test_ids)
    write_parquet_atomic(
        pd.DataFrame({"image_id": test_ids, "pred": predicted.astype(np.float64), "mos": mos}),
        predictions,
    )
    known = np.isfinite(mos)
    record = correlation_record(predicted[known], mos[known])
    if record["constant_predictions"]:
        log.warning(
            "%s: every test prediction is %.6g (a collapsed student): SRCC and PLCC are "
            "undefined (null) and the tables leave this run out of their means",
            metrics,
            float(predicted[known][0]),
        )
    json_write_atomic(
        {
            **record,
            "chosen_epoch": checkpoint.get("chosen_epoch"),
            "stage": checkpoint.get("stage"),
        },
        metrics,
    )
