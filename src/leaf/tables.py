"""Aggregate per-run metrics into the result tables (mean and std over seeds)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from leaf.atomic_io import atomic_path, json_write_atomic
from leaf.metrics import correlation_record

log = logging.getLogger(__name__)

# Columns of every result table (table1 .. table4): the row description, then the metrics.
ROW_KEYS = ["dataset", "teacher", "backbone", "setting", "ratio"]
# The aggregated metrics of a row (tables and fig4.csv).
# n_seeds counts the runs of a row; n_srcc / n_plcc how many of them have a value (a run with
# constant predictions has no SRCC; one whose logistic fit failed no logistic PLCC): the means
# are over those.
METRIC_COLUMNS = [
    "srcc_mean",
    "srcc_std",
    "plcc_mean",
    "plcc_std",
    "n_seeds",
    "n_srcc",
    "n_plcc",
    "plcc_kind",
]
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


def _mean_std(values: pd.Series) -> tuple[float, float, int]:
    """Mean, sample std (0 for one value) and count of the non-missing ``values``."""
    present = values.dropna()
    if present.empty:
        return float("nan"), float("nan"), 0
    std = float(present.std(ddof=1)) if len(present) > 1 else 0.0
    return float(present.mean()), std, len(present)


def _warn_missing(group: pd.DataFrame, column: str, what: str) -> None:
    for record in group.loc[group[column].isna()].to_dict(orient="records"):
        log.warning(
            "%s has no %s (%s): left out of the mean of its row",
            record.get("source", "a run"),
            column,
            what,
        )


def aggregate_runs(records: list[dict], plcc_kind: str = "raw") -> pd.DataFrame:
    """Mean and sample std over seeds, one row per distinct row description (:data:`ROW_KEYS`).

    Each record holds the row keys, ``srcc`` and the PLCC key of ``plcc_kind`` (None where
    undefined), optionally ``source`` (its file, named in warnings). A run without a value is
    left out of that mean and counted: ``n_seeds`` runs, of which ``n_srcc`` / ``n_plcc`` have
    a value; a warning names each such run. When some logistic fits failed, ``plcc_kind`` says
    so ("VQEG logistic (k of n fits failed, left out)"), so raw and fitted values never mix."""
    key, label = plcc_key(plcc_kind)
    frame = pd.DataFrame(records)
    for column in ROW_KEYS:
        if column not in frame:
            frame[column] = ""
    rows = []
    for values, group in frame.groupby(ROW_KEYS, sort=False, dropna=False):
        group = group.assign(srcc=group["srcc"].astype(float), **{key: group[key].astype(float)})
        srcc_mean, srcc_std, n_srcc = _mean_std(group["srcc"])
        plcc_mean, plcc_std, n_plcc = _mean_std(group[key])
        _warn_missing(group, "srcc", "undefined, e.g. constant predictions")
        _warn_missing(group, key, "undefined, or the logistic fit did not converge")
        kind = label
        if n_plcc < len(group):
            kind = f"{label} ({len(group) - n_plcc} of {len(group)} undefined, left out)"
        rows.append(
            {
                **dict(zip(ROW_KEYS, values, strict=True)),
                "srcc_mean": srcc_mean,
                "srcc_std": srcc_std,
                "plcc_mean": plcc_mean,
                "plcc_std": plcc_std,
                "n_seeds": len(group),
                "n_srcc": n_srcc,
                "n_plcc": n_plcc,
                "plcc_kind": kind,
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
    return {**row, **record, "source": str(path)}


def results_table_step(
    metrics: list[str], table: str, rows: list[dict], plcc_kind: str, key: str = ""
) -> None:
    """Rule ``results_table`` (table1 .. table4.csv): ``metrics[i]`` is the JSON of the run or
    teacher described by ``rows[i]`` (see :class:`leaf.experiments.Plan`); one table row per
    description, mean ± std over its seeds (those with a value: see :func:`aggregate_runs`).
    ``key``: the table's key under ``tables`` (e.g. aigc_comparison), named in the log."""
    if len(metrics) != len(rows):
        raise ValueError(f"{table}: {len(metrics)} metrics files for {len(rows)} row descriptions")
    records = [
        read_run_metrics(path, row, plcc_kind) for path, row in zip(metrics, rows, strict=True)
    ]
    result = aggregate_runs(records, plcc_kind)
    name = f"{Path(table).name} (tables.{key})" if key else Path(table).name
    log.info("%s:\n%s", name, result.to_string(index=False))
    with atomic_path(table) as tmp:
        result.to_csv(tmp, index=False, float_format="%.4f")
