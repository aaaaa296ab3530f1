"""Aggregate per-run metrics into the result tables (mean and std over seeds)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from leaf.metrics import correlation_record
from leaf.parquet_io import atomic_path
from leaf.student import json_write_atomic

log = logging.getLogger(__name__)

# Columns of every result table (table1 .. table4): the row description, then the metrics.
ROW_KEYS = ["dataset", "teacher", "backbone", "setting", "ratio"]
# The aggregated metrics of a row (tables and fig4.csv).
METRIC_COLUMNS = ["srcc_mean", "srcc_std", "plcc_mean", "plcc_std", "n_seeds", "plcc_kind"]
TABLE_COLUMNS = [*ROW_KEYS, *METRIC_COLUMNS]
# tables.plcc -> (metrics JSON key, label in the table's plcc_kind column).
PLCC_KINDS = {"raw": ("plcc", "raw"), "logistic": ("plcc_logistic", "VQEG logistic")}


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


def plcc_key(plcc_kind: str) -> tuple[str, str]:
    """(metrics JSON key, table label) of ``tables.plcc`` (raw | logistic)."""
    if plcc_kind not in PLCC_KINDS:
        raise ValueError(f"tables.plcc must be one of {sorted(PLCC_KINDS)}, got {plcc_kind!r}")
    return PLCC_KINDS[plcc_kind]


def aggregate_runs(records: list[dict], plcc_kind: str = "raw") -> pd.DataFrame:
    """Mean and sample std over seeds, one row per distinct row description (:data:`ROW_KEYS`).

    Each record holds the row keys, ``srcc`` and the PLCC key of ``plcc_kind``."""
    key, label = plcc_key(plcc_kind)
    frame = pd.DataFrame(records)
    for column in ROW_KEYS:
        if column not in frame:
            frame[column] = ""
    rows = []
    for values, group in frame.groupby(ROW_KEYS, sort=False, dropna=False):
        srcc, plcc = group["srcc"].astype(float), group[key].astype(float)
        rows.append(
            {
                **dict(zip(ROW_KEYS, values, strict=True)),
                "srcc_mean": srcc.mean(),
                "srcc_std": srcc.std(ddof=1) if len(group) > 1 else 0.0,
                "plcc_mean": plcc.mean(),
                "plcc_std": plcc.std(ddof=1) if len(group) > 1 else 0.0,
                "n_seeds": len(group),
                "plcc_kind": label,
            }
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def read_run_metrics(path: str, row: dict, plcc_kind: str) -> dict:
    """The run description ``row`` joined with its metrics JSON, which must hold ``srcc`` and
    the PLCC of ``plcc_kind``; a ValueError names the file otherwise."""
    record = json.loads(Path(path).read_text())
    missing = [name for name in ("srcc", plcc_key(plcc_kind)[0]) if name not in record]
    if missing:
        raise ValueError(f"{path}: the metrics JSON has no {missing}")
    return {**row, **record}


def results_table_step(metrics: list[str], table: str, rows: list[dict], plcc_kind: str) -> None:
    """Rule ``results_table`` (table1 .. table4): ``metrics[i]`` is the JSON of the run or
    teacher described by ``rows[i]`` (see :class:`leaf.experiments.Plan`); one table row per
    description, mean ± std over its seeds."""
    if len(metrics) != len(rows):
        raise ValueError(f"{table}: {len(metrics)} metrics files for {len(rows)} row descriptions")
    records = [
        read_run_metrics(path, row, plcc_kind) for path, row in zip(metrics, rows, strict=True)
    ]
    result = aggregate_runs(records, plcc_kind)
    log.info("%s:\n%s", Path(table).name, result.to_string(index=False))
    with atomic_path(table) as tmp:
        result.to_csv(tmp, index=False, float_format="%.4f")
