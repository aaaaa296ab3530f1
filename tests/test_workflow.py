"""The real workflow, end to end on a small demo: outputs, and teacher-cache reuse.

One complete run (module fixture), then dry runs with changed configs: changing seeds, ratios,
lambdas, tau or the student backbone must plan zero teacher jobs; changing what the teacher is
asked must plan them again.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from workflow_helpers import ROOT, TEACHER_RULES, planned_jobs, snakemake

pytestmark = pytest.mark.slow

E2E_CONFIG = ROOT / "tests" / "data" / "e2e_config.yaml"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e")
    snakemake(workdir, "results/table1.csv", configfiles=[E2E_CONFIG])
    return workdir


def _override(workdir, name, content):
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(content))
    return [E2E_CONFIG, path]


def test_table1_has_one_row_per_setting(finished_run):
    table = pd.read_csv(finished_run / "results" / "table1.csv")
    assert list(table["setting"]) == ["teacher zero-shot", "label-free", "10% MOS", "30% MOS"]
    assert (table["dataset"] == "demo").all()
    assert list(table["n_seeds"]) == [1, 2, 2, 2]
    for column in ("srcc_mean", "plcc_mean"):
        assert table[column].between(-1, 1).all()
    # A real signal: the calibrated student correlates with the synthetic MOS.
    assert table.loc[table["setting"] == "30% MOS", "srcc_mean"].item() > 0.3


def test_caches_are_inspectable_parquet(finished_run):
    results = finished_run / "results" / "demo"
    manifest = pd.read_parquet(results / "manifest.parquet")
    assert {"image_id", "path", "mos", "width", "height", "sha256"} <= set(manifest.columns)
    (teacher_dir,) = (results / "teacher").iterdir()
    points = pd.read_parquet(teacher_dir / "points.parquet")
    assert len(points) == len(manifest)
    assert {"loglik_excellent", "p_bad", "score"} <= set(points.columns)
    pairs = pd.read_parquet(teacher_dir / "pairs.parquet")
    train = pd.read_parquet(results / "split.parquet").query("split == 'train'")
    assert len(pairs) == len(train)  # pairs.per_image = 1.0
    kept = pd.read_parquet(teacher_dir / "pairs_kept.parquet")
    assert (kept["omega"] >= 0.1).all() and len(kept) <= len(pairs)
    metadata = json.loads(pq.read_schema(teacher_dir / "points.parquet").metadata[b"leaf"])
    assert metadata["levels"]["words"] == ["Excellent", "Good", "Fair", "Poor", "Bad"]


def test_every_job_logged_and_benchmarked(finished_run):
    results = finished_run / "results"
    logs = list((results / "logs").rglob("*.log"))
    benchmarks = list((results / "benchmarks").rglob("*.tsv"))
    assert len(logs) >= 20 and len(benchmarks) == len(logs)
    distill_log = next((results / "logs").rglob("distill_seed0.log")).read_text()
    assert "distill" in distill_log


def test_rerun_with_same_config_does_nothing(finished_run):
    assert planned_jobs(finished_run, "results/table1.csv", configfiles=[E2E_CONFIG]) == {}


REUSE_CHANGES = {
    "seeds": ({"seeds": [0, 1, 2]}, True),
    "ratios": ({"calibration": {"ratios": [0.0, 0.2]}}, True),
    "lambda_dis": ({"distill": {"lambda_dis": 0.25}}, True),
    "lambda_cal": ({"calibration": {"lambda_cal": 0.5}}, True),
    "tau": ({"teacher": {"tau": 0.3}}, True),
    "backbone": ({"student": {"backbone": "tf_efficientnet_lite1"}}, False),
}


@pytest.mark.parametrize("change", sorted(REUSE_CHANGES))
def test_student_side_changes_run_no_teacher_job(finished_run, change):
    override, features_reused = REUSE_CHANGES[change]
    jobs = planned_jobs(
        finished_run, "results/table1.csv", configfiles=_override(finished_run, change, override)
    )
    assert jobs, f"changing {change} should plan some student jobs"
    assert not TEACHER_RULES & set(jobs), f"changing {change} reran teacher jobs: {jobs}"
    if features_reused:
        assert "features" not in jobs, f"changing {change} reran feature extraction: {jobs}"
    if change == "tau":
        assert "filter_pairs" in jobs


@pytest.mark.parametrize(
    "override",
    [
        {"teacher": {"brisque": {"sigma": 0.5}}},
        {"teacher": {"levels": {"values": [5, 4, 3, 2, 0]}}},
    ],
    ids=["backend-option", "level-values"],
)
def test_teacher_changes_rerun_the_teacher(finished_run, override):
    jobs = planned_jobs(
        finished_run, "results/table1.csv", configfiles=_override(finished_run, "teach", override)
    )
    assert {"teacher_point", "teacher_pair"} <= set(jobs)
