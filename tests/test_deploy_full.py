"""Deploying full-mode students (backbone fine-tuned end to end): `deploy_step` builds a
self-contained artifact from a full-mode checkpoint whose `leaf predict` scores equal
evaluate_full's (`full_evaluate_step`) for the same images, and which `leaf export` exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import leaf
from leaf.deploy import ArtifactError, deploy_step, load_artifact, read_artifact
from leaf.export import export_model
from leaf.model_card import export_model_folder
from leaf.predict import predict_images
from leaf.scoring import onnx_metadata
from leaf.student.backbones import create_backbone
from leaf.student.features import bf16_autocast_supported
from leaf.student.finetune_inputs import preprocess_of
from leaf.student.finetune_model import FullStudent, full_checkpoint
from leaf.student.finetune_steps import full_evaluate_step
from leaf.student.heads import CalibratedHead, QualityHead, head_checkpoint
from leaf.student.image_cache import image_cache_step

LITE0 = "tf_efficientnet_lite0"
# evaluate_full's metrics on a handful of images: the logistic PLCC fit may fail (a warning).
pytestmark = pytest.mark.filterwarnings("ignore:logistic fit failed:RuntimeWarning")
# resize != cache_short_side: both resizes of the evaluation recipe are exercised. fp32 (amp
# off): evaluate_full would otherwise run bf16 autocast on CPUs that support it.
FULL = {
    "epochs_distill": 1,
    "epochs_calibrate": 1,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "batch_size": 4,
    "amp": False,
    "channels_last": True,
    "resize": 60,
    "crop": 56,
    "cache_short_side": 64,
}
DEPLOY = {
    "dataset": "demo",
    "backbone": LITE0,
    "weights": "package",
    "image_size": 224,  # head mode's setting: ignored for a full-mode checkpoint
    "teacher_hash": "0123456789ab",
    "teacher_backend": "brisque",
    "run_config": {"student": {"mode": "full", "full": FULL}},
    "pooling": "center_crop",
    "threads": 1,
    "teacher": {"name": "BRISQUE", "backend": "brisque", "model": None},
}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict:
    """Seven small images (PNG and JPEG, large enough for the cache's JPEG draft decoding, one
    greyscale, one RGBA, both orientations), a manifest, an all-test split and their image
    cache at short side 64."""
    folder = tmp_path_factory.mktemp("full_deploy")
    rng = np.random.default_rng(1)
    sizes = [(200, 150), (150, 210), (97, 64), (64, 80), (130, 131), (260, 140), (70, 90)]
    names = []
    for index, (width, height) in enumerate(sizes):
        yy, xx = np.mgrid[0:height, 0:width]
        scene = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) % 97 * 2.5], axis=-1)
        pixels = np.clip(scene + rng.normal(scale=8 + 9 * index, size=scene.shape), 0, 255)
        image = Image.fromarray(pixels.astype(np.uint8))
        if index == 3:
            image = image.convert("L")
        elif index == 4:
            image = image.convert("RGBA")
        name = f"img{index}.{'jpg' if index in (0, 1, 5) else 'png'}"
        image.save(folder / name)
        names.append(name)
    files = {"folder": folder}
    files.update({key: str(folder / f"{key}.parquet") for key in ("manifest", "split")})
    paths = [str(folder / name) for name in names]
    pd.DataFrame(
        {"image_id": names, "path": paths, "mos": np.linspace(1, 5, len(names))}
    ).to_parquet(files["manifest"])
    pd.DataFrame({"image_id": names, "split": ["test"] * len(names)}).to_parquet(files["split"])
    files["image_cache"], files["cache_index"] = str(folder / "c.npy"), str(folder / "c.parquet")
    image_cache_step(files["manifest"], files["image_cache"], files["cache_index"], 64)
    return files


def fine_tuned_student(calibrated: bool) -> FullStudent:
    """lite0 with its packaged weights moved (as fine-tuning would) and a random head whose
    scores spread over a 1-5 MOS-like scale."""
    torch.manual_seed(0)
    backbone = create_backbone(LITE0, "package")
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.mul_(1 + 0.05 * torch.randn_like(parameter))
    head = QualityHead(int(backbone.num_features))
    if calibrated:
        head = CalibratedHead(head)
        head.set_mos_scale(3.0, 1.0)
        with torch.no_grad():
            head.affine.weight.fill_(4.0)
    return FullStudent(backbone, head).eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Full-mode checkpoints as distill_full / calibrate_full write them."""
    folder = tmp_path_factory.mktemp("full_checkpoints")
    written = {}
    for stage, calibrated in (("distill", False), ("calibrate", True)):
        student = fine_tuned_student(calibrated)
        entries = {
            "stage": stage,
            "seed": 0,
            "backbone": LITE0,
            "weights": "package",
            "preprocess": preprocess_of(student.backbone, FULL),
            "full": dict(FULL),
            "chosen_epoch": 1,
            "history": {
                "epoch": [0, 1],
                "loss": [float("nan"), 0.5],
                "select_srcc": [0.4, 0.6],
                "select_mse": [0.9, 0.7],
            },
        }
        if calibrated:
            entries.update(ratio=0.3, distilled=True, n_fit=5, n_select=3, mos_range=[1.5, 4.5])
        written[stage] = folder / f"{stage}.pt"
        torch.save(full_checkpoint(student, **entries), written[stage])
    return written


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, checkpoints) -> Path:
    path = tmp_path_factory.mktemp("full_artifact") / "full.leaf.pt"
    deploy_step(
        model=str(checkpoints["calibrate"]), artifact=str(path), seed=0, ratio=0.3, **DEPLOY
    )
    return path


def evaluate_full(images: dict, checkpoint: Path, folder: Path) -> pd.Series:
    """evaluate_full's test predictions of ``checkpoint``, by image id."""
    predictions = folder / "eval.parquet"
    full_evaluate_step(
        image_cache=images["image_cache"],
        cache_index=images["cache_index"],
        split=images["split"],
        manifest=images["manifest"],
        model=str(checkpoint),
        predictions=str(predictions),
        metrics=str(folder / "eval.json"),
    )
    return pd.read_parquet(predictions).set_index("image_id")["pred"]


def predicted(model: Path, images: dict, output: Path, **options) -> pd.Series:
    """`leaf predict` scores of the image folder, by file name (= image id)."""
    summary = predict_images(model, images["folder"], output, progress=False, **options)
    assert summary.scored == 7 and not summary.errors
    table = pd.read_parquet(output)
    return table.set_index(table["path"].map(lambda p: Path(p).name))["score"]


def test_full_mode_artifact_scores_equal_evaluate_full(images, checkpoints, artifact, tmp_path):
    reference = evaluate_full(images, checkpoints["calibrate"], tmp_path)
    scores = predicted(artifact, images, tmp_path / "scores.parquet", batch_size=3)
    scores = scores.loc[reference.index]
    assert reference.std() > 0.1  # distinct scores, not a constant
    np.testing.assert_allclose(scores, reference, rtol=0, atol=1e-4)

    # The backbone is the checkpoint's fine-tuned one, not the pretrained weights.
    stored = read_artifact(artifact)
    state = torch.load(checkpoints["calibrate"], weights_only=True)["state_dict"]
    assert stored["backbone"]["state_dict"].keys() == state.keys()
    assert all(torch.equal(stored["backbone"]["state_dict"][k], v) for k, v in state.items())
    pretrained = create_backbone(LITE0, "package").state_dict()
    assert not all(torch.equal(pretrained[k], v) for k, v in state.items())


def test_full_mode_artifact_records_its_recipe_and_provenance(artifact, checkpoints):
    model = load_artifact(artifact)
    assert model.preprocess == {
        "mode": "full",
        "cache_short_side": 64,
        "cache_interpolation": "bicubic",
        "image_size": 56,
        "resize": 60,
        "interpolation": "bilinear",
        "mean": [0.5, 0.5, 0.5],  # lite0's
        "std": [0.5, 0.5, 0.5],
        "crop": "center",
        "pooling": "center_crop",
    }
    assert model.input_size == (3, 56, 56) and not model.native
    assert model.calibration == {
        "scale": "mos",
        "mos_mean": 3.0,
        "mos_std": 1.0,
        "mos_range": [1.5, 4.5],
    }
    provenance = model.provenance
    assert (provenance["mode"], provenance["stage"], provenance["ratio"]) == (
        "full",
        "calibrate",
        0.3,
    )
    assert (provenance["select_srcc"], provenance["select_mse"]) == (0.6, 0.7)
    assert (provenance["n_fit"], provenance["n_select"]) == (5, 3)
    assert provenance["checkpoint"] == "calibrate.pt"
    assert provenance["teacher"] == {"name": "BRISQUE", "backend": "brisque", "model": None}


def test_full_mode_model_folder_scores_like_its_artifact(images, artifact, tmp_path):
    """`leaf export --format hf` of a full-mode student: the folder holds the fine-tuned backbone
    and the two-resize recipe, so leaf.create_metric scores files exactly as the artifact."""
    written = export_model_folder(artifact, tmp_path / "hf")
    paths = sorted(str(p) for p in images["folder"].iterdir() if p.suffix in (".png", ".jpg"))
    expected = leaf.create_metric(artifact, device="cpu")(paths).numpy()
    scores = leaf.create_metric(written.weights.parent, device="cpu")(paths).numpy()
    assert len(paths) == 7 and expected.std() > 0.1
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    assert "full mode" in written.card.read_text()


@pytest.mark.skipif(not bf16_autocast_supported(), reason="CPU without native bf16")
def test_bf16_predict_reproduces_an_amp_evaluation(images, checkpoints, tmp_path):
    """With amp on, evaluate_full runs the backbone under CPU bf16 autocast: fp32 scores then
    differ from its predictions, `--bf16` ones reproduce them."""
    checkpoint = torch.load(checkpoints["calibrate"], weights_only=True)
    checkpoint["full"] = {**FULL, "amp": True}
    torch.save(checkpoint, tmp_path / "amp.pt")
    reference = evaluate_full(images, tmp_path / "amp.pt", tmp_path)
    path = tmp_path / "amp.leaf.pt"
    deploy_step(model=str(tmp_path / "amp.pt"), artifact=str(path), seed=0, ratio=0.3, **DEPLOY)
    bf16 = predicted(path, images, tmp_path / "bf16.parquet", bf16=True).loc[reference.index]
    fp32 = predicted(path, images, tmp_path / "fp32.parquet").loc[reference.index]
    np.testing.assert_allclose(bf16, reference, rtol=0, atol=1e-4)
    assert np.abs(fp32 - reference).max() > 1e-3


def test_full_mode_transform_reads_files_as_the_image_cache(artifact, images):
    """A PNG gives the same input through the PIL transform and the file reader; a large JPEG
    only through the file reader, which decodes with the image cache's draft mode."""
    transform = load_artifact(artifact).transform()
    folder = images["folder"]
    with Image.open(folder / "img2.png") as image:
        assert torch.equal(transform(image), transform.read(folder / "img2.png"))
    with Image.open(folder / "img0.jpg") as image:
        from_pil = transform(image.convert("RGB"))
    from_file = transform.read(folder / "img0.jpg")
    assert from_file.shape == (3, 56, 56) and from_file.dtype == torch.float32
    assert float((from_pil - from_file).abs().max()) > 1e-3  # draft decoding does matter


def test_distilled_full_mode_student_deploys_on_the_teacher_scale(images, checkpoints, tmp_path):
    path = tmp_path / "distilled.leaf.pt"
    deploy_step(model=str(checkpoints["distill"]), artifact=str(path), seed=0, ratio=0.0, **DEPLOY)
    model = load_artifact(path)
    assert model.calibration["scale"] == "teacher" and model.provenance["select_srcc"] is None
    reference = evaluate_full(images, checkpoints["distill"], tmp_path)
    scores = predicted(path, images, tmp_path / "scores.parquet").loc[reference.index]
    np.testing.assert_allclose(scores, reference, rtol=0, atol=1e-4)


def test_full_mode_artifact_exports_to_torchscript_and_onnx(images, artifact, tmp_path):
    report = export_model(artifact, tmp_path / "out", images=images["folder"])
    assert report.n_check_images == 6
    assert report.max_abs_diff_torchscript <= 1e-4 and report.max_abs_diff_onnx <= 1e-4
    assert onnx_metadata(tmp_path / "out" / "full.onnx")["preprocess"]["mode"] == "full"
    torch_scores = predicted(artifact, images, tmp_path / "torch.parquet")
    onnx_scores = predicted(
        artifact, images, tmp_path / "onnx.parquet", onnx=tmp_path / "out" / "full.onnx"
    )
    np.testing.assert_allclose(onnx_scores, torch_scores, rtol=0, atol=1e-4)


def test_deploy_refuses_unknown_modes_and_other_backbones(checkpoints, tmp_path):
    odd = tmp_path / "odd.pt"
    torch.save({"mode": "lora", "stage": "calibrate", "head": {}}, odd)
    with pytest.raises(ArtifactError, match="'lora'-mode student"):
        deploy_step(
            model=str(odd), artifact=str(tmp_path / "a.leaf.pt"), seed=0, ratio=0.3, **DEPLOY
        )
    other = {**DEPLOY, "backbone": "tf_efficientnet_lite1"}
    with pytest.raises(ArtifactError, match="not tf_efficientnet_lite1"):
        deploy_step(
            model=str(checkpoints["calibrate"]),
            artifact=str(tmp_path / "b.leaf.pt"),
            seed=0,
            ratio=0.3,
            **other,
        )
    assert not list(tmp_path.glob("*.leaf.pt"))


def test_head_mode_deploy_is_unchanged(tmp_path):
    """A head-mode checkpoint still deploys on the pretrained backbone with the feature
    extraction's preprocessing (from image_size and pooling)."""
    torch.manual_seed(0)
    head = CalibratedHead(QualityHead(1280))
    checkpoint = {"stage": "calibrate", "head": head_checkpoint(head), "backbone": LITE0}
    torch.save({**checkpoint, "chosen_epoch": 0, "ratio": 0.1}, tmp_path / "head.pt")
    path = tmp_path / "head.leaf.pt"
    settings = {**DEPLOY, "image_size": 64, "run_config": {"student": {"mode": "head"}}}
    deploy_step(model=str(tmp_path / "head.pt"), artifact=str(path), seed=1, ratio=0.1, **settings)
    stored = read_artifact(path)
    assert stored["preprocess"] == {
        "image_size": 64,
        "resize": 73,
        "interpolation": "bicubic",
        "mean": [0.5, 0.5, 0.5],  # lite0's
        "std": [0.5, 0.5, 0.5],
        "crop": "center",
        "pooling": "center_crop",
    }
    assert stored["backbone"]["weights"] == "package" and stored["provenance"]["mode"] == "head"
    pretrained = create_backbone(LITE0, "package").state_dict()
    assert all(torch.equal(stored["backbone"]["state_dict"][k], v) for k, v in pretrained.items())
