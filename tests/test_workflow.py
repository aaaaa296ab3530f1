"""The real workflow, end to end on a small demo: every table and figure, the report, and
teacher-cache reuse.

One complete run of `rule all` (module fixture) plus `snakemake --report`, then dry runs with
changed configs: changing seeds, ratios, lambdas, tau or the student backbone must plan zero
teacher jobs; changing what the teacher is asked must plan them again.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from workflow_helpers import ROOT, TEACHER_RULES, planned_jobs, snakemake

from leaf.experiments import Plan, merged_config

pytestmark = pytest.mark.slow

E2E_CONFIG = ROOT / ".test" / "config" / "config.yaml"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e")
    snakemake(workdir, configfiles=[E2E_CONFIG])  # rule all: every configured table and figure
    snakemake(workdir, "--report", "results/report.html", configfiles=[E2E_CONFIG])
    return workdir


def e2e_plan() -> Plan:
    return Plan(merged_config([ROOT / "config" / "config.yaml", E2E_CONFIG]))


def _override(workdir, name, content):
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(content))
    return [E2E_CONFIG, path]


def test_table1_has_one_row_per_setting(finished_run):
    table = pd.read_csv(finished_run / "results" / "table1.csv")
    assert list(table["setting"]) == [
        "teacher zero-shot",
        "label-free",
        "10% MOS",
        "30% MOS",
        "CFT-only 10% MOS",
        "CFT-only 30% MOS",
    ]
    assert (table["dataset"] == "demo").all() and (table["plcc_kind"] == "raw").all()
    assert list(table["n_seeds"]) == [1, 2, 2, 2, 2, 2]
    for column in ("srcc_mean", "plcc_mean"):
        assert table[column].between(-1, 1).all()
    # A real signal: the calibrated student correlates with the synthetic MOS.
    assert table.loc[table["setting"] == "30% MOS", "srcc_mean"].item() > 0.3


def test_table3_ablation_rows_are_separate_runs(finished_run):
    table = pd.read_csv(finished_run / "results" / "table3.csv")
    assert list(table["setting"]) == [
        "CFT-only",
        "point",
        "point+pair",
        "pair+confidence",
        "point+pair+confidence",
    ]
    assert (table["ratio"] == 0.1).all() and (table["n_seeds"] == 2).all()
    # Different stage-1 losses give different students.
    assert table["srcc_mean"].round(6).nunique() == len(table)
    # The full-loss row is the main 10% run of table 1 (the same files, computed once).
    table1 = pd.read_csv(finished_run / "results" / "table1.csv").set_index("setting")
    full = table.set_index("setting").loc["point+pair+confidence", "srcc_mean"]
    assert full == pytest.approx(table1.loc["10% MOS", "srcc_mean"])
    plan = e2e_plan()
    main = finished_run / plan.student_dir("demo", plan.backbone, plan.teacher.hash, "_")
    assert {p.name for p in main.parent.iterdir()} == {
        "point",
        "point-pair",
        "pair-conf",
        "point-pair-conf",
    }


def test_table4_is_the_teacher_backbone_grid(finished_run):
    table = pd.read_csv(finished_run / "results" / "table4.csv", keep_default_na=False)
    zero_shot = table[table["setting"] == "teacher zero-shot"]
    assert list(zero_shot["teacher"]) == ["BRISQUE", "BRISQUE-sharp"]
    cells = table[table["setting"] == "10% MOS"]
    assert sorted(zip(cells["teacher"], cells["backbone"], strict=True)) == [
        ("BRISQUE", "tf_efficientnet_lite0"),
        ("BRISQUE", "tf_efficientnet_lite1"),
        ("BRISQUE-sharp", "tf_efficientnet_lite0"),
        ("BRISQUE-sharp", "tf_efficientnet_lite1"),
    ]
    # The two BRISQUE mappings are different teachers (own caches, own zero-shot PLCC).
    assert zero_shot["plcc_mean"].round(6).nunique() == 2


def test_figures_and_report(finished_run):
    results = finished_run / "results"
    for name in ("fig2.png", "fig4.png"):
        assert (results / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (results / "fig4.svg").read_text().lstrip().startswith("<?xml")
    fig4 = pd.read_csv(results / "fig4.csv")
    assert sorted(fig4.loc[fig4["method"] == "LEAF", "ratio"]) == [0, 0.05, 0.1, 0.2, 0.3, 0.5, 1]
    stats = json.loads((results / "fig2.json").read_text())
    assert stats["n_test"] > 0 and stats["mean_abs_residual_after"] > 0
    caption = (results / "fig2_caption.rst").read_text()
    assert f"{stats['plcc']:.3f}" in caption
    # Training curves of the main runs: stage 1 per seed, stage 2 per (seed, ratio > 0), from
    # the per-run history CSVs next to the checkpoints.
    curves = pd.read_csv(results / "training_curves.csv")
    assert set(curves["stage"]) == {"distill", "calibrate"}
    assert curves.groupby("stage")["seed"].nunique().to_dict() == {"calibrate": 2, "distill": 2}
    assert (curves.groupby(["stage", "seed", "ratio"])["chosen"].sum() == 1).all()
    report = (results / "report.html").read_text()
    assert report.lstrip().lower().startswith("<!doctype html")
    names = ("table1.csv", "table3.csv", "table4.csv", "fig2.png", "fig4.png", "training_curves")
    for name in names:
        assert name in report, f"{name} missing from the report"
    # The deploy selection (rule all builds it): the seeds' runs at the largest ratio, 0.3.
    assert '"Deploy": {"Other": ["results/demo/deploy/selection.csv"]}' in report
    selection = pd.read_csv(results / "demo" / "deploy" / "selection.csv")
    assert list(selection["seed"]) == [0, 1] and set(selection["ratio"]) == {0.3}
    assert selection["chosen"].sum() == 1 and (selection["n_select"] > 0).all()
    # The generated fig2 caption (residuals, PLCC) is included in the report's caption.
    assert "mean absolute residual" in report.lower() or "residual" in report


def test_unconfigured_table_is_a_clear_error(finished_run):
    result = snakemake(
        finished_run,
        "-n",
        "results/table3.csv",
        configfiles=_override(finished_run, "no_table3", {"tables": {"stage1_ablation": None}}),
        check=False,
    )
    assert result.returncode != 0
    assert "`tables.stage1_ablation` is not in the config" in result.stdout + result.stderr


def test_caches_are_inspectable_parquet(finished_run):
    results = finished_run / "results" / "demo"
    manifest = pd.read_parquet(results / "manifest.parquet")
    assert {"image_id", "path", "mos", "width", "height", "sha256"} <= set(manifest.columns)
    assert len(list((results / "teacher").iterdir())) == 2  # BRISQUE and BRISQUE-sharp
    teacher_dir = results / "teacher" / e2e_plan().teacher.hash
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
    assert planned_jobs(finished_run, configfiles=[E2E_CONFIG]) == {}


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
    jobs = planned_jobs(finished_run, configfiles=_override(finished_run, change, override))
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
    jobs = planned_jobs(finished_run, configfiles=_override(finished_run, "teach", override))
    assert {"teacher_point", "teacher_pair"} <= set(jobs)


def test_model_folder_reports_the_chosen_runs_test_scores(finished_run):
    """The target next to best.leaf.pt: its model folder, whose card reports the test SRCC/PLCC
    of the chosen run from that run's evaluation file, and which scores as best.leaf.pt."""
    import leaf

    snakemake(finished_run, "results/demo/deploy/best-hf/README.md", configfiles=[E2E_CONFIG])
    deploy = finished_run / "results" / "demo" / "deploy"
    provenance = json.loads((deploy / "best-hf" / "config.json").read_text())["provenance"]
    assert provenance["selection"]["chosen"] and provenance["teacher"]["name"] == "BRISQUE"
    assert provenance["ratio"] == provenance["selection"]["ratio"] == 0.3  # deploy.ratio: null
    plan = e2e_plan()
    evaluation = plan.eval_file(
        "demo",
        plan.backbone,
        plan.teacher.hash,
        plan.variant,
        provenance["seed"],
        provenance["ratio"],
    )
    metrics = json.loads((finished_run / evaluation).read_text())
    card = (deploy / "best-hf" / "README.md").read_text()
    assert f"| Test SRCC | {metrics['srcc']:.4f} |" in card
    assert f"| Test PLCC (raw) | {metrics['plcc']:.4f} |" in card
    assert "model-index:" in card
    image = sorted((finished_run / "resources" / "demo").rglob("*.png"))[0]
    scores = [
        leaf.create_metric(deploy / name, device="cpu")(image).item()
        for name in ("best.leaf.pt", "best-hf")
    ]
    assert scores[0] == scores[1]
