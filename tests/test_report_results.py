"""docs/results.md rendering (leaf.report_results) and the CFT-only table (table1_step prefix)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from leaf import report_results as report
from leaf.tables import table1_step


def write_benchmark(path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:01\t10.0\n")


@pytest.mark.parametrize(
    ("relative", "stage"),
    [
        ("agiqa3k/prepare.tsv", "prepare"),
        ("agiqa3k/subsets_seed3.tsv", "subsets"),
        ("agiqa3k/features_tf_efficientnet_lite0.tsv", "features"),
        ("agiqa3k/student_tf_efficientnet_lite0/distill_seed0.tsv", "distill"),
        ("agiqa3k/student_convnext_base/calibrate_seed4_ratio0.1.tsv", "calibrate"),
        ("agiqa3k/student_convnext_base/cft_seed4_ratio0.3.tsv", "calibrate_cft"),
        ("agiqa3k/eval_tf_efficientnet_lite0/seed0_ratio0.tsv", "evaluate"),
        ("agiqa3k/eval_tf_efficientnet_lite0/cft_seed0_ratio0.1.tsv", "evaluate_cft"),
        ("agiqa3k/teacher_0123456789ab/point_0-of-4.tsv", "teacher point"),
        ("agiqa3k/teacher_0123456789ab/merge_points.tsv", "teacher merge_points"),
        ("table1.tsv", "table1"),
    ],
)
def test_stage_of_names_the_rule_of_a_benchmark_file(relative, stage):
    assert report.stage_of(relative) == stage


def test_stage_times_sums_jobs_of_a_stage(tmp_path):
    write_benchmark(tmp_path / "d/student_b/distill_seed0.tsv", 2.0)
    write_benchmark(tmp_path / "d/student_b/distill_seed1.tsv", 3.5)
    write_benchmark(tmp_path / "d/features_b.tsv", 100.0)
    times = report.stage_times(tmp_path)
    assert times["stage"].tolist() == ["features", "distill"]  # largest total first
    distill = times.set_index("stage").loc["distill"]
    assert (distill["jobs"], distill["total_s"], distill["max_s"]) == (2, 5.5, 3.5)
    assert "| **sum** | 3 | 105.5 | |" in report.times_table(times)


def test_seed_gaps_pairs_leaf_and_cft_runs_of_one_ratio(tmp_path):
    for name, srcc in [
        ("seed0_ratio0.1", 0.80),
        ("cft_seed0_ratio0.1", 0.75),
        ("seed1_ratio0.1", 0.79),
        ("cft_seed1_ratio0.1", 0.78),
        ("seed2_ratio0.1", 0.70),  # no CFT run: left out
        ("seed0_ratio0.3", 0.10),  # another ratio: left out
        ("cft_seed0_ratio0.3", 0.90),
    ]:
        (tmp_path / f"{name}.json").write_text(json.dumps({"srcc": srcc}))
    gaps = report.seed_gaps(tmp_path, 0.1)
    assert gaps["seed"].tolist() == [0, 1]
    assert gaps["gap"].round(6).tolist() == [0.05, 0.01]
    assert "by >= 0.03 SRCC in 1 of 2 seeds" in report.gaps_table(gaps, 0.1)


def table_row(setting: str, srcc: float, std: float, n: int) -> dict:
    return {
        "dataset": "agiqa3k",
        "setting": setting,
        "srcc_mean": srcc,
        "srcc_std": std,
        "plcc_mean": srcc + 0.05,
        "plcc_std": std,
        "n_seeds": n,
    }


def test_render_block_and_replace_keep_the_hand_written_text(tmp_path):
    tables = {
        "mPLUG-Owl": pd.DataFrame(
            [
                table_row("teacher zero-shot", 0.6781, float("nan"), 1),
                table_row("10% MOS", 0.8, 0.0123, 5),
            ]
        ),
        "Shikra": pd.DataFrame([table_row("label-free", 0.5, 0.01, 5)]),
    }
    times = pd.DataFrame({"stage": ["features"], "jobs": [1], "total_s": [600.0], "max_s": [600.0]})
    block = report.render_block(tables, times, None, 0.1, "a CPU", 725.0)
    assert "| mPLUG-Owl | agiqa3k | teacher zero-shot | 0.678 | 0.728 | 1 |" in block
    assert "| mPLUG-Owl | agiqa3k | 10% MOS | 0.800 ± 0.012 | 0.850 ± 0.012 | 5 |" in block
    assert "| Shikra | agiqa3k | label-free | 0.500 ± 0.010 |" in block
    assert "Machine: a CPU." in block and "725 s (12.1 min)" in block
    assert block.startswith(report.BEGIN) and block.endswith(report.END)

    document = "# Results\n\nintro\n"
    first = report.replace_block(document, block)
    assert first.startswith(document) and first.count(report.BEGIN) == 1
    again = report.replace_block(first + "\nfooter\n", block.replace("0.800", "0.801"))
    assert again.count(report.BEGIN) == 1 and "0.801" in again and "0.800 ±" not in again
    assert again.startswith(document) and again.endswith("\nfooter\n")


def test_main_updates_the_document_from_a_results_folder(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    pd.DataFrame([table_row("label-free", 0.7, 0.01, 5)]).to_csv(results / "table1.csv")
    pd.DataFrame([table_row("CFT-only 10% MOS", 0.6, 0.02, 5)]).to_csv(results / "table_cft.csv")
    write_benchmark(results / "benchmarks/agiqa3k/prepare.tsv", 1.5)
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n")
    report.main(
        [
            "--doc",
            str(doc),
            "--results",
            str(results),
            "--teacher",
            "T",
            "--machine",
            "M",
            "--other",
            f"missing={tmp_path / 'nowhere'}",
        ]
    )
    text = doc.read_text()
    assert "| T | agiqa3k | label-free | 0.700 ± 0.010 |" in text
    assert "| T | agiqa3k | CFT-only 10% MOS | 0.600 ± 0.020 |" in text
    assert "| prepare | 1 | 1.5 | 1.5 |" in text and "missing" not in text


def test_table1_step_prefixes_the_baseline_settings(tmp_path):
    metrics = []
    for seed, srcc in enumerate([0.5, 0.7]):
        path = tmp_path / f"cft_seed{seed}.json"
        path.write_text(json.dumps({"srcc": srcc, "plcc": srcc}))
        metrics.append(str(path))
    runs = [{"dataset": "d", "seed": seed, "ratio": "0.1"} for seed in range(2)]
    out = tmp_path / "table_cft.csv"
    table1_step(metrics, [], str(out), runs, [], setting_prefix="CFT-only ")
    table = pd.read_csv(out)
    assert table["setting"].tolist() == ["CFT-only 10% MOS"]
    assert table["srcc_mean"].round(6).tolist() == [0.6] and table["n_seeds"].tolist() == [2]
