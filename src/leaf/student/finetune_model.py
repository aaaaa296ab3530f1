"""The end-to-end fine-tuned student (``student.mode: full``) and its checkpoint format.

:class:`FullStudent` is a timm backbone plus a one-output linear
:class:`~leaf.student.heads.QualityHead` (stage 1) or a :class:`~leaf.student.heads.CalibratedHead`
(stage 2), trained end to end by :mod:`leaf.student.finetune`.

Checkpoints (:func:`full_checkpoint`) have the same keys as head mode's plus ``mode: "full"``,
``state_dict`` (the fine-tuned backbone, timm key names, no classifier) and ``preprocess``.
Because ``state_dict`` is a top-level entry, a full-mode checkpoint is itself a valid ``weights``
path for :func:`~leaf.student.backbones.create_backbone`, which is how :func:`load_full_model`
loads it again.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from leaf.student.backbones import create_backbone
from leaf.student.heads import (
    CalibratedHead,
    QualityHead,
    head_checkpoint,
    head_from_checkpoint,
)
from leaf.student.steps import load_checkpoint


class FullStudent(nn.Module):
    """Backbone + quality head: normalised images (batch, 3, H, W) -> scores (batch,)."""

    def __init__(self, backbone: nn.Module, head: QualityHead | CalibratedHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (batch, d) in float32."""
        return self.backbone(images).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Scores (batch,): teacher scale for a quality head, MOS scale for a calibrated one."""
        return self.head(self.features(images))

    def forward_standardised(self, images: torch.Tensor) -> torch.Tensor:
        """Predictions (batch,) in standardised MOS units (calibrated head only)."""
        return self.head.forward_standardised(self.features(images))


def fresh_student(backbone: nn.Module) -> FullStudent:
    """``backbone`` + a fresh one-output linear :class:`~leaf.student.heads.QualityHead` (torch's
    default initialisation, from the global RNG: seed it for a reproducible head)."""
    return FullStudent(backbone, QualityHead(int(backbone.num_features)))


def full_checkpoint(model: FullStudent, **entries: Any) -> dict[str, Any]:
    """A full-mode checkpoint: ``entries`` plus mode, head and the backbone's state dict."""
    state = {
        key: value.detach().cpu().clone() for key, value in model.backbone.state_dict().items()
    }
    return {**entries, "mode": "full", "head": head_checkpoint(model.head), "state_dict": state}


def load_full_model(path: str) -> tuple[FullStudent, dict[str, Any]]:
    """The :class:`FullStudent` saved at ``path`` (in eval mode) and its checkpoint dict."""
    checkpoint = load_checkpoint(path)
    if checkpoint.get("mode") != "full":
        raise ValueError(f"{path} is not a full-mode checkpoint (student.mode: full)")
    backbone = create_backbone(checkpoint["backbone"], path)  # reads its "state_dict"
    return FullStudent(backbone, head_from_checkpoint(checkpoint["head"])).eval(), checkpoint
