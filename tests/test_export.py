"""`leaf export`: TorchScript and ONNX exports of a student artifact, checked against PyTorch."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_predict import LITE0, PROVENANCE, tiny_artifact

from leaf.deploy import ArtifactError, load_artifact
from leaf.export import (
    DEFAULT_TOLERANCE,
    ExportMismatchError,
    check_batches,
    export_model,
    synthetic_images,
    verify_exports,
)
from leaf.predict import predict_images
from leaf.scoring import INPUT_CONVENTION, onnx_metadata, onnx_scorer, unit_range
from leaf.student.backbones import create_backbone


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An artifact, its export folder and the export report (one export: it takes seconds)."""
    folder = tmp_path_factory.mktemp("export")
    artifact = tiny_artifact(folder / "tiny.leaf.pt", create_backbone(LITE0, "package"))
    report = export_model(artifact, folder / "out")
    return artifact, folder / "out", report


def test_export_round_trip_within_tolerance(exported):
    artifact, out_dir, report = exported
    assert report.n_check_images == 6 and report.tolerance == DEFAULT_TOLERANCE
    assert report.max_abs_diff_torchscript <= 1e-4 and report.max_abs_diff_onnx <= 1e-4
    for name in ("tiny.torchscript.pt", "tiny.onnx", "tiny.export.json"):
        assert (out_dir / name).is_file(), name

    # Fresh images and another batch size than the check used: the batch size is dynamic.
    student = load_artifact(artifact)
    transform = student.transform()
    batch = torch.stack([transform(img) for img in synthetic_images(3, seed=7)])
    with torch.inference_mode():
        reference = student(batch).numpy()
        scripted = torch.jit.load(str(out_dir / "tiny.torchscript.pt"))
        scripted = scripted(unit_range(batch, student.preprocess)).numpy()  # takes [0, 1]
    onnx_scores = onnx_scorer(out_dir / "tiny.onnx", student)(batch)
    assert reference.std() > 0.1  # distinct scores, not a constant
    np.testing.assert_allclose(scripted, reference, rtol=0, atol=1e-4)
    np.testing.assert_allclose(onnx_scores, reference, rtol=0, atol=1e-4)

    metadata = onnx_metadata(out_dir / "tiny.onnx")
    assert metadata["provenance"]["config_hash"] == PROVENANCE["config_hash"]
    assert metadata["preprocess"] == student.preprocess
    assert metadata["input"] == INPUT_CONVENTION
    sidecar = json.loads((out_dir / "tiny.export.json").read_text())
    assert sidecar["input"]["shape"] == ["batch", 3, 64, 64]
    assert sidecar["input"]["pixels"] == "rgb01"
    assert sidecar["calibration"]["scale"] == "mos"


def center_crop_pixels(image: Image.Image, resize: int, size: int) -> np.ndarray:
    """An ONNX user's input, written from the recorded recipe with PIL and numpy only: short side
    to ``resize``, long side int(resize * long / short) (bicubic; torchvision's Resize), centre
    crop ``size`` (torchvision's rounding), RGB / 255, (3, H, W)."""
    width, height = image.size
    long_side = int(resize * max(width, height) / min(width, height))
    new = (resize, long_side) if width <= height else (long_side, resize)
    resized = image.convert("RGB").resize(new, Image.Resampling.BICUBIC)
    top = int(round((new[1] - size) / 2.0))
    left = int(round((new[0] - size) / 2.0))
    crop = resized.crop((left, top, left + size, top + size))
    return (np.asarray(crop, dtype=np.float32) / 255).transpose(2, 0, 1)


def test_onnx_takes_rgb_in_unit_range(exported):
    """The normalisation is inside the ONNX graph: an ONNX Runtime user who only resizes, crops
    and scales to [0, 1] gets the PyTorch scores; the old normalised input does not."""
    import onnxruntime as ort

    artifact, out_dir, _ = exported
    student = load_artifact(artifact)
    preprocess = student.preprocess
    images = synthetic_images(4, seed=11)
    pixels = np.stack(
        [
            center_crop_pixels(image, preprocess["resize"], preprocess["image_size"])
            for image in images
        ]
    )
    assert pixels.min() >= 0 and pixels.max() <= 1
    session = ort.InferenceSession(str(out_dir / "tiny.onnx"), providers=["CPUExecutionProvider"])
    (name,) = [entry.name for entry in session.get_inputs()]
    onnx_scores = session.run(None, {name: pixels})[0]
    transform = student.transform()
    with torch.inference_mode():
        reference = student(torch.stack([transform(image) for image in images])).numpy()
    assert reference.std() > 0.1
    np.testing.assert_allclose(onnx_scores, reference, rtol=0, atol=1e-4)
    normalised = (pixels - 0.5) / 0.5  # the mean/std of this backbone: what PyTorch sees
    assert not np.allclose(session.run(None, {name: normalised})[0], reference, atol=1e-2)


def test_a_mismatching_export_fails_loudly(exported):
    artifact, out_dir, _ = exported
    student = load_artifact(artifact)
    batches = check_batches(student, None, 4)
    drifted = copy.deepcopy(student)
    with torch.no_grad():
        drifted.head.mos_mean += 0.05  # scores ~50: a relative deviation of ~1e-3 > 1e-4
    with pytest.raises(ExportMismatchError, match="torchscript.*onnx"):
        verify_exports(drifted, batches, out_dir / "tiny.torchscript.pt", out_dir / "tiny.onnx")
    verify_exports(student, batches, out_dir / "tiny.torchscript.pt", out_dir / "tiny.onnx")


def test_predict_with_onnx_runtime_matches_pytorch(exported, tmp_path):
    artifact, out_dir, _ = exported
    folder = tmp_path / "images"
    folder.mkdir()
    for index, image in enumerate(synthetic_images(5, seed=3)):
        image.save(folder / f"{index}.png")
    torch_run = predict_images(artifact, folder, tmp_path / "torch.parquet", progress=False)
    onnx_run = predict_images(
        artifact, folder, tmp_path / "onnx.parquet", onnx=out_dir / "tiny.onnx", progress=False
    )
    assert onnx_run.backend == "onnxruntime fp32" and onnx_run.scored == 5
    a, b = pd.read_parquet(torch_run.output), pd.read_parquet(onnx_run.output)
    assert a["path"].tolist() == b["path"].tolist()
    np.testing.assert_allclose(b["score"], a["score"], rtol=0, atol=1e-4)


def test_onnx_without_its_input_convention_is_refused(exported, tmp_path):
    """An export that does not record its [0, 1] input (an earlier LEAF's took normalised
    inputs) is not fed guessed inputs."""
    import onnx

    _, out_dir, _ = exported
    proto = onnx.load(str(out_dir / "tiny.onnx"))
    kept = [entry for entry in proto.metadata_props if entry.key != "leaf.input"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(tmp_path / "old.onnx"))
    with pytest.raises(ArtifactError, match="takes RGB in"):
        onnx_scorer(tmp_path / "old.onnx")


def test_onnx_of_another_model_is_refused(exported, tmp_path):
    _, out_dir, _ = exported
    other = tiny_artifact(tmp_path / "other.leaf.pt", create_backbone(LITE0, "package"), seed=9)
    with pytest.raises(ArtifactError, match="not exported from this model"):
        onnx_scorer(out_dir / "tiny.onnx", load_artifact(other))
