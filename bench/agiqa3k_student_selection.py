"""Choose the student's feature/head/training settings for AGIQA-3K WITHOUT test labels.

Usage (from the repository root, after the workflow built the split and the MOS subsets):

    .venv/bin/snakemake --cores 2 --configfile config/config.yaml config/agiqa3k_qalign.yaml \\
        results/agiqa3k_qalign/agiqa3k/subsets/seed{0,1,2,3,4}.parquet
    .venv/bin/python bench/agiqa3k_student_selection.py extract   # cached feature supersets
    .venv/bin/python bench/agiqa3k_student_selection.py select    # the table of candidates

Selection signals (the only ones used; the test split's MOS is never read here):

* **label-free**: 20% of the TRAIN prompts are held out; a stage-1 head is distilled from the
  teacher (Qwen2-VL-7B) on the other train images and scored by SRCC against the *teacher's*
  scores on the held-out train images (mean over 2 seeds);
* **select**: for each seed's MOS subset (10% and 30% of train; its ``fit`` / ``select`` roles
  as written by the workflow), stage 2 from the full-train stage-1 head, calibrated on ``fit``
  and scored on ``select`` at the epoch the workflow would choose (the best select SRCC: an
  optimistic number, used only to rank candidates). CFT-only (no stage 1) is scored alike.

Features: one forward pass per (backbone, input size) yields a superset (every stage's
mean/std/max + the final map's mean/max, computed by the same code as
``leaf.student.features``); candidates are column slices of it, cached under
``results/agiqa3k_qalign/selection/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from leaf.metrics import srcc
from leaf.student.backbones import create_backbone, preprocess_config
from leaf.student.features import (
    build_native_transform,
    build_resize_transform,
    pool_statistics,
    run_extraction,
    stage_feature_maps,
)
from leaf.student.train import calibrate_head, distill_head, predict

ROOT = Path("results/agiqa3k_qalign")
CACHE = ROOT / "selection"
STATS = ("mean", "std", "max")
# (backbone, input short side or None for native 512)
EXTRACTIONS = [
    ("tf_efficientnet_lite0", 224),
    ("tf_efficientnet_lite0", None),
    ("tf_efficientnet_lite2", 260),
    # ("tf_efficientnet_lite2", None): ~3x the Lite0 512 cost, left out (CPU time)
]


def superset_pool(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    maps = stage_feature_maps(model, batch)
    stages = [pool_statistics(m, STATS) for m in maps[:-1]]
    return torch.cat([*stages, pool_statistics(maps[-1], ("mean", "max"))], dim=1)


def cache_name(backbone: str, size: int | None) -> Path:
    return CACHE / f"{backbone}_{size or 'native'}.npz"


def extract(args) -> None:
    torch.set_num_threads(2)
    manifest = pd.read_parquet(ROOT / "agiqa3k" / "manifest.parquet", columns=["image_id", "path"])
    CACHE.mkdir(parents=True, exist_ok=True)
    for backbone, size in EXTRACTIONS:
        out = cache_name(backbone, size)
        if out.exists():
            continue
        if args.only and f"{backbone}_{size or 'native'}" not in args.only:
            continue
        model = create_backbone(backbone, "package")
        config = preprocess_config(model)
        transform = (
            build_native_transform(config) if size is None else build_resize_transform(config, size)
        )
        start = time.perf_counter()
        features = run_extraction(
            model,
            manifest["path"].tolist(),
            transform,
            superset_pool,
            batch_size=16,
            progress=False,
        )
        elapsed = time.perf_counter() - start
        widths = [int(i["num_chs"]) for i in model.feature_info]
        np.savez(
            out,
            features=features,
            image_ids=np.array(manifest["image_id"].astype(str).tolist(), dtype=str),
            widths=np.array(widths),
            final=int(model.num_features),
            seconds=elapsed,
        )
        print(f"{out}: {features.shape} in {elapsed:.0f} s ({len(features) / elapsed:.1f} img/s)")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("extract")
    p.add_argument("--only", nargs="*")
    q = sub.add_parser("select")
    q.add_argument("--phases", nargs="*", default=["A"])
    q.add_argument("--feature", default="stages mean+std, Lite0 224")
    q.add_argument("--features", nargs="*", help="phase A: only these feature sets")
    q.add_argument("--tag", default="run")
    q.add_argument("--seeds", type=int, default=5, help="MOS-subset seeds for the select part")
    q.add_argument("--stage1", default="", help="JSON of chosen head/stage-1 changes")
    q.add_argument("--stage2", default="", help="JSON of chosen stage-2 changes")
    q.add_argument(
        "--teachers", nargs="*", default=["Qwen2-VL-7B", "LLaVA-OneVision-7B", "mPLUG-Owl"]
    )
    args = parser.parse_args()
    {"extract": extract, "select": select}[args.command](args)


TEACHERS = {
    "Qwen2-VL-7B": (
        "../shared/teachers/qalign5-agiqa3k/qwen2_vl_7b.json",
        "logits_json",
        ["excellent", "good", "fair", "poor", "bad"],
        [5, 4, 3, 2, 1],
    ),
    "LLaVA-OneVision-7B": (
        "../shared/teachers/qalign5-agiqa3k/llava_onevision_7b.json",
        "logits_json",
        ["excellent", "good", "fair", "poor", "bad"],
        [5, 4, 3, 2, 1],
    ),
    "mPLUG-Owl": (
        "../shared/teachers/qbench-agiqa3k/mplug_owl.json",
        "qbench",
        ["good", "poor"],
        [1, 0],
    ),
}


def teacher_scores(name: str, manifest: pd.DataFrame) -> pd.Series:
    """The teacher's score of every image, by the workflow's own backend (no label is read)."""
    from leaf.teacher.factory import make_backend
    from leaf.teacher.levels import expected_score, level_probabilities

    path, fmt, words, values = TEACHERS[name]
    backend = make_backend(
        {
            "backend": "import",
            "import": {"path": path, "format": fmt},
            "levels": {"words": words, "values": values},
            "tau": 0.1,
        }
    )
    logliks = backend.point_logliks(manifest["path"].tolist())
    score = expected_score(level_probabilities(logliks), np.array(values, float))
    return pd.Series(score, index=manifest["image_id"].astype(str).tolist())


def load_superset(backbone: str, size: int | None) -> tuple[pd.DataFrame, dict]:
    data = np.load(cache_name(backbone, size), allow_pickle=True)  # our own cache
    widths = [int(w) for w in data["widths"]]
    return data["features"], {
        "ids": [str(i) for i in data["image_ids"]],
        "widths": widths,
        "final": int(data["final"]),
        "seconds": float(data["seconds"]),
    }


def columns(meta: dict, stats: tuple[str, ...], final: tuple[str, ...] = ()) -> np.ndarray:
    """Column indices of the superset: per stage the chosen ``stats`` (in superset order
    mean, std, max), then the final map's ``final`` statistics (mean, max)."""
    cols, offset = [], 0
    for width in meta["widths"]:
        for k, stat in enumerate(STATS):
            if stat in stats:
                cols.extend(range(offset + k * width, offset + (k + 1) * width))
        offset += len(STATS) * width
    for k, stat in enumerate(("mean", "max")):
        if stat in final:
            cols.extend(range(offset + k * meta["final"], offset + (k + 1) * meta["final"]))
    return np.array(cols)


# name -> list of (backbone, size, stage stats, final stats); several parts are concatenated.
FEATURES = {
    "native_meanmax (Lite0 512, final map; current)": [
        ("tf_efficientnet_lite0", None, (), ("mean", "max"))
    ],
    "stages mean+std, Lite0 224": [("tf_efficientnet_lite0", 224, ("mean", "std"), ())],
    "stages mean+std+max, Lite0 224": [("tf_efficientnet_lite0", 224, ("mean", "std", "max"), ())],
    "stages mean+std, Lite0 512": [("tf_efficientnet_lite0", None, ("mean", "std"), ())],
    "stages mean+std, Lite0 224+512": [
        ("tf_efficientnet_lite0", 224, ("mean", "std"), ()),
        ("tf_efficientnet_lite0", None, ("mean", "std"), ()),
    ],
    "stages mean+std, Lite2 260": [("tf_efficientnet_lite2", 260, ("mean", "std"), ())],
    "stages mean+std, Lite2 512": [("tf_efficientnet_lite2", None, ("mean", "std"), ())],
}


def feature_matrix(name: str, ids: list[str]) -> np.ndarray | None:
    parts = []
    for backbone, size, stats, final in FEATURES[name]:
        if not cache_name(backbone, size).exists():
            return None
        features, meta = load_superset(backbone, size)
        row = {i: r for r, i in enumerate(meta["ids"])}
        parts.append(features[[row[i] for i in ids]][:, columns(meta, stats, final)])
    return np.concatenate(parts, axis=1)


DEFAULT = {
    "hidden": 256,
    "dropout": 0.5,
    "epochs1": 20,
    "lr1": 1e-3,
    "wd": 1e-4,
    "epochs2": 60,
    "lr2": 1e-3,
    "lambda_cal": 1.0,
}


def distill(x, t, cfg, seed):
    head, _ = distill_head(
        x,
        t,
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
        np.zeros(0),
        np.zeros(0),
        hidden=cfg["hidden"],
        dropout=cfg["dropout"],
        lambda_dis=0.0,
        epochs=cfg["epochs1"],
        lr=cfg["lr1"],
        weight_decay=cfg["wd"],
        batch_size=64,
        seed=seed,
        use_pair=False,
        use_omega=False,
    )
    return head


def label_free(x: dict, t: pd.Series, holdout: tuple[list, list], cfg: dict) -> float:
    """Mean over 2 seeds of SRCC(student, teacher) on the held-out train prompts."""
    fit_ids, held_ids = holdout
    values = []
    for seed in (0, 1):
        head = distill(x[fit_ids], t.loc[fit_ids].to_numpy(np.float32), cfg, seed)
        values.append(srcc(predict(head, x[held_ids]), t.loc[held_ids].to_numpy()))
    return float(np.mean(values))


def mean_select_srcc(x, t, train_ids, subsets, cfg, seeds, with_cft=True) -> dict:
    """Mean over seeds of the best-epoch select SRCC (what the workflow's selection sees)."""
    from leaf.student.steps import calibration_subset

    out: dict[str, list] = {}
    for seed in seeds:
        head = distill(x[train_ids], t.loc[train_ids].to_numpy(np.float32), cfg, seed)
        for ratio in (0.1, 0.3):
            fit, fit_mos, sel, sel_mos = calibration_subset(
                str(ROOT / "agiqa3k" / "manifest.parquet"), subsets[seed], ratio
            )
            for kind, init in (("leaf", head), ("cft", None)) if with_cft else (("leaf", head),):
                _, epoch, history = calibrate_head(
                    init,
                    x[fit],
                    fit_mos,
                    x[sel],
                    sel_mos,
                    lambda_cal=cfg["lambda_cal"],
                    epochs=cfg["epochs2"],
                    lr=cfg["lr2"],
                    weight_decay=cfg["wd"],
                    batch_size=32,
                    seed=seed,
                    hidden=cfg["hidden"],
                    dropout=cfg["dropout"],
                )
                out.setdefault(f"{kind}{int(ratio * 100)}", []).append(
                    float(history.loc[history["epoch"] == epoch, "select_srcc"].iloc[0])
                )
    return {k: float(np.mean(v)) for k, v in out.items()} | {
        "gap10": [
            a - b for a, b in zip(out["leaf10"], out.get("cft10", out["leaf10"]), strict=True)
        ]
    }


class Rows(dict):
    """Feature matrix rows by image id."""

    def __init__(self, ids, matrix):
        super().__init__()
        self.index = {i: r for r, i in enumerate(ids)}
        self.matrix = matrix

    def __getitem__(self, ids):
        return self.matrix[[self.index[i] for i in ids]]


def select(args) -> None:
    torch.set_num_threads(1)  # small heads; two selection processes can share the 2 cores
    manifest = pd.read_parquet(
        ROOT / "agiqa3k" / "manifest.parquet", columns=["image_id", "path", "prompt"]
    )
    manifest["image_id"] = manifest["image_id"].astype(str)
    split = pd.read_parquet(ROOT / "agiqa3k" / "split.parquet")
    train_ids = split.loc[split["split"] == "train", "image_id"].astype(str).tolist()
    train = manifest.set_index("image_id").loc[train_ids]
    # Label-free hold-out: 20% of the TRAIN prompts (the workflow's split function, seed 1).
    from leaf.split import train_test_split

    inner = train_test_split(train.reset_index(), 0.2, seed=1, group_by="prompt")
    fit_ids = inner.loc[inner["split"] == "train", "image_id"].tolist()
    held_ids = inner.loc[inner["split"] == "test", "image_id"].tolist()
    subsets = {s: str(ROOT / "agiqa3k" / "subsets" / f"seed{s}.parquet") for s in range(5)}
    seeds = list(range(args.seeds))
    teachers = {name: teacher_scores(name, manifest) for name in args.teachers}
    t = teachers[args.teachers[0]]
    print(
        f"train {len(train_ids)} images: label-free fit {len(fit_ids)}, held out {len(held_ids)}"
        f" ({inner.loc[inner['split'] == 'test'].shape[0]} images of "
        f"{train.loc[held_ids, 'prompt'].nunique()} prompts); teacher {args.teachers[0]}\n"
    )
    ids = manifest["image_id"].tolist()
    results = []

    def run(stage, feature, cfg_changes, teacher=None, with_select=True):
        matrix = feature_matrix(feature, ids)
        if matrix is None:
            print(f"| {stage} | {feature} | (features not extracted) |")
            return None
        x = Rows(ids, matrix)
        cfg = {**DEFAULT, **cfg_changes}
        tt = teachers[teacher] if teacher else t
        start = time.perf_counter()
        row = {
            "stage": stage,
            "teacher": teacher or args.teachers[0],
            "features": feature,
            "d": matrix.shape[1],
            "settings": ", ".join(f"{k}={v}" for k, v in cfg_changes.items()) or "defaults",
            "label_free": label_free(x, tt, (fit_ids, held_ids), cfg),
        }
        if with_select:
            row |= mean_select_srcc(x, tt, train_ids, subsets, cfg, seeds)
        row["seconds"] = time.perf_counter() - start
        results.append(row)
        gaps = " ".join(f"{g:+.3f}" for g in row.get("gap10", []))
        print(
            f"| {stage} | {row['teacher']} | {feature} | {row['d']} | {row['settings']} | "
            f"{row['label_free']:.3f} | {row.get('leaf10', float('nan')):.3f} | "
            f"{row.get('leaf30', float('nan')):.3f} | {row.get('cft10', float('nan')):.3f} | "
            f"{row.get('cft30', float('nan')):.3f} | {gaps} | {row['seconds']:.0f} |",
            flush=True,
        )
        return row

    print(
        "| step | teacher | features | d | settings | label-free (held-out teacher SRCC) | "
        "LEAF select 10% | LEAF select 30% | CFT select 10% | CFT select 30% | "
        "LEAF-CFT select gap 10% per seed | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    phases = set(args.phases)
    if "A" in phases:  # features, with the current head/training settings
        for feature in args.features or FEATURES:
            run("A features", feature, {})
    best_feature = args.feature
    if "B" in phases:  # head and stage 1 (label-free only)
        for changes in (
            {"hidden": 0},
            {"hidden": 512},
            {"dropout": 0.2},
            {"epochs1": 60},
            {"wd": 1e-2},
        ):
            run("B head/stage 1", best_feature, changes, with_select=False)
    base = dict(json.loads(args.stage1)) if args.stage1 else {}
    if "C" in phases:  # stage 2 (select parts)
        for changes in ({}, {"lr2": 1e-4}, {"lr2": 3e-4, "epochs2": 30}, {"lambda_cal": 0.0}):
            run("C stage 2", best_feature, {**base, **changes})
    if "D" in phases:  # the chosen setting vs the current one, other teachers (no tuning)
        chosen = {**base, **(json.loads(args.stage2) if args.stage2 else {})}
        for teacher in args.teachers[1:]:
            run("D other teacher", "native_meanmax (Lite0 512, final map; current)", {}, teacher)
            run("D other teacher", best_feature, chosen, teacher)
    out = CACHE / f"selection_{'_'.join(sorted(phases))}_{args.tag}.json"
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
