"""A deployed student as a model folder, the Hugging Face Hub's layout::

    best-hf/
      model.safetensors   every weight: backbone.<timm key> and head.<key> tensors
      config.json         what rebuilds the model and feeds it (below)
      README.md           the model card (:mod:`leaf.model_card`)

``config.json`` holds ``format`` ("leaf-student-folder"), ``version`` and
``artifact_version``; ``architecture`` (the timm backbone name); ``backbone`` (``name``,
``weights`` it was built from, ``num_features``, ``pretrained_cfg``: timm's pretrained data
config of the backbone, for reference, and timm's ``timm_hf_hub_id`` and ``timm_licence`` of its
own pretrained weights); ``head`` (``kind`` and ``config``, see
:func:`leaf.student.heads.head_checkpoint`); the artifact's ``preprocess``, ``calibration`` and
``provenance`` sections unchanged (:mod:`leaf.deploy`); and ``weights_file``. So the folder
scores exactly as the ``*.leaf.pt`` it was written from.

:func:`save_model_folder` writes the weights and the config of an artifact;
:func:`load_student` reads either form (a folder or a ``*.leaf.pt`` file) into a
:class:`leaf.deploy.StudentModel`. Reading needs torch, timm and safetensors only: no pickle
is involved (safetensors and JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from leaf.atomic_io import atomic_path, json_write_atomic
from leaf.deploy import (
    ARTIFACT_FORMAT,
    ARTIFACT_VERSION,
    ArtifactError,
    StudentModel,
    load_artifact,
    model_from_artifact,
)
from leaf.student.backbones import preprocess_config

FOLDER_FORMAT = "leaf-student-folder"
FOLDER_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
# Key prefixes of the two parts of the model in model.safetensors.
PARTS = ("backbone", "head")


def is_model_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder holding a ``config.json`` (a model folder candidate)."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def folder_config(artifact: dict[str, Any], student: StudentModel) -> dict[str, Any]:
    """The ``config.json`` content of the artifact dict ``artifact`` (``student`` is the model
    it builds, for the backbone's timm data config)."""
    spec = artifact["backbone"]
    pretrained = preprocess_config(student.backbone)
    timm_cfg = getattr(student.backbone, "pretrained_cfg", None) or {}
    return {
        "format": FOLDER_FORMAT,
        "version": FOLDER_VERSION,
        "artifact_version": artifact["version"],
        "architecture": spec["name"],
        "backbone": {
            "name": spec["name"],
            "weights": spec["weights"],
            "num_features": int(spec["num_features"]),
            "pretrained_cfg": {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in pretrained.items()
            },
            "timm_hf_hub_id": timm_cfg.get("hf_hub_id"),
            "timm_licence": timm_cfg.get("license"),
        },
        "head": {key: value for key, value in artifact["head"].items() if key != "state_dict"},
        "preprocess": artifact["preprocess"],
        "calibration": artifact["calibration"],
        "provenance": artifact["provenance"],
        "weights_file": WEIGHTS_FILE,
    }


def folder_tensors(artifact: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every weight of ``artifact`` under ``backbone.<key>`` / ``head.<key>`` (contiguous
    copies, as safetensors stores them)."""
    sources = {
        "backbone": artifact["backbone"]["state_dict"],
        "head": artifact["head"]["state_dict"],
    }
    return {
        f"{part}.{key}": tensor.detach().contiguous().clone()
        for part, state in sources.items()
        for key, tensor in state.items()
    }


def save_model_folder(artifact: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``model.safetensors`` and ``config.json`` of the artifact dict ``artifact``
    (:func:`leaf.deploy.read_artifact`) into ``out_dir`` (created; files replaced atomically).
    Returns {"weights": path, "config": path}."""
    from safetensors.torch import save

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    student = model_from_artifact(artifact)
    paths = {"weights": out_dir / WEIGHTS_FILE, "config": out_dir / CONFIG_FILE}
    with atomic_path(paths["weights"]) as tmp:  # bytes: the file gets the usual permissions
        tmp.write_bytes(save(folder_tensors(artifact), metadata={"format": "pt"}))
    json_write_atomic(folder_config(artifact, student), paths["config"])
    return paths


def read_model_folder(folder: str | Path) -> dict[str, Any]:
    """The artifact dict (:mod:`leaf.deploy`'s layout) stored in the model folder ``folder``;
    raises :class:`leaf.deploy.ArtifactError` when it is not a LEAF model folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ArtifactError(f"{folder} has no readable {CONFIG_FILE}: {err}") from err
    if not isinstance(config, dict) or config.get("format") != FOLDER_FORMAT:
        raise ArtifactError(f"{folder}/{CONFIG_FILE} does not describe a LEAF student")
    if (
        config.get("version") != FOLDER_VERSION
        or config.get("artifact_version") != ARTIFACT_VERSION
    ):
        raise ArtifactError(
            f"{folder} is a version {config.get('version')} model folder (artifact version "
            f"{config.get('artifact_version')}); this LEAF reads version {FOLDER_VERSION} "
            f"(artifact version {ARTIFACT_VERSION})"
        )
    weights = folder / config.get("weights_file", WEIGHTS_FILE)
    if not weights.is_file():
        raise ArtifactError(f"model weights not found: {weights}")
    tensors = load_file(str(weights))
    states: dict[str, dict[str, torch.Tensor]] = {part: {} for part in PARTS}
    for key, tensor in tensors.items():
        part, _, name = key.partition(".")
        if part not in states or not name:
            raise ArtifactError(f"{weights}: unexpected tensor {key!r}")
        states[part][name] = tensor
    spec = config["backbone"]
    return {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "backbone": {
            "name": spec["name"],
            "weights": spec["weights"],
            "num_features": spec["num_features"],
            "state_dict": states["backbone"],
        },
        "head": {**config["head"], "state_dict": states["head"]},
        "preprocess": config["preprocess"],
        "calibration": config["calibration"],
        "provenance": config["provenance"],
    }


def load_model_folder(folder: str | Path) -> StudentModel:
    """The :class:`~leaf.deploy.StudentModel` of the model folder ``folder``, in eval mode."""
    return model_from_artifact(read_model_folder(folder))


def load_student(path: str | Path) -> StudentModel:
    """The deployed student at ``path``: a model folder (:func:`load_model_folder`) or a
    ``*.leaf.pt`` artifact (:func:`leaf.deploy.load_artifact`). Raises
    :class:`leaf.deploy.ArtifactError` for anything else."""
    if Path(path).is_dir():
        if not is_model_folder(path):
            raise ArtifactError(f"{path} is a folder without {CONFIG_FILE}: not a model folder")
        return load_model_folder(path)
    return load_artifact(path)
