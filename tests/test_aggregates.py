"""Aggregates never hide a failed run: a collapsed seed or a failed logistic fit is counted,
named in a warning and left out of the mean, and the table says so."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pandas as pd
import pytest

from leaf.metrics import correlation_record, plcc
from leaf.report_results import results_table
from leaf.student.steps import write_evaluation
from leaf.tables import results_table_step


def _metrics(tmp_path, name, pred, mos):
    path = tmp_path / f"{name}.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path.write_text(json.dumps(correlation_record(np.asarray(pred), np.asarray(mos))))
    return str(path)


def test_a_collapsed_seed_is_counted_named_and_left_out(tmp_path, caplog):
    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, 40)
    good = [mos + rng.normal(0, 0.3, 40), mos + rng.normal(0, 0.5, 40)]
    paths = [_metrics(tmp_path, f"seed{i}", pred, mos) for i, pred in enumerate(good)]
    paths.append(_metrics(tmp_path, "seed2", np.full(40, 3.0), mos))  # constant predictions
    record = json.loads((tmp_path / "seed2.json").read_text())
    assert record["srcc"] is None and record["constant_predictions"] is True
    rows = [{"dataset": "d", "setting": "10% MOS", "ratio": 0.1}] * 3
    table = tmp_path / "table.csv"
    with caplog.at_level(logging.WARNING):
        results_table_step(paths, str(table), rows, "raw")
    result = pd.read_csv(table)
    row = result.iloc[0]
    assert (row["n_seeds"], row["n_srcc"], row["n_plcc"]) == (3, 2, 2)
    expected = np.mean([json.loads(open(p).read())["srcc"] for p in paths[:2]])
    assert row["srcc_mean"] == pytest.approx(expected, abs=1e-4)
    assert "seed2.json" in caplog.text
    assert "| 2 of 3 |" in results_table(result)


def test_failed_logistic_fits_are_not_replaced_by_raw_plcc(tmp_path, caplog):
    rng = np.random.default_rng(1)
    mos = rng.uniform(1, 5, 40)
    fitted = _metrics(tmp_path, "fitted", mos + rng.normal(0, 0.3, 40), mos)
    # Four points: too few for the 4-parameter fit, which therefore does not converge.
    small_pred, small_mos = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.2, 1.9, 3.5, 3.9])
    failed = _metrics(tmp_path, "failed", small_pred, small_mos)
    record = json.loads((tmp_path / "failed.json").read_text())
    assert record["plcc_logistic"] is None and record["plcc_logistic_converged"] is False
    assert record["plcc"] == pytest.approx(plcc(small_pred, small_mos))
    table = tmp_path / "table.csv"
    rows = [{"dataset": "d", "setting": "10% MOS", "ratio": 0.1}] * 2
    with caplog.at_level(logging.WARNING):
        results_table_step([fitted, failed], str(table), rows, "logistic")
    row = pd.read_csv(table).iloc[0]
    assert row["n_plcc"] == 1 and row["n_srcc"] == 2
    fitted_plcc = json.loads(open(fitted).read())["plcc_logistic"]
    assert row["plcc_mean"] == pytest.approx(fitted_plcc, abs=1e-4)
    assert row["plcc_kind"] == "VQEG logistic (1 of 2 undefined, left out)"
    assert "failed.json" in caplog.text


def test_evaluation_warns_about_constant_predictions(tmp_path, caplog):
    manifest = tmp_path / "manifest.parquet"
    pd.DataFrame({"image_id": ["a", "b", "c"], "mos": [1.0, 2.0, 3.0]}).to_parquet(manifest)
    metrics = tmp_path / "m.json"
    with caplog.at_level(logging.WARNING):
        write_evaluation(
            ["a", "b", "c"],
            np.full(3, 2.5, np.float32),
            str(manifest),
            {"stage": "calibrate"},
            str(tmp_path / "p.parquet"),
            str(metrics),
        )
    assert "constant" in caplog.text or "collapsed" in caplog.text
    assert str(metrics) in caplog.text
    assert json.loads(metrics.read_text())["srcc"] is None
