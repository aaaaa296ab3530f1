"""Aggregate per-run metrics into the result tables (mean and std over seeds)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from leaf.metrics import correlation_record
from leaf.student import json_write_atomic

log = logging.getLogger(__name__)

TABLE_COLUMNS = [
    "dataset",
    "setting",
    "ratio",
    "srcc_mean",
    "srcc_std",
    "plcc_mean",
    "plcc_std",
    "n_seeds",
    "plcc_kind",
]


def setting_name(ratio: float) -> str:
    """'label-free' for ratio 0, else e.g. '10% MOS'."""
    return "label-free" if ratio == 0 else f"{ratio * 100:g}% MOS"


def test_split_scores(
    scores: pd.DataFrame, split: pd.DataFrame, manifest: pd.DataFrame, score_column: str
) -> pd.DataFrame:
    """The test-split rows of ``scores`` joined with their MOS (columns image_id, pred, mos)."""
    test_ids = split.loc[split["split"] == "test", ["image_id"]]
    joined = test_ids.merge(scores[["image_id", score_column]], on="image_id", how="left")
    joined = joined.merge(manifest[["image_id", "mos"]], on="image_id", how="left")
    missing = joined.loc[joined[score_column].isna(), "image_id"].tolist()
    if missing:
        raise ValueError(f"no score for {len(missing)} test images, e.g. {missing[:5]}")
    if joined["mos"].isna().any():
        raise ValueError("the test split has images without MOS: cannot evaluate")
    return joined.rename(columns={score_column: "pred"})[["image_id", "pred", "mos"]]


def teacher_zero_shot_step(points: str, split: str, manifest: str, metrics: str) -> None:
    """Rule ``teacher_zero_shot``: the teacher's own score on the test split against MOS."""
    joined = test_split_scores(
        pd.read_parquet(points), pd.read_parquet(split), pd.read_parquet(manifest), "score"
    )
    record = correlation_record(joined["pred"].to_numpy(), joined["mos"].to_numpy())
    log.info("teacher zero-shot on %d test images: %s", record["n"], record)
    json_write_atomic(record, metrics)


def aggregate_runs(records: list[dict]) -> pd.DataFrame:
    """Mean and sample std over seeds, one row per (dataset, setting)."""
    frame = pd.DataFrame(records)
    rows = []
    for (dataset, ratio, setting), group in frame.groupby(
        ["dataset", "ratio", "setting"], sort=False, dropna=False
    ):
        rows.append(
            {
                "dataset": dataset,
                "setting": setting,
                "ratio": ratio,
                "srcc_mean": group["srcc"].mean(),
                "srcc_std": group["srcc"].std(ddof=1) if len(group) > 1 else 0.0,
                "plcc_mean": group["plcc"].mean(),
                "plcc_std": group["plcc"].std(ddof=1) if len(group) > 1 else 0.0,
                "n_seeds": len(group),
                "plcc_kind": "raw",
            }
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def table1_step(
    run_metrics: list[str],
    teacher_metrics: list[str],
    table: str,
    runs: list[dict],
    teachers: list[str],
    setting_prefix: str = "",
) -> None:
    """Rule ``table1``: one row per dataset x setting (teacher zero-shot, label-free, x% MOS).

    ``setting_prefix`` is put before the student settings (e.g. "CFT-only " for the baseline
    table ``table_cft``, which has no teacher rows)."""
    if len(run_metrics) != len(runs) or len(teacher_metrics) != len(teachers):
        raise ValueError("table1: metrics inputs and their run descriptions differ in length")
    records = []
    for dataset, path in zip(teachers, teacher_metrics, strict=True):
        record = json.loads(Path(path).read_text())
        records.append(
            {"dataset": dataset, "ratio": np.nan, "setting": "teacher zero-shot", **record}
        )
    for run, path in zip(runs, run_metrics, strict=True):
        record = json.loads(Path(path).read_text())
        records.append(
            {
                "dataset": run["dataset"],
                "ratio": float(run["ratio"]),
                "setting": setting_prefix + setting_name(float(run["ratio"])),
                "srcc": record["srcc"],
                "plcc": record["plcc"],
            }
        )
    result = aggregate_runs(records)
    log.info("table1:\n%s", result.to_string(index=False))
    Path(table).parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(table, index=False, float_format="%.4f")
