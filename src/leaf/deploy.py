"""Self-contained student artifacts: backbone + head weights, preprocessing, calibration and
provenance in one ``torch.save`` file (``*.leaf.pt``), loadable without the run's config.

An artifact is a plain dict (tensors, numbers, strings, lists; ``torch.load(...,
weights_only=True)`` reads it)::

    format: "leaf-student"        version: 1
    backbone: {name, weights, num_features, state_dict}
    head: leaf.student.heads.head_checkpoint(...)
    preprocess: {image_size, resize, interpolation, mean, std, crop, pooling}
                (full mode adds mode: "full", cache_short_side, cache_interpolation)
    calibration: {scale: "mos" | "teacher", mos_mean, mos_std}
    provenance: {dataset, mode, teacher_hash, teacher_backend, teacher {name, backend, model},
                 ratio, seed, config_hash, config, stage, chosen_epoch, select_srcc,
                 select_mse, n_fit, n_select, versions, selection (best only), ...}

:func:`load_artifact` rebuilds a :class:`StudentModel`: a module mapping a batch of preprocessed
images (the output of :meth:`StudentModel.transform`) to one score per image, on the calibrated
MOS scale (``calibration.scale == "mos"``) or, for a label-free distilled student, on the
teacher's level-value scale.

Both student modes deploy. A head-mode student (frozen backbone + trained head) keeps the
pretrained backbone and the feature extraction's preprocessing (:mod:`leaf.student.features`). A
full-mode student (:mod:`leaf.student.finetune`, backbone fine-tuned end to end) takes its
backbone weights from its checkpoint and the evaluation input of its training
(:class:`leaf.student.eval_inputs.EvalTransform`).

Workflow steps: :func:`deploy_step` (rule ``deploy``: one artifact per seed and ratio) and
:func:`deploy_best_step` (rule ``deploy_best``: among the runs of one MOS ratio, the one with
the best SRCC on the *select part* of its MOS subset, never a test score; docs/design.md defines
the parts).
"""

from __future__ import annotations

import csv
import logging
import math
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from leaf.atomic_io import atomic_path, torch_save_atomic
from leaf.hashing import canonical_hash, plain
from leaf.metrics import finite_or_none
from leaf.student.backbones import create_backbone, timm_module
from leaf.student.eval_inputs import EvalTransform, artifact_preprocess
from leaf.student.features import (
    POOLING_MODES,
    build_transform,
    eval_settings,
    feature_width,
    pool_batch,
    pooling_transform,
    variable_size,
)
from leaf.student.heads import CalibratedHead, head_from_checkpoint
from leaf.student.stages import STUDENT_MODES

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = "leaf-student"
ARTIFACT_VERSION = 1


class ArtifactError(ValueError):
    """A file is not a LEAF student artifact, or its parts do not fit together."""


class StudentModel(nn.Module):
    """Backbone + head: preprocessed images (batch, 3, H, W) -> scores (batch,).

    ``preprocess``, ``calibration`` and ``provenance`` are the artifact's plain-dict sections;
    :meth:`transform` turns a PIL image into the model's input.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        backbone_name: str,
        preprocess: dict[str, Any],
        calibration: dict[str, Any],
        provenance: dict[str, Any],
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.backbone_name = backbone_name
        self.preprocess = dict(preprocess)
        self.calibration = dict(calibration)
        self.provenance = dict(provenance)

    @property
    def native(self) -> bool:
        """True when the student takes inputs of any H and W (every pooling but the centre
        crop: native size, or the short side resized without a crop)."""
        return variable_size(self.preprocess.get("pooling", "center_crop"))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (batch, d) float32 of preprocessed images (batch, 3, H, W),
        as :func:`leaf.student.features.embed_images` computes them (``pool_batch``)."""
        return pool_batch(self.backbone, images, self.preprocess.get("pooling", "center_crop"))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Scores (batch,) float32 of preprocessed images (batch, 3, H, W)."""
        return self.head(self.features(images))

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """PIL image -> the model's input tensor (3, image_size, image_size)."""
        return transform_of(self.preprocess)

    @property
    def input_size(self) -> tuple[int | str, ...]:
        """(channels, height, width) of one preprocessed image ("height"/"width" when native)."""
        if self.native:
            return (3, "height", "width")
        size = int(self.preprocess["image_size"])
        return (3, size, size)


def transform_of(preprocess: dict[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """The evaluation transform described by an artifact's ``preprocess`` section. A full-mode
    one also has ``read(path)``, which decodes a file exactly as the image cache does (used by
    :func:`leaf.scoring.load_batch`)."""
    if preprocess.get("mode", "head") == "full":
        return EvalTransform.from_artifact(preprocess)
    pooling = preprocess.get("pooling", "center_crop")
    if pooling not in POOLING_MODES:
        raise ArtifactError(f"pooling {pooling!r} is not supported by this LEAF version")
    if pooling != "center_crop":
        return pooling_transform(pooling, preprocess, int(preprocess["image_size"]))
    return build_transform(preprocess, int(preprocess["image_size"]), int(preprocess["resize"]))


def chosen_epoch_select_metrics(checkpoint: dict[str, Any]) -> dict[str, float | None]:
    """``{"select_srcc", "select_mse"}``: the select-part SRCC and MSE (standardised MOS units) of
    a calibrate checkpoint at its chosen epoch, read from its training history (not recomputed);
    both None for a distilled checkpoint or when the history lacks the chosen epoch."""
    history = checkpoint.get("history") or {}
    epochs = list(history.get("epoch", []))
    chosen = checkpoint.get("chosen_epoch")
    if checkpoint.get("stage") != "calibrate" or chosen not in epochs:
        return {"select_srcc": None, "select_mse": None}
    row = epochs.index(chosen)

    def number(name: str) -> float | None:
        return finite_or_none(history.get(name, [None] * len(epochs))[row])

    return {"select_srcc": number("select_srcc"), "select_mse": number("select_mse")}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), "torch": str(torch.__version__)}
    for package in ("leaf-iqa", "timm"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def build_artifact(
    head: dict[str, Any],
    backbone: str,
    weights: str | nn.Module,
    image_size: int | None = None,
    provenance: dict[str, Any] | None = None,
    resize: int | None = None,
    pooling: str = "center_crop",
    preprocess: dict[str, Any] | None = None,
    crop_pct: float | None = None,
    mos_range: Sequence[float] | None = None,
) -> dict[str, Any]:
    """A self-contained artifact of ``head`` (a :func:`~leaf.student.heads.head_checkpoint`
    dict) on top of timm ``backbone``.

    ``weights`` is the backbone's pretrained weights ("package", "timm" or a checkpoint path, see
    :func:`~leaf.student.backbones.create_backbone`; a full-mode checkpoint holds its fine-tuned
    backbone) or an already built backbone module. The preprocessing is the one the features
    were extracted with (:func:`leaf.student.features.eval_settings` of ``image_size`` and
    ``crop_pct``, None: the backbone's own; ``resize`` and ``pooling``) unless a
    ``preprocess`` section is given (a full-mode student's:
    :func:`leaf.student.eval_inputs.artifact_preprocess`). ``mos_range`` is [min, max] of the MOS
    the head was calibrated on (its ``score_range``; None when unknown).
    """
    if pooling not in POOLING_MODES:
        raise ArtifactError(f"pooling {pooling!r} is not supported (supported: {POOLING_MODES})")
    model = weights if isinstance(weights, nn.Module) else create_backbone(backbone, weights)
    head_module = head_from_checkpoint(head)
    num_features = int(model.num_features)
    width = feature_width(model, pooling)
    if head["config"]["in_dim"] != width:
        raise ArtifactError(
            f"the head takes {head['config']['in_dim']} features but {backbone} with {pooling} "
            f"pooling gives {width}"
        )
    if preprocess is None:
        settings = eval_settings(model, image_size, crop_pct)
        preprocess = {
            "image_size": settings["image_size"],
            "resize": int(resize or settings["resize"]),
            "interpolation": settings["interpolation"],
            "mean": settings["mean"],
            "std": settings["std"],
            "crop": "center" if pooling == "center_crop" else "none",
            "pooling": pooling,
        }
    elif preprocess.get("pooling", "center_crop") != pooling:
        raise ArtifactError(f"preprocess pooling {preprocess.get('pooling')!r} is not {pooling!r}")
    if isinstance(head_module, CalibratedHead):
        calibration = {
            "scale": "mos",
            "mos_mean": float(head_module.mos_mean),
            "mos_std": float(head_module.mos_std),
            "mos_range": [float(v) for v in mos_range] if mos_range is not None else None,
        }
    else:
        calibration = {"scale": "teacher", "mos_mean": None, "mos_std": None, "mos_range": None}
    return {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "backbone": {
            "name": backbone,
            "weights": weights if isinstance(weights, str) else "module",
            "num_features": num_features,
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        },
        "head": head,
        "preprocess": plain(preprocess),
        "calibration": calibration,
        "provenance": {**plain(provenance or {}), "versions": _versions()},
    }


def read_artifact(path: str | Path) -> dict[str, Any]:
    """The artifact dict stored at ``path`` (checked for format and version)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model artifact not found: {path}")
    try:
        artifact = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ArtifactError(f"{path} is not a readable LEAF student artifact: {err}") from err
    if not isinstance(artifact, dict) or artifact.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(
            f"{path} is not a LEAF student artifact (a head checkpoint? build one with the "
            "workflow's deploy rule or leaf.deploy.build_artifact)"
        )
    if artifact.get("version") != ARTIFACT_VERSION:
        raise ArtifactError(
            f"{path} has artifact version {artifact.get('version')}; this LEAF reads "
            f"version {ARTIFACT_VERSION}"
        )
    return artifact


def model_from_artifact(artifact: dict[str, Any]) -> StudentModel:
    """Rebuild the :class:`StudentModel` of an artifact dict, in eval mode (no weights are
    downloaded: the backbone is created empty and filled from the artifact)."""
    spec = artifact["backbone"]
    backbone = timm_module().create_model(spec["name"], pretrained=False, num_classes=0)
    backbone.load_state_dict(spec["state_dict"], strict=True)
    return StudentModel(
        backbone,
        head_from_checkpoint(artifact["head"]),
        spec["name"],
        artifact["preprocess"],
        artifact["calibration"],
        artifact["provenance"],
    ).eval()


def load_artifact(path: str | Path) -> StudentModel:
    """The :class:`StudentModel` saved at ``path`` by :func:`save_artifact`."""
    return model_from_artifact(read_artifact(path))


def save_artifact(artifact: dict[str, Any], path: str | Path) -> None:
    """Write ``artifact`` to ``path`` atomically."""
    torch_save_atomic(artifact, path)


def deploy_step(
    model: str,
    artifact: str,
    dataset: str,
    backbone: str,
    weights: str,
    image_size: int | None,
    seed: int,
    ratio: float,
    teacher_hash: str,
    teacher_backend: str,
    run_config: dict[str, Any],
    pooling: str = "center_crop",
    crop_pct: float | None = None,
    threads: int = 1,
    teacher: dict[str, Any] | None = None,
) -> None:
    """Rule ``deploy``: the artifact of one student checkpoint (calibrated, or distilled for
    ratio 0) with its provenance. ``run_config`` is the part of the run's config that defines the
    student (stored, and hashed into ``config_hash`` by :func:`canonical_hash`); ``teacher``
    (name, backend, model: :attr:`leaf.experiments.Teacher.description`) is stored as
    ``provenance["teacher"]`` for the model card (:mod:`leaf.model_card`).

    A head-mode checkpoint holds the head only: the backbone is ``weights`` and the preprocessing
    comes from ``image_size`` and ``pooling``. A full-mode checkpoint (``mode: "full"``) holds
    its fine-tuned backbone and its input settings, which are used instead (``weights``,
    ``image_size`` and ``pooling`` are then ignored)."""
    torch.set_num_threads(threads)
    checkpoint = torch.load(model, map_location="cpu", weights_only=True)
    mode = checkpoint.get("mode", "head")
    if mode not in STUDENT_MODES:
        raise ArtifactError(
            f"{model} is a {mode!r}-mode student; artifacts are built for {STUDENT_MODES}"
        )
    if checkpoint.get("backbone") and checkpoint["backbone"] != backbone:
        raise ArtifactError(
            f"{model} was trained on {checkpoint['backbone']} features, not {backbone}"
        )
    provenance = {
        "dataset": dataset,
        "backbone": backbone,
        "mode": mode,
        "teacher_hash": teacher_hash,
        "teacher_backend": teacher_backend,
        "teacher": dict(teacher) if teacher else None,
        "ratio": float(ratio),
        "seed": int(seed),
        "config_hash": canonical_hash(run_config),
        "config": run_config,
        "stage": checkpoint.get("stage"),
        "chosen_epoch": checkpoint.get("chosen_epoch"),
        **chosen_epoch_select_metrics(checkpoint),
        **{key: checkpoint[key] for key in ("n_fit", "n_select", "n_images") if key in checkpoint},
        "checkpoint": Path(model).name,
    }
    if mode == "full":  # the fine-tuned backbone is read from the checkpoint itself
        built = build_artifact(
            checkpoint["head"],
            backbone,
            model,
            provenance=provenance,
            preprocess=artifact_preprocess(checkpoint["preprocess"]),
            mos_range=checkpoint.get("mos_range"),
        )
    else:
        built = build_artifact(
            checkpoint["head"],
            backbone,
            weights,
            image_size,
            provenance,
            pooling=pooling,
            crop_pct=crop_pct,
            mos_range=checkpoint.get("mos_range"),
        )
    save_artifact(built, artifact)
    log.info(
        "wrote %s (%s, %s mode, %s scale)",
        artifact,
        backbone,
        mode,
        built["calibration"]["scale"],
    )


SELECTION_CRITERION = (
    "max select_srcc (held-out select part of the MOS subset), then min select_mse, among the "
    "runs of one MOS ratio; test scores are not used"
)
SELECTION_COLUMNS = (
    "artifact",
    "seed",
    "ratio",
    "select_srcc",
    "select_mse",
    "n_select",
    "chosen",
)


def _selection_key(provenance: dict[str, Any]) -> tuple[float, float]:
    """Higher select SRCC first, then lower select MSE (missing values rank last)."""
    srcc = provenance.get("select_srcc")
    mse = provenance.get("select_mse")
    return (
        -math.inf if srcc is None else float(srcc),
        -math.inf if mse is None else -float(mse),
    )


def at_ratio(provenance: dict[str, Any], ratio: float) -> bool:
    """True for a calibrated run (stage ``calibrate``) at MOS ratio ``ratio`` (> 0)."""
    return provenance.get("stage") == "calibrate" and math.isclose(
        float(provenance.get("ratio", 0)), float(ratio)
    )


def pick_best(candidates: Sequence[dict[str, Any]], ratio: float) -> int:
    """Index of the best candidate provenance among the calibrated runs at MOS ratio ``ratio``,
    by its select-part SRCC (``select_srcc``; ties to the lower ``select_mse``, then to the
    earlier candidate).

    Only one ratio is compared: runs at different ratios have select parts of different sizes
    (a 10 % run's SRCC may rest on 5 images, a 30 % run's on 15), so their select SRCCs are not
    like for like. Candidates at other ratios, distilled ones and ones without a select-part
    SRCC are passed over; test scores are never looked at. Raises :class:`ArtifactError` when
    none qualifies."""
    if not float(ratio) > 0:
        raise ArtifactError(f"the deploy ratio must be > 0 (a calibrated run), not {ratio}")
    eligible = [
        index
        for index, provenance in enumerate(candidates)
        if at_ratio(provenance, ratio) and provenance.get("select_srcc") is not None
    ]
    if not eligible:
        raise ArtifactError(
            f"no calibrated candidate at MOS ratio {ratio:g} has a select-part SRCC to choose by"
        )
    return max(eligible, key=lambda index: (_selection_key(candidates[index]), -index))


def selection_record(
    names: Sequence[str], provenances: Sequence[dict[str, Any]], ratio: float, best: int
) -> dict[str, Any]:
    """What :func:`deploy_best_step` stores as ``provenance["selection"]``: the criterion, the
    MOS ratio, the chosen artifact and one row per run compared (the calibrated candidates at
    ``ratio``; columns :data:`SELECTION_COLUMNS`: artifact name, seed, ratio, select SRCC,
    select MSE in standardised MOS units, number of select images, chosen)."""
    rows = [
        {
            "artifact": name,
            "seed": provenance.get("seed"),
            "ratio": provenance.get("ratio"),
            "select_srcc": provenance.get("select_srcc"),
            "select_mse": provenance.get("select_mse"),
            "n_select": provenance.get("n_select"),
            "chosen": index == best,
        }
        for index, (name, provenance) in enumerate(zip(names, provenances, strict=True))
        if at_ratio(provenance, ratio)
    ]
    return {
        "criterion": SELECTION_CRITERION,
        "ratio": float(ratio),
        "chosen": names[best],
        "candidates": rows,
    }


def write_selection_csv(selection: dict[str, Any], path: str | Path) -> None:
    """The compared runs of a :func:`selection_record` as a CSV table (columns
    :data:`SELECTION_COLUMNS`, empty cells for missing values), written atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SELECTION_COLUMNS)
        writer.writeheader()
        for row in selection["candidates"]:
            writer.writerow(
                {key: "" if row[key] is None else row[key] for key in SELECTION_COLUMNS}
            )


def deploy_best_step(
    candidates: Sequence[str], artifact: str, ratio: float, selection: str | None = None
) -> None:
    """Rule ``deploy_best``: copy the candidate artifact chosen by :func:`pick_best` among the
    runs at MOS ratio ``ratio`` to ``artifact``, recording the selection
    (:func:`selection_record`) in its provenance and, when ``selection`` is given, as a CSV
    table there (:func:`write_selection_csv`; the workflow report shows it)."""
    artifacts = [read_artifact(path) for path in candidates]
    provenances = [item["provenance"] for item in artifacts]
    best = pick_best(provenances, ratio)
    names = [Path(path).name for path in candidates]
    skipped = [name for name, p in zip(names, provenances, strict=True) if not at_ratio(p, ratio)]
    if skipped:
        log.warning("not compared (not a calibrated run at ratio %g): %s", ratio, skipped)
    record = selection_record(names, provenances, ratio, best)
    chosen = artifacts[best]
    chosen["provenance"]["selection"] = record
    save_artifact(chosen, artifact)
    if selection is not None:
        write_selection_csv(record, selection)
    log.info(
        "best of %d runs at MOS ratio %g: %s (select SRCC %.4f on %s select images)",
        len(record["candidates"]),
        ratio,
        candidates[best],
        provenances[best]["select_srcc"],
        provenances[best].get("n_select", "?"),
    )
