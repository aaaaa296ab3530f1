"""Frozen-backbone features through ONNX Runtime (CPU, float32).

The backbone with its pooling (:class:`PooledBackbone`) is exported once per extraction with the
TorchScript-based ONNX exporter (``torch.onnx.export(dynamo=False)``: a few seconds; the
``torch.export`` one needs minutes for inputs of any height and width) to an in-memory model
whose batch size, height and width are free, and run by ONNX Runtime's CPU provider, which picks
its kernels by what the CPU has (AVX2, AVX-512). The results are float32 and agree with PyTorch's
float32 eager forward to about 1e-5 relative; :func:`check_against_torch` verifies that on the
first image of every extraction (tolerance :data:`MAX_RELATIVE_DIFFERENCE`).

Needs the ``export`` extra (``onnx`` for the export, ``onnxruntime`` to run it):
:func:`onnxruntime_installed` says whether both are importable, and :class:`OnnxFeatures`
raises :class:`leaf.optional.MissingExtraError` naming the extra when they are not.
Measured on AGIQA-3K at 512 x 512 against PyTorch eager: see bench/speed.md ("Goal 2").
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from collections.abc import Callable

import numpy as np
import torch

from leaf.optional import optional_import

ONNX_OPSET = 18
# Largest max |onnx - torch| / max |torch| over one image's features that counts as the same.
MAX_RELATIVE_DIFFERENCE = 1e-3
# The traced example: small, and of an odd size, so that the first real image (checked against
# PyTorch) has another shape than the traced one and a shape baked into the graph would show.
TRACE_SHAPE = (1, 3, 75, 97)

Pool = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


class EngineMismatchError(RuntimeError):
    """ONNX Runtime's features differ from PyTorch's float32 features beyond the tolerance."""


def onnxruntime_installed() -> bool:
    """True when both ``onnx`` (the export) and ``onnxruntime`` can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


class PooledBackbone(torch.nn.Module):
    """``pool(model, batch)`` (``pool`` None: ``model(batch)``) as float32, one module: what is
    exported. Input (n, 3, H, W) normalised pixels, output (n, d) float32 features."""

    def __init__(self, model: torch.nn.Module, pool: Pool | None):
        super().__init__()
        self.model = model
        self.pool = pool

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        features = self.model(batch) if self.pool is None else self.pool(self.model, batch)
        return features.float()


def export_pooled(model: torch.nn.Module, pool: Pool | None) -> bytes:
    """The ONNX model (bytes, opset :data:`ONNX_OPSET`) of :class:`PooledBackbone` with free
    batch size, height and width, traced on a :data:`TRACE_SHAPE` input."""
    optional_import("onnx", "export", "ONNX Runtime feature extraction")
    buffer = io.BytesIO()
    example = torch.zeros(TRACE_SHAPE)
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporter is deprecated (DeprecationWarning), and tracing warns
        # about Python values computed from shapes (timm's "same" padding), which the exporter
        # keeps as graph operations: both checked by check_against_torch.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            PooledBackbone(model, pool).eval(),
            (example,),
            buffer,
            dynamo=False,
            input_names=["pixels"],
            output_names=["features"],
            dynamic_axes={"pixels": {0: "batch", 2: "height", 3: "width"}},
            opset_version=ONNX_OPSET,
        )
    return buffer.getvalue()


class OnnxFeatures:
    """Batch (n, 3, H, W) of normalised float32 inputs -> (n, d) float32 features, through ONNX
    Runtime (CPU provider, ``threads`` intra-op threads that do not spin while idle, so that a
    decoding thread gets the cores) on the export of ``model`` with ``pool``."""

    def __init__(self, model: torch.nn.Module, pool: Pool | None, threads: int):
        ort = optional_import("onnxruntime", "export", "ONNX Runtime feature extraction")
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            export_pooled(model, pool), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        array = batch.detach().float().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {"pixels": array})[0])


def relative_difference(features: np.ndarray, reference: np.ndarray) -> float:
    """max |features - reference| / max |reference| (0 when both are all zeros)."""
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    difference = float(np.max(np.abs(features - reference))) if reference.size else 0.0
    return difference / scale if scale > 0 else difference


def check_against_torch(
    engine: Callable[[torch.Tensor], torch.Tensor],
    model: torch.nn.Module,
    pool: Pool | None,
    image: torch.Tensor,
) -> float:
    """The :func:`relative_difference` of ``engine``'s features of one (3, H, W) ``image`` from
    PyTorch's float32 eager ones; raises :class:`EngineMismatchError` above
    :data:`MAX_RELATIVE_DIFFERENCE`."""
    batch = image.unsqueeze(0)
    with torch.inference_mode():
        expected = PooledBackbone(model, pool)(batch).numpy()
    difference = relative_difference(engine(batch).numpy(), expected)
    if not difference <= MAX_RELATIVE_DIFFERENCE:
        raise EngineMismatchError(
            f"ONNX Runtime features differ from PyTorch float32 by {difference:.2e} (relative, "
            f"image of shape {tuple(image.shape)}; tolerance {MAX_RELATIVE_DIFFERENCE:g})"
        )
    return difference
