"""Head training (distillation, calibration), checkpoints and the student step functions."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from leaf.metrics import srcc
from leaf.student.heads import QualityHead, head_checkpoint, head_from_checkpoint
from leaf.student.steps import calibrate_step, distill_step, evaluate_step, load_checkpoint
from leaf.student.train import calibrate_head, distill_head, predict

DIM = 12
DISTILL = {"lambda_dis": 0.5, "epochs": 15, "lr": 0.01, "weight_decay": 1e-4, "batch_size": 16}
CALIBRATION = {"lambda_cal": 1.0, "epochs": 8, "lr": 0.005, "weight_decay": 1e-4, "batch_size": 8}


def _world(n=80, pairs=120, seed=0):
    """Features whose true quality is linear; a noisy teacher on a 1..5 scale; MOS 0..100."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, DIM)).astype(np.float32) * 3 + 1
    quality = (features - 1) @ rng.normal(size=DIM) / 10
    teacher = (3 + quality + rng.normal(scale=0.1, size=n)).astype(np.float32)
    index_a, index_b = rng.integers(0, n, pairs), rng.integers(0, n, pairs)
    keep = index_a != index_b
    index_a, index_b = index_a[keep], index_b[keep]
    t_ab = (teacher[index_a] > teacher[index_b]).astype(np.float32)
    omega = rng.uniform(0.2, 1.0, len(index_a)).astype(np.float32)
    mos = 50 + 15 * quality
    return features, teacher, index_a, index_b, t_ab, omega, mos


def _distill(world, hidden=8, **overrides):
    features, teacher, index_a, index_b, t_ab, omega, _ = world
    kwargs = {**DISTILL, "hidden": hidden, "dropout": 0.1, "seed": 0, **overrides}
    return distill_head(features, teacher, index_a, index_b, t_ab, omega, **kwargs)


def _same_state(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_head_shapes_standardisation_and_checkpoint_roundtrip():
    features = np.random.default_rng(1).normal(5, 2, size=(30, DIM)).astype(np.float32)
    linear, mlp = QualityHead(DIM, hidden=0, dropout=0.0), QualityHead(DIM, hidden=4, dropout=0.2)
    assert sum(p.numel() for p in linear.parameters()) == DIM + 1
    assert isinstance(mlp.body, torch.nn.Sequential) and mlp.output.in_features == 4
    mlp.fit_standardisation(features)
    assert np.allclose(mlp.feature_mean.numpy(), features.mean(0), atol=1e-5)
    restored = head_from_checkpoint(head_checkpoint(mlp))
    assert _same_state(restored, mlp) and restored.config == mlp.config
    assert np.array_equal(predict(restored, features), predict(mlp, features))


def test_distillation_learns_the_teacher_and_is_deterministic():
    world = _world()
    head, history = _distill(world)
    again, history_again = _distill(world)
    other, _ = _distill(world, seed=1)
    assert list(history.columns) == ["epoch", "loss", "teacher_srcc", "pair_agreement"]
    assert history["epoch"].tolist() == list(range(1, DISTILL["epochs"] + 1))
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    assert srcc(predict(head, world[0]), world[1]) > 0.9
    assert _same_state(head, again) and history.equals(history_again)
    assert not _same_state(head, other)


def test_distillation_ablations_and_point_only_teacher():
    world = _world()
    pair_only, history = _distill(world, use_point=False)
    assert history["pair_agreement"].iloc[-1] > 0.8
    empty = np.zeros(0)
    features, teacher = world[0], world[1]
    kwargs = {**DISTILL, "hidden": 0, "dropout": 0.0, "seed": 0}
    point_only, _ = distill_head(features, teacher, empty, empty, empty, empty, **kwargs)
    assert srcc(predict(point_only, features), teacher) > 0.9
    with pytest.raises(ValueError):
        distill_head(features, teacher, empty, empty, empty, empty, use_point=False, **kwargs)


def _calibrate(world, head_init, select=slice(20, 32), **overrides):
    features, mos = world[0], world[6]
    kwargs = {**CALIBRATION, "seed": 0, **overrides}
    return calibrate_head(
        head_init, features[:20], mos[:20], features[select], mos[select], **kwargs
    )


def test_calibration_maps_to_the_mos_scale_and_selects_the_best_epoch():
    world = _world()
    distilled, _ = _distill(world)
    model, chosen, history = _calibrate(world, distilled)
    again, chosen_again, history_again = _calibrate(world, distilled)
    assert _same_state(model, again) and chosen == chosen_again and history.equals(history_again)
    test_pred = predict(model, world[0][32:])
    assert np.array_equal(test_pred, predict(again, world[0][32:]))
    assert abs(test_pred.mean() - world[6][32:].mean()) < 5  # native MOS scale (0..100)
    assert float(model.mos_mean) == pytest.approx(world[6][:20].mean(), rel=1e-5)
    assert float(model.mos_std) == pytest.approx(world[6][:20].std(), rel=1e-5)
    assert srcc(test_pred, world[6][32:]) > 0.8
    assert history["epoch"].tolist() == list(range(CALIBRATION["epochs"] + 1))
    best = history.sort_values(["select_srcc", "select_mse"], ascending=[False, True]).iloc[0]
    assert chosen == best["epoch"]
    assert _same_state(distilled, _distill(world)[0])  # the distilled head is not modified


def test_calibration_least_squares_init_and_cft_only():
    world = _world()
    distilled, _ = _distill(world)
    model, chosen, _ = _calibrate(world, distilled, epochs=0)
    assert chosen == 0
    head_pred, fit_mos = predict(distilled, world[0][:20]), world[6][:20]
    slope, intercept = np.polyfit(head_pred, fit_mos, 1)
    assert np.allclose(predict(model, world[0][:20]), slope * head_pred + intercept, atol=1e-3)
    fresh, _, history = _calibrate(world, None, hidden=0, dropout=0.0, epochs=20, lr=0.05)
    assert history["select_srcc"].max() > 0.5
    assert fresh.base.hidden == 0


def test_tiny_select_part_keeps_the_last_epoch():
    world = _world()
    distilled, _ = _distill(world)
    _, chosen, _ = _calibrate(world, distilled, select=slice(20, 22))
    assert chosen == CALIBRATION["epochs"]


@pytest.fixture()
def workflow_files(tmp_path):
    """Cached features, split, manifest, teacher caches and MOS subsets of a tiny dataset."""
    features, teacher, index_a, index_b, t_ab, omega, mos = _world(n=60, pairs=90)
    ids = [f"img{i:02d}.png" for i in range(60)]
    paths = {name: tmp_path / f"{name}.parquet" for name in ("split", "manifest", "points")}
    paths["features"] = tmp_path / "features.pt"
    torch.save(
        {
            "image_ids": ids,
            "features": torch.from_numpy(features),
            "backbone": "toy",
            "weights": "package",
            "image_size": 224,
        },
        paths["features"],
    )
    split = ["test" if i >= 45 else "train" for i in range(60)]
    pd.DataFrame({"image_id": ids, "split": split}).to_parquet(paths["split"])
    pd.DataFrame({"image_id": ids, "path": ids, "mos": mos}).to_parquet(paths["manifest"])
    points = pd.DataFrame({"image_id": ids[:45], "score": teacher[:45]})
    points.loc[3, "score"] = np.nan  # a teacher failure: left out
    points.to_parquet(paths["points"])
    train_pairs = (index_a < 45) & (index_b < 45)
    pairs = pd.DataFrame(
        {
            "image_a": np.array(ids)[index_a[train_pairs]],
            "image_b": np.array(ids)[index_b[train_pairs]],
            "t_ab": t_ab[train_pairs].astype(int),
            "omega": omega[train_pairs],
        }
    )
    paths["pairs"] = tmp_path / "pairs_kept.parquet"
    pairs.to_parquet(paths["pairs"])
    paths["empty_pairs"] = tmp_path / "pairs_empty.parquet"
    pairs.iloc[:0].to_parquet(paths["empty_pairs"])
    subsets = pd.DataFrame(
        {
            "image_id": ids[:12] + ids[:24],
            "ratio": [0.1] * 12 + [0.3] * 24,
            "role": ["fit"] * 9 + ["select"] * 3 + ["fit"] * 18 + ["select"] * 6,
        }
    )
    paths["subsets"] = tmp_path / "subsets.parquet"
    subsets.to_parquet(paths["subsets"])
    return {name: str(path) for name, path in paths.items()}


def _run_distill_step(files, out, pairs_key="pairs"):
    distill_step(
        features=files["features"],
        split=files["split"],
        teacher_points=files["points"],
        teacher_pairs=files[pairs_key],
        model=out,
        seed=0,
        head={"hidden": 8, "dropout": 0.1},
        distill=DISTILL,
        threads=1,
    )
    return load_checkpoint(out)


def test_student_steps_end_to_end(workflow_files, tmp_path):
    files = workflow_files
    distilled = _run_distill_step(files, str(tmp_path / "distill_seed0.pt"))
    assert distilled["n_images"] == 44 and distilled["n_pairs"] > 0
    assert len(distilled["history"]["loss"]) == DISTILL["epochs"]
    point_only = _run_distill_step(files, str(tmp_path / "point_only.pt"), "empty_pairs")
    assert point_only["n_pairs"] == 0

    calibrated_path = str(tmp_path / "calibrated.pt")
    calibrate_step(
        features=files["features"],
        manifest=files["manifest"],
        subsets=files["subsets"],
        distilled=str(tmp_path / "distill_seed0.pt"),
        model=calibrated_path,
        ratio=0.30000000000000004,  # float noise from the wildcard must still match 0.3
        seed=0,
        calibration={**CALIBRATION, "ratios": [0.1, 0.3], "holdout_fraction": 0.25},
        threads=1,
    )
    calibrated = load_checkpoint(calibrated_path)
    assert (calibrated["n_fit"], calibrated["n_select"]) == (18, 6)
    assert 0 <= calibrated["chosen_epoch"] <= CALIBRATION["epochs"]
    # The MOS range it was calibrated on (fit and select parts), the deployed score_range.
    roles = pd.read_parquet(files["subsets"])
    roles = roles[np.isclose(roles["ratio"], 0.3)]
    mos = pd.read_parquet(files["manifest"]).set_index("image_id")["mos"]
    calibrated_mos = mos.loc[roles["image_id"].astype(str)]
    assert calibrated["mos_range"] == [calibrated_mos.min(), calibrated_mos.max()]

    predictions, metrics = tmp_path / "eval.parquet", tmp_path / "eval.json"
    evaluate_step(
        features=files["features"],
        split=files["split"],
        manifest=files["manifest"],
        model=calibrated_path,
        predictions=str(predictions),
        metrics=str(metrics),
    )
    table = pd.read_parquet(predictions)
    assert list(table.columns) == ["image_id", "pred", "mos"] and len(table) == 15
    result = json.loads(metrics.read_text())
    assert result["n"] == 15 and result["chosen_epoch"] == calibrated["chosen_epoch"]
    assert result["srcc"] > 0.7 and result["srcc"] == pytest.approx(
        srcc(table["pred"], table["mos"])
    )
    assert abs(table["pred"].mean() - table["mos"].mean()) < 10  # native MOS scale


def test_calibrate_step_cft_only_and_missing_subset(workflow_files, tmp_path):
    files = workflow_files
    common = {
        "features": files["features"],
        "manifest": files["manifest"],
        "subsets": files["subsets"],
        "seed": 0,
        "calibration": CALIBRATION,
        "threads": 1,
    }
    out = tmp_path / "cft.pt"
    calibrate_step(
        model=str(out), ratio=0.1, distilled=None, head={"hidden": 0, "dropout": 0.0}, **common
    )
    assert load_checkpoint(str(out))["distilled"] is False
    with pytest.raises(ValueError, match="no 'fit' images"):
        calibrate_step(model=str(out), ratio=0.5, head={"hidden": 0, "dropout": 0.0}, **common)
