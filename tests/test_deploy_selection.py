"""Which run is deployed (rule deploy_best): the calibrated runs of ONE MOS ratio are compared by
their select-part SRCC (deploy.ratio, default the largest of calibration.ratios), never runs of
different ratios, whose select parts differ in size; never test data. The selection (runs
compared, select SRCC, select n, the chosen one) is recorded in the artifact and in
deploy/selection.csv, which `rule all` builds and the report shows (category "Deploy")."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml
from workflow_helpers import ROOT, planned_job_resources, snakemake, write_override

from leaf.config_checks import ConfigError
from leaf.deploy import (
    ARTIFACT_FORMAT,
    ARTIFACT_VERSION,
    ArtifactError,
    deploy_best_step,
    pick_best,
    read_artifact,
)
from leaf.experiments import Plan

# A 10 % run whose select SRCC (on 5 select images) beats every 30 % run's (on 15): the old
# rule (max select SRCC over all ratios) deployed it.
RUNS = [
    {"seed": 0, "ratio": 0.1, "select_srcc": 0.95, "select_mse": 0.10, "n_select": 5},
    {"seed": 0, "ratio": 0.3, "select_srcc": 0.71, "select_mse": 0.40, "n_select": 15},
    {"seed": 1, "ratio": 0.1, "select_srcc": 0.60, "select_mse": 0.50, "n_select": 5},
    {"seed": 1, "ratio": 0.3, "select_srcc": 0.78, "select_mse": 0.30, "n_select": 15},
    {"seed": 2, "ratio": 0.3, "select_srcc": 0.74, "select_mse": 0.20, "n_select": 15},
]
CANDIDATES = [{"stage": "calibrate", **run} for run in RUNS]


def test_the_old_rule_would_deploy_the_10_percent_run():
    """The case is the one the rule change is about: across ratios the 10 % run wins."""
    across_ratios = max(range(len(RUNS)), key=lambda i: RUNS[i]["select_srcc"])
    assert RUNS[across_ratios]["ratio"] == 0.1


def test_best_is_chosen_within_one_ratio():
    assert pick_best(CANDIDATES, 0.3) == 3  # seed 1 at 30 %, not the 10 % run's 0.95
    assert pick_best(CANDIDATES, 0.1) == 0
    with pytest.raises(ArtifactError, match="no calibrated candidate at MOS ratio 0.5"):
        pick_best(CANDIDATES, 0.5)
    with pytest.raises(ArtifactError, match="must be > 0"):
        pick_best(CANDIDATES, 0.0)


def _write_candidates(folder) -> list[str]:
    """Minimal artifacts (read_artifact checks format and version; deploy_best_step reads only
    the provenance) of RUNS, as rule deploy names them."""
    paths = []
    for run in CANDIDATES:
        path = folder / f"lite0_seed{run['seed']}_ratio{run['ratio']:g}.leaf.pt"
        provenance = {**run, "test_srcc": 0.99 if run["ratio"] == 0.1 else 0.1}
        artifact = {"format": ARTIFACT_FORMAT, "version": ARTIFACT_VERSION}
        torch.save({**artifact, "provenance": provenance}, path)
        paths.append(str(path))
    return paths


def test_deploy_best_records_the_runs_compared(tmp_path):
    candidates = _write_candidates(tmp_path)
    best, table = tmp_path / "best.leaf.pt", tmp_path / "selection.csv"
    deploy_best_step(candidates, str(best), ratio=0.3, selection=str(table))

    provenance = read_artifact(best)["provenance"]
    assert (provenance["seed"], provenance["ratio"]) == (1, 0.3)
    selection = provenance["selection"]
    assert selection["ratio"] == 0.3 and selection["chosen"] == "lite0_seed1_ratio0.3.leaf.pt"
    assert "one MOS ratio" in selection["criterion"]
    compared = [
        (run["seed"], run["select_srcc"], run["n_select"]) for run in selection["candidates"]
    ]
    assert compared == [(0, 0.71, 15), (1, 0.78, 15), (2, 0.74, 15)]  # the 10 % runs are not

    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["artifact"] for row in rows] == [
        "lite0_seed0_ratio0.3.leaf.pt",
        "lite0_seed1_ratio0.3.leaf.pt",
        "lite0_seed2_ratio0.3.leaf.pt",
    ]
    assert [row["chosen"] for row in rows] == ["False", "True", "False"]
    assert {row["n_select"] for row in rows} == {"15"} and rows[1]["select_srcc"] == "0.78"


@pytest.fixture()
def demo_config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_deploy_ratio_defaults_to_the_largest_trained_ratio(demo_config):
    assert demo_config["calibration"]["ratios"] == [0.0, 0.1, 0.3]
    plan = Plan(demo_config)
    assert plan.deploy_ratio() == 0.3
    assert plan.deploy_runs() == [(0, "0.3"), (1, "0.3"), (2, "0.3")]
    assert "results/demo/deploy/selection.csv" in plan.configured_targets()

    demo_config["deploy"]["ratio"] = 0.1
    assert Plan(demo_config).deploy_runs() == [(0, "0.1"), (1, "0.1"), (2, "0.1")]
    demo_config["deploy"]["ratio"] = 0.2  # not trained
    with pytest.raises(ConfigError, match="deploy.ratio is 0.2"):
        Plan(demo_config).configured_targets()
    demo_config["deploy"]["ratio"] = None
    demo_config["calibration"]["ratios"] = [0.0]
    assert not any("deploy" in path for path in Plan(demo_config).configured_targets())
    with pytest.raises(ConfigError, match="no ratio > 0"):
        Plan(demo_config).deploy_ratio()


def test_rule_all_deploys_from_the_deploy_ratio_only(tmp_path):
    """Dry run of `rule all` (.test config: seeds 0 and 1, ratios 0, 0.1, 0.3): one deploy job
    per seed, all at 0.3; with deploy.ratio 0.1, all at 0.1."""
    test_config = ROOT / ".test" / "config" / "config.yaml"

    def deployed(configfiles):
        jobs = planned_job_resources(tmp_path, configfiles=configfiles)
        assert sum(rule == "deploy_best" for rule, _, _ in jobs) == 1
        return sorted((w["seed"], w["ratio"]) for rule, w, _ in jobs if rule == "deploy")

    assert deployed([test_config]) == [("0", "0.3"), ("1", "0.3")]
    override = write_override(tmp_path / "ratio.yaml", {"deploy": {"ratio": 0.1}})
    assert deployed([test_config, override]) == [("0", "0.1"), ("1", "0.1")]


def test_the_report_shows_the_deploy_selection(tmp_path):
    """`snakemake --report` for selection.csv (a stand-in file: the report only reads it)
    lists it under "Deploy" with its caption, rendered with the deploy ratio."""
    table = tmp_path / "results" / "demo" / "deploy" / "selection.csv"
    table.parent.mkdir(parents=True)
    table.write_text("artifact,seed,ratio,select_srcc,select_mse,n_select,chosen\n")
    report = tmp_path / "report.html"
    target = "results/demo/deploy/selection.csv"
    test_config = ROOT / ".test" / "config" / "config.yaml"
    snakemake(tmp_path, "--report", str(report), target, configfiles=[test_config])
    html = report.read_text()
    assert f'var categories = {{"Deploy": {{"Other": ["{target}"]}}}}' in html
    assert "Deploy selection" in html and "at MOS ratio 0.3" in html  # the caption
