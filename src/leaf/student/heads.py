"""Trainable quality heads over frozen backbone features, and their checkpoints.

:class:`QualityHead` (stage 1) standardises its input with mean/std buffers computed from the
train features, so a saved head is self-contained. :class:`CalibratedHead` (stage 2) wraps a
quality head with an affine output layer and the MOS mean/std of the calibration subset, so its
predictions come out on the dataset's native MOS scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

STD_FLOOR = 1e-6


def as_tensor(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``values`` as a float32 tensor (arrays are copied: pandas may hand out read-only ones)."""
    if torch.is_tensor(values):
        return values.float()
    return torch.from_numpy(np.array(values, dtype=np.float32))


class QualityHead(nn.Module):
    """Standardise features, then a linear layer (``hidden == 0``) or an MLP
    (Linear-GELU-Dropout-Linear) down to one quality score per image."""

    def __init__(self, in_dim: int, hidden: int = 0, dropout: float = 0.0):
        super().__init__()
        if in_dim <= 0 or hidden < 0 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"bad head shape: in_dim={in_dim}, hidden={hidden}, dropout={dropout}")
        self.in_dim, self.hidden, self.dropout = int(in_dim), int(hidden), float(dropout)
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        if hidden == 0:
            self.output = nn.Linear(in_dim, 1)
            self.body: nn.Module = self.output
        else:
            self.output = nn.Linear(hidden, 1)
            self.body = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), self.output
            )

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (for checkpoints)."""
        return {"in_dim": self.in_dim, "hidden": self.hidden, "dropout": self.dropout}

    @torch.no_grad()
    def fit_standardisation(self, features: np.ndarray | torch.Tensor) -> None:
        """Set the input mean/std buffers from ``features`` (n, in_dim) (std floored)."""
        features = as_tensor(features)
        self.feature_mean.copy_(features.mean(dim=0))
        std = features.std(dim=0, unbiased=False) if len(features) > 1 else torch.ones(1)
        self.feature_std.copy_(std.clamp_min(STD_FLOOR))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Scores (batch,) of features (batch, in_dim)."""
        return self.body((features - self.feature_mean) / self.feature_std).squeeze(-1)


class CalibratedHead(nn.Module):
    """``mos = (a * base(x) + b) * mos_std + mos_mean``: a quality head, an affine output layer
    (trained in standardised MOS units) and the MOS scale of the calibration subset."""

    def __init__(self, base: QualityHead):
        super().__init__()
        self.base = base
        self.affine = nn.Linear(1, 1)
        self.register_buffer("mos_mean", torch.zeros(()))
        self.register_buffer("mos_std", torch.ones(()))

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments of the wrapped head (for checkpoints)."""
        return self.base.config

    @torch.no_grad()
    def set_mos_scale(self, mean: float, std: float) -> None:
        """Store the MOS mean/std that map standardised outputs back to the MOS scale (a
        degenerate std, e.g. of a single image, is replaced by 1)."""
        self.mos_mean.fill_(float(mean))
        self.mos_std.fill_(float(std) if float(std) > STD_FLOOR else 1.0)

    def standardise_mos(self, mos: torch.Tensor) -> torch.Tensor:
        """MOS -> standardised units (the training target)."""
        return (mos - self.mos_mean) / self.mos_std

    def forward_standardised(self, features: torch.Tensor) -> torch.Tensor:
        """Predictions (batch,) in standardised MOS units."""
        return self.affine(self.base(features).unsqueeze(-1)).squeeze(-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Predictions (batch,) on the native MOS scale."""
        return self.forward_standardised(features) * self.mos_std + self.mos_mean


def head_checkpoint(model: QualityHead | CalibratedHead) -> dict[str, Any]:
    """A torch.save-able description of ``model``: its kind, config and state dict."""
    kind = "calibrated" if isinstance(model, CalibratedHead) else "quality"
    return {"kind": kind, "config": model.config, "state_dict": model.state_dict()}


def head_from_checkpoint(checkpoint: dict[str, Any]) -> QualityHead | CalibratedHead:
    """Rebuild the head described by :func:`head_checkpoint`, in eval mode."""
    base = QualityHead(**checkpoint["config"])
    model: QualityHead | CalibratedHead
    if checkpoint["kind"] == "calibrated":
        model = CalibratedHead(base)
    elif checkpoint["kind"] == "quality":
        model = base
    else:
        raise ValueError(f"unknown head kind {checkpoint['kind']!r}")
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
