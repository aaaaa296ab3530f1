"""The "full" student mode: decoded-image cache, end-to-end fine-tuning (stage 1 and 2) through
the step functions on a tiny setting, determinism, and its workflow wiring (dry runs)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from workflow_helpers import ROOT, TEACHER_RULES, planned_jobs, snakemake

from leaf.student.backbones import create_backbone
from leaf.student.finetune_inputs import CachedInputs, preprocess_of
from leaf.student.finetune_model import fresh_student, full_checkpoint, load_full_model
from leaf.student.finetune_steps import (
    full_calibrate_step,
    full_cft_step,
    full_distill_step,
    full_evaluate_step,
)
from leaf.student.image_cache import ImageCache, image_cache_step, short_side_size
from leaf.student.steps import load_checkpoint
from leaf.student.train import deterministic

N_IMAGES, N_TRAIN = 24, 18
FULL = {
    "epochs_distill": 1,
    "epochs_calibrate": 2,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "batch_size": 6,
    "amp": True,
    "channels_last": True,
    "resize": 64,
    "crop": 56,
    "cache_short_side": 64,
}
DISTILL = {"lambda_dis": 0.5}
CALIBRATION = {"lambda_cal": 1.0}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """24 tiny images (graded blur/noise of one scene, mixed sizes and formats) with manifest,
    split, teacher caches, MOS subsets and the decoded-image cache."""
    folder = tmp_path_factory.mktemp("full")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:80, 0:100]
    scene = np.stack([xx * 2.5, yy * 3.0, (xx + yy) * 1.4], axis=-1)
    ids, paths, quality = [], [], []
    for i in range(N_IMAGES):
        level = i % 6
        noisy = scene + rng.normal(scale=12 * level, size=scene.shape)
        pixels = np.clip(noisy, 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels if i % 2 else pixels.transpose(1, 0, 2))  # both layouts
        name = f"img{i:02d}.{'png' if i % 3 else 'jpg'}"
        image.save(folder / name)
        ids.append(name)
        paths.append(str(folder / name))
        quality.append(5.0 - 0.7 * level)
    quality = np.array(quality)
    files = {name: str(folder / f"{name}.parquet") for name in ("manifest", "split", "points")}
    pd.DataFrame({"image_id": ids, "path": paths, "mos": 20 * quality}).to_parquet(
        files["manifest"]
    )
    split = ["train"] * N_TRAIN + ["test"] * (N_IMAGES - N_TRAIN)
    pd.DataFrame({"image_id": ids, "split": split}).to_parquet(files["split"])
    pd.DataFrame({"image_id": ids[:N_TRAIN], "score": quality[:N_TRAIN]}).to_parquet(
        files["points"]
    )
    a, b = rng.integers(0, N_TRAIN, 30), rng.integers(0, N_TRAIN, 30)
    keep = a != b
    files["pairs"] = str(folder / "pairs_kept.parquet")
    pd.DataFrame(
        {
            "image_a": np.array(ids)[a[keep]],
            "image_b": np.array(ids)[b[keep]],
            "t_ab": (quality[a[keep]] > quality[b[keep]]).astype(int),
            "omega": rng.uniform(0.3, 1.0, int(keep.sum())),
        }
    ).to_parquet(files["pairs"])
    files["subsets"] = str(folder / "subsets.parquet")
    pd.DataFrame(
        {"image_id": ids[:8], "ratio": [0.3] * 8, "role": ["fit"] * 5 + ["select"] * 3}
    ).to_parquet(files["subsets"])
    files["image_cache"] = str(folder / "short64.npy")
    files["cache_index"] = str(folder / "short64.parquet")
    image_cache_step(
        manifest=files["manifest"],
        cache=files["image_cache"],
        index=files["cache_index"],
        short_side=64,
        threads=2,
    )
    return files


def test_image_cache_holds_every_image_once_at_the_short_side(dataset):
    cache = ImageCache.open(dataset["image_cache"], dataset["cache_index"])
    manifest = pd.read_parquet(dataset["manifest"])
    assert cache.index["image_id"].tolist() == manifest["image_id"].tolist()
    assert isinstance(cache.pixels, np.memmap) and cache.pixels.dtype == np.uint8
    for row, path in enumerate(manifest["path"]):
        with Image.open(path) as original:
            expected = np.asarray(original.convert("RGB").resize(cache[row].shape[1::-1], 3))
        assert min(cache[row].shape[:2]) == 64
        assert cache[row].shape == (*short_side_size(*original.size, 64)[::-1], 3)
        assert np.abs(cache[row].astype(int) - expected).mean() < 3  # the same picture
    assert cache.pixels.size == int((cache.index["height"] * cache.index["width"] * 3).sum())
    assert cache.rows(["img04.png", "img00.jpg"]).tolist() == [4, 0]
    with pytest.raises(KeyError, match="not in the image cache"):
        cache.rows(["missing.png"])


def test_training_crops_are_seeded_and_eval_crops_are_centred(dataset):
    cache = ImageCache.open(dataset["image_cache"], dataset["cache_index"])
    inputs = CachedInputs(cache, crop=56, resize=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    rows = np.arange(6)
    first = inputs.batch(rows, torch.Generator().manual_seed(0))
    again = inputs.batch(rows, torch.Generator().manual_seed(0))
    other = inputs.batch(rows, torch.Generator().manual_seed(1))
    assert first.shape == (6, 3, 56, 56) and first.dtype == torch.uint8
    assert torch.equal(first, again) and not torch.equal(first, other)
    centred = inputs.batch(rows[:1])[0]
    image = torch.from_numpy(np.array(cache[0])).permute(2, 0, 1)
    top, left = (image.shape[1] - 56) // 2, (image.shape[2] - 56) // 2
    assert torch.equal(centred, image[:, top : top + 56, left : left + 56])
    model_input = inputs.to_model(first, torch.device("cpu"))
    assert model_input.dtype == torch.float32 and -1.0 <= float(model_input.min())
    assert float(model_input.max()) <= 1.0


def _run(dataset, folder, seed=0):
    """Stage 1, stage 2 (ratio 0.3) and the test evaluation of both, in ``folder``."""
    folder.mkdir()
    common = {"image_cache": dataset["image_cache"], "cache_index": dataset["cache_index"]}
    distilled = str(folder / "distill.pt")
    full_distill_step(
        **common,
        split=dataset["split"],
        teacher_points=dataset["points"],
        teacher_pairs=dataset["pairs"],
        model=distilled,
        seed=seed,
        backbone="tf_efficientnet_lite0",
        weights="package",
        distill=DISTILL,
        full=FULL,
        threads=1,
    )
    calibrated = str(folder / "calibrated.pt")
    full_calibrate_step(
        **common,
        manifest=dataset["manifest"],
        subsets=dataset["subsets"],
        distilled=distilled,
        model=calibrated,
        ratio=0.30000000000000004,
        seed=seed,
        calibration=CALIBRATION,
        full=FULL,
        threads=1,
    )
    metrics = {}
    for name, model in (("distill", distilled), ("calibrated", calibrated)):
        full_evaluate_step(
            **common,
            split=dataset["split"],
            manifest=dataset["manifest"],
            model=model,
            predictions=str(folder / f"{name}.parquet"),
            metrics=str(folder / f"{name}.json"),
        )
        metrics[name] = json.loads((folder / f"{name}.json").read_text())
    return distilled, calibrated, metrics


def test_full_mode_end_to_end_is_deterministic(dataset, tmp_path):
    distilled, calibrated, metrics = _run(dataset, tmp_path / "first")
    stage1, stage2 = load_checkpoint(distilled), load_checkpoint(calibrated)
    assert stage1["mode"] == stage2["mode"] == "full"
    assert stage1["stage"] == "distill" and stage1["chosen_epoch"] == FULL["epochs_distill"]
    assert (stage1["n_images"], stage1["use_pair"]) == (N_TRAIN, True) and stage1["n_pairs"] > 0
    assert len(stage1["history"]["loss"]) == FULL["epochs_distill"]
    assert np.isfinite(stage1["history"]["teacher_srcc"][-1])
    assert (stage2["n_fit"], stage2["n_select"]) == (5, 3)
    assert stage2["history"]["epoch"] == [0, 1, 2]
    assert 0 <= stage2["chosen_epoch"] <= FULL["epochs_calibrate"]
    assert stage2["head"]["kind"] == "calibrated" and stage1["head"]["kind"] == "quality"
    # The backbone is fine-tuned: its weights moved away from the packaged ImageNet ones.
    model, _ = load_full_model(distilled)
    pretrained = create_backbone("tf_efficientnet_lite0", "package").state_dict()
    assert any(not torch.equal(v, pretrained[k]) for k, v in model.backbone.state_dict().items())
    predictions = pd.read_parquet(tmp_path / "first" / "calibrated.parquet")
    assert list(predictions.columns) == ["image_id", "pred", "mos"]
    assert len(predictions) == N_IMAGES - N_TRAIN and predictions["pred"].notna().all()
    assert metrics["calibrated"]["n"] == N_IMAGES - N_TRAIN
    assert metrics["calibrated"]["chosen_epoch"] == stage2["chosen_epoch"]
    assert metrics["distill"]["stage"] == "distill"

    _, _, again = _run(dataset, tmp_path / "again")
    assert again == metrics  # identical metrics for the same seed
    repeated = load_checkpoint(str(tmp_path / "again" / "calibrated.pt"))["state_dict"]
    assert all(torch.equal(v, repeated[k]) for k, v in stage2["state_dict"].items())


def test_head_mode_checkpoints_are_refused(dataset, tmp_path):
    path = tmp_path / "head.pt"
    torch.save({"stage": "distill", "head": {}}, path)
    with pytest.raises(ValueError, match="not a full-mode checkpoint"):
        load_full_model(str(path))


def test_cft_only_is_calibrate_full_from_imagenet_weights(dataset, tmp_path):
    """The CFT-only baseline of the full mode runs exactly calibrate_full's stage 2, from the
    pretrained backbone and a fresh head: calibrating a "distilled" checkpoint that holds that
    very start gives the same model, history and chosen epoch."""
    common = {
        "image_cache": dataset["image_cache"],
        "cache_index": dataset["cache_index"],
        "manifest": dataset["manifest"],
        "subsets": dataset["subsets"],
        "ratio": 0.3,
        "seed": 3,
        "calibration": CALIBRATION,
        "full": FULL,
        "threads": 1,
    }
    cft = tmp_path / "cft_seed3_ratio0.3.pt"
    full_cft_step(**common, model=str(cft), backbone="tf_efficientnet_lite0", weights="package")

    network = create_backbone("tf_efficientnet_lite0", "package")
    with deterministic(3):  # the fresh head full_cft_step starts from (seeded)
        start = fresh_student(network)
    preprocess = preprocess_of(network, FULL)
    stage1 = full_checkpoint(
        start, backbone="tf_efficientnet_lite0", weights="package", preprocess=preprocess
    )
    torch.save(stage1, tmp_path / "imagenet_start.pt")
    calibrated = tmp_path / "calibrated.pt"
    full_calibrate_step(
        **common, distilled=str(tmp_path / "imagenet_start.pt"), model=str(calibrated)
    )

    baseline, reference = load_checkpoint(str(cft)), load_checkpoint(str(calibrated))
    assert baseline["distilled"] is False and reference["distilled"] is True
    assert (baseline["mode"], baseline["stage"]) == ("full", "calibrate")
    assert (baseline["n_fit"], baseline["n_select"], baseline["ratio"]) == (5, 3, 0.3)
    assert baseline["preprocess"] == preprocess and baseline["weights"] == "package"
    assert baseline["head"]["kind"] == "calibrated" and baseline["head"]["config"]["hidden"] == 0
    assert baseline["history"]["epoch"] == [0, 1, 2]
    pd.testing.assert_frame_equal(
        pd.DataFrame(baseline["history"]), pd.DataFrame(reference["history"])
    )
    assert baseline["chosen_epoch"] == reference["chosen_epoch"]
    for part in ("state_dict", "head"):
        state, other = baseline[part], reference[part]
        state, other = state.get("state_dict", state), other.get("state_dict", other)
        assert all(torch.equal(v, other[k]) for k, v in state.items()), part

    # evaluate_full evaluates it unchanged.
    full_evaluate_step(
        image_cache=dataset["image_cache"],
        cache_index=dataset["cache_index"],
        split=dataset["split"],
        manifest=dataset["manifest"],
        model=str(cft),
        predictions=str(tmp_path / "cft.parquet"),
        metrics=str(tmp_path / "cft.json"),
    )
    metrics = json.loads((tmp_path / "cft.json").read_text())
    assert metrics["n"] == N_IMAGES - N_TRAIN and metrics["stage"] == "calibrate"
    assert metrics["chosen_epoch"] == baseline["chosen_epoch"]


def test_cft_only_head_is_fresh_and_seeded():
    network = create_backbone("tf_efficientnet_lite0", "package")
    heads = []
    for seed in (0, 0, 1):
        with deterministic(seed):
            heads.append(fresh_student(network).head.state_dict())
    assert all(torch.equal(v, heads[1][k]) for k, v in heads[0].items())
    assert not torch.equal(heads[0]["output.weight"], heads[2]["output.weight"])
    assert heads[0]["output.weight"].shape == (1, network.num_features)


E2E_CONFIG = ROOT / ".test" / "config" / "config.yaml"
FULL_CONFIG = ROOT / ".test" / "config_full" / "config.yaml"


def test_the_full_mode_test_config_holds_these_tests_settings():
    full = yaml.safe_load(FULL_CONFIG.read_text())["student"]
    assert full["mode"] == "full" and full["full"] == FULL


def _configs(folder, name, *overrides):
    """The e2e config, the full-mode test config and ``overrides`` (as files in ``folder``)."""
    files = [E2E_CONFIG, FULL_CONFIG]
    for index, override in enumerate(overrides):
        path = folder / f"{name}_{index}.yaml"
        path.write_text(yaml.safe_dump(override))
        files.append(path)
    return files


@pytest.mark.slow
def test_full_mode_plans_its_rules_and_reuses_teacher_and_image_cache(tmp_path):
    jobs = planned_jobs(tmp_path, "results/table1.csv", configfiles=_configs(tmp_path, "plan"))
    assert jobs["image_cache"] == 1 and jobs["distill"] == 2  # e2e: seeds [0, 1]
    assert jobs["calibrate"] == 4 and jobs["evaluate"] == 6
    # The same rules as head mode, fed by the image cache: no frozen-feature job.
    assert "features" not in jobs

    # Build the teacher caches and the image cache only, then change seeds and ratios.
    until = ("--until", "image_cache", "filter_pairs", "merge_points")
    snakemake(tmp_path, "results/table1.csv", *until, configfiles=_configs(tmp_path, "plan"))
    assert (tmp_path / "results" / "demo" / "image_cache" / "short64.npy").is_file()
    for change in ({"seeds": [0, 1, 2]}, {"calibration": {"ratios": [0.0, 0.2]}}):
        jobs = planned_jobs(
            tmp_path, "results/table1.csv", configfiles=_configs(tmp_path, "change", change)
        )
        assert jobs.get("distill", 0) + jobs.get("calibrate", 0) > 0, jobs
        assert not (TEACHER_RULES | {"image_cache", "features", "filter_pairs"}) & set(jobs), jobs
