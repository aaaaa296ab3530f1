"""The numeric precision of end-to-end fine-tuning: device and autocast dtype.

With ``amp``: on CUDA bf16 autocast where supported, else fp16 with a GradScaler; on CPU bf16
autocast where the CPU supports it, else float32. Without ``amp``: float32.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

from leaf.student.features import bf16_autocast_supported

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    """Device and autocast dtype (None: float32) of a run."""

    device: torch.device
    dtype: torch.dtype | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for the forward pass (a no-op in float32)."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled only for float16 (bf16 needs none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)


def choose_precision(amp: bool, device: str | torch.device | None = None) -> Precision:
    """CUDA when available (else CPU); with ``amp``: bf16 autocast on CUDA where supported, else
    fp16; on CPU bf16 where the CPU runs it natively, else float32 (logged)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not amp:
        return Precision(device)
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return Precision(device, torch.bfloat16 if bf16 else torch.float16)
    if bf16_autocast_supported():
        return Precision(device, torch.bfloat16)
    log.info("bf16 autocast is not supported on this CPU: training in float32")
    return Precision(device)
