"""Score images from Python in one line, the way pyiqa users do::

    import leaf

    metric = leaf.create_metric("results/demo/deploy/best.leaf.pt")   # CUDA when available
    metric = leaf.create_metric("results/demo/deploy/best-hf")        # or its model folder
    scores = metric(["a.jpg", "b.png"])      # tensor (2,), on the calibrated MOS scale
    metric.lower_better, metric.score_range, metric.metric_mode   # False, (min, max), "NR"

:func:`create_metric` (alias :func:`load_model`) wraps a deployed student, a ``*.leaf.pt``
artifact (:mod:`leaf.deploy`) or its model folder (:mod:`leaf.model_folder`), both student
modes, in :class:`LeafMetric`, a ``torch.nn.Module`` that
takes an image path, a PIL image, a list of them, or a float tensor in [0, 1] of shape
(N, 3, H, W) and applies the artifact's own preprocessing, so its scores equal ``leaf predict``'s
for the same files. Tensors are taken as 8-bit RGB images (rounded to steps of 1/255) and
preprocessed exactly like decoded files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from leaf.deploy import StudentModel
from leaf.images import to_rgb
from leaf.model_folder import load_student
from leaf.scoring import read_image, score_by_shape

ImageInput = str | Path | Image.Image


def default_device() -> torch.device:
    """CUDA when a GPU is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# Float tensor inputs may leave [0, 1] by this much (rounding upstream), no more.
TENSOR_TOLERANCE = 1e-3


class LeafMetric(nn.Module):
    """A deployed LEAF student as a no-reference IQA metric (pyiqa-like attributes).

    Attributes: ``lower_better`` (False: higher is better), ``metric_mode`` ("NR"),
    ``score_range`` ((min, max) of the MOS it was calibrated on; None for a label-free student,
    which scores on its teacher's scale, or an artifact that does not record it), ``student``
    (the :class:`~leaf.deploy.StudentModel`), ``device``.
    """

    lower_better = False
    metric_mode = "NR"

    def __init__(self, student: StudentModel, device: str | torch.device | None = None):
        super().__init__()
        self.device = torch.device(device) if device is not None else default_device()
        self.student = student.eval().to(self.device)
        self.eval()
        self.transform = student.transform()
        calibration = student.calibration
        mos_range = calibration.get("mos_range") if calibration.get("scale") == "mos" else None
        self.score_range: tuple[float, float] | None = (
            (float(mos_range[0]), float(mos_range[1])) if mos_range else None
        )

    def _inputs(self, images: Any) -> list[torch.Tensor]:
        if torch.is_tensor(images):
            if images.ndim == 3:
                images = images[None]
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(
                    f"expected a float tensor (N, 3, H, W) in [0, 1], got {tuple(images.shape)}"
                )
            if not images.is_floating_point():
                raise TypeError(
                    f"expected a float tensor in [0, 1], got {images.dtype} (divide 8-bit "
                    "pixels by 255 first)"
                )
            low, high = float(images.min()), float(images.max())
            if low < -TENSOR_TOLERANCE or high > 1 + TENSOR_TOLERANCE:
                raise ValueError(
                    f"expected a float tensor in [0, 1], got values in [{low:g}, {high:g}] "
                    "(0-255 pixels? divide by 255; normalised? pass the raw [0, 1] image)"
                )
            pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
            arrays = pixels.permute(0, 2, 3, 1).cpu().numpy()
            return [self.transform(Image.fromarray(np.ascontiguousarray(a))) for a in arrays]
        if isinstance(images, str | Path | Image.Image):
            images = [images]
        if not isinstance(images, Sequence):
            raise TypeError(
                "LeafMetric takes an image path, a PIL image, a list of them or a float tensor "
                f"(N, 3, H, W) in [0, 1], not {type(images).__name__}"
            )
        tensors = []
        for image in images:
            if isinstance(image, Image.Image):
                tensors.append(self.transform(to_rgb(image)))
            elif isinstance(image, str | Path):
                tensors.append(read_image(image, self.transform))
            else:
                raise TypeError(f"not an image path or PIL image: {type(image).__name__}")
        return tensors

    def train(self, mode: bool = True) -> LeafMetric:
        """Stays in eval mode whatever ``mode`` says: a metric, like pyiqa's, must not change
        its BatchNorm statistics or turn dropout on when a surrounding model is trained."""
        return super().train(False)

    def forward(self, images: ImageInput | Sequence[ImageInput] | torch.Tensor) -> torch.Tensor:
        """Scores (N,) float32 on the CPU: on the calibrated MOS scale (``score_range``), or the
        teacher's scale for a label-free student."""
        tensors = self._inputs(images)

        def score(batch: torch.Tensor) -> np.ndarray:
            with torch.inference_mode():
                return self.student(batch.to(self.device)).float().cpu().numpy()

        return torch.from_numpy(score_by_shape(score, tensors))


def create_metric(path: str | Path, device: str | torch.device | None = None) -> LeafMetric:
    """The deployed student at ``path`` (a ``*.leaf.pt`` artifact or a model folder written by
    ``leaf export --format hf``) as a :class:`LeafMetric`, on ``device`` (default: CUDA when
    available, else the CPU). Raises :class:`leaf.deploy.ArtifactError` for anything that is
    not a LEAF student."""
    return LeafMetric(load_student(path), device)


load_model = create_metric
