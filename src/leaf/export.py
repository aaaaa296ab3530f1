"""``leaf export``: a student artifact as TorchScript and ONNX, checked against PyTorch.

:func:`export_model` writes, for an artifact ``<name>.leaf.pt``, into ``out_dir``:

* ``<name>.torchscript.pt``: the traced and frozen model (``torch.jit.load`` it; no LEAF or timm
  needed);
* ``<name>.onnx``: the ONNX model (``torch.onnx.export(dynamo=True)``, dynamic batch size, and
  dynamic height and width for the native-size poolings), input ``images`` (batch, 3, S, S)
  float32, output ``scores`` (batch,) float32; the artifact's preprocessing, calibration and
  provenance are stored as JSON in its ``metadata_props`` (``leaf.preprocess``,
  ``leaf.calibration``, ``leaf.provenance``, and ``leaf.input``: the input convention);
* ``<name>.export.json``: the same metadata, the file names and the numerical check.

Both exported models take **RGB in [0, 1]** (``pixels / 255``) after the resize and crop recorded
in ``leaf.preprocess``: the normalisation with its ``mean``/``std`` is part of the exported graph
(:class:`PixelInputModel`), so ONNX users only resize, crop and scale (the recipe:
:func:`leaf.deploy.transform_of`, docs/predict.md).

Both exported models are reloaded from disk (ONNX Runtime, CPU provider) and must give the
PyTorch model's scores on a batch of images within ``tolerance`` (``|Δ| <= tolerance *
max(1, |score|)``: absolute for scores up to 1, relative above); otherwise the exported files are
removed and :class:`ExportMismatchError` is raised.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from leaf.atomic_io import json_write_atomic
from leaf.deploy import StudentModel
from leaf.model_folder import load_student
from leaf.optional import optional_import
from leaf.scoring import (
    INPUT_CONVENTION,
    METADATA_KEYS,
    chunked,
    iter_image_paths,
    load_batch,
    onnx_scorer,
    unit_range,
)

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-4
CHECK_IMAGES = 6
TRACE_BATCH = 2
ONNX_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "images", "scores"


class PixelInputModel(nn.Module):
    """``student`` behind its input normalisation: RGB in [0, 1] (batch, 3, H, W), resized and
    cropped as ``student.preprocess`` records, -> scores (batch,). What the exports contain."""

    def __init__(self, student: StudentModel):
        super().__init__()
        self.student = student
        for name in ("mean", "std"):
            value = torch.tensor(student.preprocess[name], dtype=torch.float32).view(1, 3, 1, 1)
            self.register_buffer(name, value)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Scores (batch,) float32 of RGB images in [0, 1] (batch, 3, H, W)."""
        return self.student((images - self.mean) / self.std)


class ExportMismatchError(RuntimeError):
    """An exported model does not reproduce the PyTorch scores within the tolerance."""


@dataclass
class ExportReport:
    """Files written by :func:`export_model` and the largest score deviations found."""

    torchscript: str
    onnx: str
    metadata: str
    n_check_images: int
    tolerance: float
    max_abs_diff_torchscript: float
    max_abs_diff_onnx: float


def artifact_stem(model: str | Path) -> str:
    """``best`` for ``best.leaf.pt`` (``x`` for ``x.pt``)."""
    name = Path(model).name
    for suffix in (".leaf.pt", ".pt"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def synthetic_images(
    count: int, seed: int = 0, size: tuple[int, int] | None = None
) -> list[Image.Image]:
    """``count`` reproducible RGB test images (gradients plus noise), of varied sizes or all
    ``size`` (width, height)."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        width, height = size or (260 - 19 * index, 200 + 37 * index)
        ramp = np.linspace(0, 255, width)[None, :, None] * rng.uniform(0.2, 1.0, size=3)
        noise = rng.normal(0, 10 + 8 * index, size=(height, width, 3))
        pixels = np.clip(ramp + noise + rng.uniform(0, 60), 0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels, "RGB"))
    return images


def check_batches(
    student: StudentModel, images: str | Path | None, count: int
) -> list[torch.Tensor]:
    """The preprocessed batches the exports are checked on: the first ``count`` readable images
    of ``images`` (folder, CSV or glob), or :func:`synthetic_images`. Native-resolution students
    get one batch per image size (synthetic: two odd sizes, to exercise the dynamic height and
    width); centre-crop students one batch."""
    transform = student.transform()
    if images is None:
        sizes = [(261, 199), (183, 231)] if student.native else [None]
        share = max(1, count // len(sizes))
        tensors = [
            transform(image)
            for index, size in enumerate(sizes)
            for image in synthetic_images(share, seed=index, size=size)
        ]
    else:
        tensors = load_batch(next(chunked(iter_image_paths(images), count), []), transform).tensors
        if not tensors:
            raise ValueError(f"no readable image in {images} to check the export on")
    by_shape: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for tensor in tensors:
        by_shape.setdefault(tuple(tensor.shape), []).append(tensor)
    return [torch.stack(group) for group in by_shape.values()]


def scores_differ(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per-image deviation ``|other - reference| / max(1, |reference|)``."""
    reference = np.asarray(reference, np.float64)
    return np.abs(np.asarray(other, np.float64) - reference) / np.maximum(1.0, np.abs(reference))


def _export_onnx(student: StudentModel, example: torch.Tensor, path: Path) -> None:
    """Export ``student`` (:class:`PixelInputModel`: inputs in [0, 1]) to ONNX with a dynamic
    batch size and the LEAF metadata; ``example`` is a batch of such inputs."""
    onnx = optional_import("onnx", "export", "the ONNX export")
    optional_import("onnxscript", "export", "the ONNX export")

    dims = {0: torch.export.Dim("batch", min=1, max=65536)}
    if student.native:  # any image size (slow to export: symbolic shapes through the backbone)
        dims[2] = torch.export.Dim("height", min=32, max=16384)
        dims[3] = torch.export.Dim("width", min=32, max=16384)
    program = torch.onnx.export(
        PixelInputModel(student).eval(),
        (example,),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes={"images": dims},
        opset_version=ONNX_OPSET,
        dynamo=True,
        verbose=False,
    )
    program.save(str(path))
    proto = onnx.load(str(path))
    for key in METADATA_KEYS:
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"leaf.{key}", json.dumps(getattr(student, key), sort_keys=True)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "leaf.input", json.dumps(INPUT_CONVENTION, sort_keys=True)
    proto.producer_name = "leaf"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def verify_exports(
    student: StudentModel,
    batches: list[torch.Tensor],
    torchscript: str | Path,
    onnx: str | Path,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, float]:
    """Max |score difference| of the saved TorchScript and ONNX (ONNX Runtime, CPU) models
    against ``student`` on ``batches`` (preprocessed, normalised: the exports get them in
    [0, 1], :func:`leaf.scoring.unit_range`); raises :class:`ExportMismatchError` when one
    exceeds ``tolerance`` (relative above 1, see :func:`scores_differ`)."""
    scripted, onnx_score = torch.jit.load(str(torchscript), map_location="cpu"), onnx_scorer(onnx)
    pixels = [unit_range(batch, student.preprocess) for batch in batches]
    with torch.inference_mode():
        reference = np.concatenate([student.eval()(batch).numpy() for batch in batches])
        scores = {"torchscript": np.concatenate([scripted(batch).numpy() for batch in pixels])}
    scores["onnx"] = np.concatenate([onnx_score(batch) for batch in batches])
    deviations = {
        name: float(scores_differ(reference, value).max()) for name, value in scores.items()
    }
    failed = {name: value for name, value in deviations.items() if not value <= tolerance}
    if failed:
        raise ExportMismatchError(
            f"exported models differ from PyTorch beyond {tolerance:g} on {len(reference)} images: "
            + ", ".join(f"{name} max deviation {value:.3g}" for name, value in failed.items())
        )
    return {name: float(np.abs(value - reference).max()) for name, value in scores.items()}


def export_model(
    model: str | Path,
    out_dir: str | Path,
    images: str | Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    n_check: int = CHECK_IMAGES,
) -> ExportReport:
    """Export the artifact ``model`` to TorchScript and ONNX in ``out_dir`` and check both
    against PyTorch on ``n_check`` images (see the module docstring); returns the report."""
    student = load_student(model).eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = artifact_stem(model)
    paths = {
        "torchscript": out_dir / f"{stem}.torchscript.pt",
        "onnx": out_dir / f"{stem}.onnx",
        "metadata": out_dir / f"{stem}.export.json",
    }
    batches = check_batches(student, images, n_check)
    example = unit_range(batches[0][:TRACE_BATCH], student.preprocess)
    with torch.no_grad():
        traced = torch.jit.trace(PixelInputModel(student).eval(), example, check_trace=False)
        traced = torch.jit.freeze(traced)
    torch.jit.save(traced, str(paths["torchscript"]))
    _export_onnx(student, example, paths["onnx"])

    try:
        differences = verify_exports(
            student, batches, paths["torchscript"], paths["onnx"], tolerance
        )
    except ExportMismatchError as err:
        for path in paths.values():
            path.unlink(missing_ok=True)
        raise ExportMismatchError(f"{err} (exported files removed)") from None
    report = ExportReport(
        torchscript=paths["torchscript"].name,
        onnx=paths["onnx"].name,
        metadata=paths["metadata"].name,
        n_check_images=sum(len(batch) for batch in batches),
        tolerance=tolerance,
        max_abs_diff_torchscript=differences["torchscript"],
        max_abs_diff_onnx=differences["onnx"],
    )
    json_write_atomic(
        {
            "artifact": Path(model).name,
            "input": {
                "name": INPUT_NAME,
                "shape": ["batch", *student.input_size],
                **INPUT_CONVENTION,
            },
            "output": {"name": OUTPUT_NAME, "shape": ["batch"]},
            **{key: getattr(student, key) for key in METADATA_KEYS},
            "check": asdict(report),
        },
        paths["metadata"],
    )
    return report


def run_export(
    model: str,
    out_dir: str,
    images: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    threads: int | None = None,
) -> int:
    """``leaf export``: run :func:`export_model`, print what was written; exit code 2 when
    the exported models do not match PyTorch."""
    if threads:
        torch.set_num_threads(threads)
    try:
        report = export_model(model, out_dir, images, tolerance)
    except ExportMismatchError as err:
        print(f"leaf export: FAILED: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {out_dir}/{{{report.torchscript}, {report.onnx}, {report.metadata}}}; "
        f"max |score difference| vs PyTorch on {report.n_check_images} images: TorchScript "
        f"{report.max_abs_diff_torchscript:.2e}, ONNX Runtime {report.max_abs_diff_onnx:.2e} "
        f"(tolerance {report.tolerance:g})"
    )
    return 0
