"""docs/results.md rendering (leaf.report_results) and the result tables (results_table_step)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import ROOT

from leaf import report_results as report
from leaf.experiments import Plan, merged_config
from leaf.tables import results_table_step


def write_benchmark(path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:01\t10.0\n")


@pytest.mark.parametrize(
    ("relative", "stage"),
    [
        ("agiqa3k/prepare.tsv", "prepare"),
        ("agiqa3k/subsets_seed3.tsv", "subsets"),
        ("agiqa3k/pairs.tsv", "pairs"),
        ("agiqa3k/features_tf_efficientnet_lite0.tsv", "features"),
        ("agiqa3k/image_cache_short256.tsv", "image_cache"),
        ("agiqa3k/student_lite0/0123456789ab/point-pair-conf/distill_seed0.tsv", "distill"),
        ("agiqa3k/student_lite0/0123456789ab/point/calibrate_seed4_ratio0.1.tsv", "calibrate"),
        ("agiqa3k/student_convnext_base/cft_seed4_ratio0.3.tsv", "calibrate_cft"),
        ("agiqa3k/eval_lite0/0123456789ab/pair-conf/seed1_ratio0.1.tsv", "evaluate"),
        ("agiqa3k/eval_tf_efficientnet_lite0/cft_seed0_ratio0.1.tsv", "evaluate_cft"),
        ("images-0123456789ab/teacher_0123456789ab/point_0-of-4.tsv", "teacher_point"),
        ("agiqa3k/teacher_0123456789ab/merge_points.tsv", "merge_points"),
        ("agiqa3k/teacher_0123456789ab/zero_shot.tsv", "teacher_zero_shot"),
        ("agiqa3k/deploy/lite0_seed0_ratio0.1.tsv", "deploy"),
        ("agiqa3k/deploy/best.tsv", "deploy_best"),
        ("agiqa3k/deploy/best-hf.tsv", "model_folder"),
        ("table1.tsv", "results_table"),
        ("fig4.tsv", "fig4"),
        # Older layouts (no teacher hash and variant in the run's path), other files: no rule.
        ("agiqa3k/student_tf_efficientnet_lite0/distill_seed0.tsv", report.OTHER_STAGE),
        ("agiqa3k/eval_tf_efficientnet_lite0/seed0_ratio0.tsv", report.OTHER_STAGE),
        ("agiqa3k/teacher_0123456789ab/point_0-of-4.tsv", report.OTHER_STAGE),
        ("agiqa3k/prepare.log", report.OTHER_STAGE),
    ],
)
def test_stage_of_names_the_rule_of_a_benchmark_file(relative, stage):
    assert report.stage_of(relative) == stage


def test_stage_times_sums_jobs_of_a_stage(tmp_path):
    run = tmp_path / "d/student_b/0123456789ab/point-pair"
    write_benchmark(run / "distill_seed0.tsv", 2.0)
    write_benchmark(run / "distill_seed1.tsv", 3.5)
    write_benchmark(tmp_path / "d/features_b.tsv", 100.0)
    times = report.stage_times(tmp_path)
    assert times["stage"].tolist() == ["features", "distill"]  # largest total first
    distill = times.set_index("stage").loc["distill"]
    assert (distill["jobs"], distill["total_s"], distill["max_s"]) == (2, 5.5, 3.5)
    assert "| **sum** | 3 | 105.5 | |" in report.times_table(times)


def test_seed_gaps_pairs_leaf_and_cft_runs_of_each_seed(tmp_path):
    leaf, cft = {}, {}
    for seed, leaf_srcc, cft_srcc in [(0, 0.80, 0.75), (1, 0.79, 0.78), (2, 0.70, None)]:
        leaf[seed] = tmp_path / f"seed{seed}.json"
        leaf[seed].write_text(json.dumps({"srcc": leaf_srcc}))
        cft[seed] = tmp_path / f"cft_seed{seed}.json"
        if cft_srcc is not None:  # seed 2 has no CFT run: left out
            cft[seed].write_text(json.dumps({"srcc": cft_srcc}))
    gaps = report.seed_gaps(leaf, cft)
    assert gaps["seed"].tolist() == [0, 1]
    assert gaps["gap"].round(6).tolist() == [0.05, 0.01]
    assert "by >= 0.03 SRCC in 1 of 2 seeds" in report.gaps_table(gaps, 0.1)


def table_row(setting: str, srcc: float, std: float, n: int, teacher: str = "T") -> dict:
    return {
        "dataset": "agiqa3k",
        "teacher": teacher,
        "setting": setting,
        "srcc_mean": srcc,
        "srcc_std": std,
        "plcc_mean": srcc + 0.05,
        "plcc_std": std,
        "n_seeds": n,
    }


def test_render_block_and_replace_keep_the_hand_written_text(tmp_path):
    table = pd.DataFrame(
        [
            table_row("teacher zero-shot", 0.6781, float("nan"), 1, "mPLUG-Owl"),
            table_row("10% MOS", 0.8, 0.0123, 5, "mPLUG-Owl"),
            table_row("CFT-only 10% MOS", 0.7, 0.02, 5, ""),
            table_row("label-free", 0.5, 0.01, 5, "Shikra"),
        ]
    )
    times = pd.DataFrame({"stage": ["features"], "jobs": [1], "total_s": [600.0], "max_s": [600.0]})
    block = report.render_block(table, times, None, 0.1, "a CPU", 725.0)
    assert "| mPLUG-Owl | agiqa3k | teacher zero-shot | 0.678 | 0.728 | 1 |" in block
    assert "| mPLUG-Owl | agiqa3k | 10% MOS | 0.800 ± 0.012 | 0.850 ± 0.012 | 5 |" in block
    assert "| — | agiqa3k | CFT-only 10% MOS | 0.700 ± 0.020 |" in block
    assert "| Shikra | agiqa3k | label-free | 0.500 ± 0.010 |" in block
    assert "Machine: a CPU." in block and "725 s (12.1 min)" in block
    assert block.startswith(report.BEGIN) and block.endswith(report.END)

    document = "# Results\n\nintro\n"
    first = report.replace_block(document, block)
    assert first.startswith(document) and first.count(report.BEGIN) == 1
    again = report.replace_block(first + "\nfooter\n", block.replace("0.800", "0.801"))
    assert again.count(report.BEGIN) == 1 and "0.801" in again and "0.800 ±" not in again
    assert again.startswith(document) and again.endswith("\nfooter\n")


def write_metrics(path, srcc: float) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"srcc": srcc, "plcc": srcc + 0.05, "plcc_logistic": srcc}))
    return str(path)


def test_main_updates_the_document_from_the_run_configs(tmp_path):
    """Tables 1 and 4 (AIGC comparison, teacher x backbone grid) and the per-seed gaps are
    found from the config files alone."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    overlay = {
        "results_dir": str(tmp_path / "results"),
        "seeds": [0, 1],
        "tables": {
            "teacher_backbone_grid": {"teachers": ["BRISQUE", "BRISQUE-sharp"], "ratios": [0.1]}
        },
    }
    files = [ROOT / "config" / "config.yaml", tmp_path / "overlay.yaml"]
    files[1].write_text(yaml.safe_dump(overlay))
    plan = Plan(merged_config(files))
    assert plan.results == str(tmp_path / "results") and plan.seeds == [0, 1]
    # nested keys merged, not replaced
    assert config["tables"]["aigc_comparison"] == plan.tables["aigc_comparison"]
    for key, file in (("aigc_comparison", "table1"), ("teacher_backbone_grid", "table4")):
        rows = plan.table_rows(key)
        metrics = [write_metrics(Path(path), 0.6 + 0.1 * (row["seed"] == 1)) for path, row in rows]
        results_table_step(metrics, f"{plan.results}/{file}.csv", [r for _, r in rows], "raw")
    write_benchmark(tmp_path / "results/benchmarks/demo/prepare.tsv", 1.5)
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n")
    report.main(["--doc", str(doc), "--configfile", *map(str, files), "--machine", "M"])
    text = doc.read_text()
    assert "| BRISQUE | demo | label-free | 0.650 ± 0.071 |" in text
    assert "| — | demo | CFT-only 10% MOS | 0.650 ± 0.071 |" in text
    assert "| BRISQUE-sharp | demo | teacher zero-shot | 0.600 |" in text
    # table4's rows of the main teacher are already in table1: not repeated.
    assert text.count("| BRISQUE | demo | teacher zero-shot |") == 1
    assert "LEAF beats CFT-only at 10% MOS by >= 0.03 SRCC in 0 of 2 seeds" in text
    assert "| prepare | 1 | 1.5 | 1.5 |" in text and "PLCC: raw." in text


def test_results_table_step_aggregates_seeds_and_labels_the_plcc(tmp_path):
    metrics, rows = [], []
    for seed, srcc in enumerate([0.5, 0.7]):
        metrics.append(write_metrics(tmp_path / f"cft_seed{seed}.json", srcc))
        rows.append({"dataset": "d", "setting": "CFT-only 10% MOS", "ratio": 0.1, "seed": seed})
    out = tmp_path / "table.csv"
    results_table_step(metrics, str(out), rows, "logistic")
    table = pd.read_csv(out)
    assert table["setting"].tolist() == ["CFT-only 10% MOS"]
    assert table["srcc_mean"].round(6).tolist() == [0.6] and table["n_seeds"].tolist() == [2]
    # logistic: the plcc_logistic values (here equal to srcc), labelled as such.
    assert table["plcc_mean"].round(6).tolist() == [0.6]
    assert table["plcc_kind"].tolist() == ["VQEG logistic"]
    results_table_step(metrics, str(out), rows, "raw")
    assert pd.read_csv(out)["plcc_mean"].round(6).tolist() == [0.65]
    with pytest.raises(ValueError, match="2 metrics files for 1 row"):
        results_table_step(metrics, str(out), rows[:1], "raw")
