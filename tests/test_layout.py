"""The path layout (leaf.layout) is the one definition the rules, the plan and the report share:
every planned job's outputs, log and benchmark are the layout's patterns filled with the job's
wildcards, the plan names those same files, and the report maps each benchmark to its rule."""

from __future__ import annotations

import re

import pytest
from workflow_helpers import ROOT, planned_job_blocks

from leaf import layout
from leaf.experiments import Plan, merged_config
from leaf.report_results import stage_of

# A value of every field, as the workflow writes it.
EXAMPLE_FIELDS = {
    "dataset": "agiqa3k",
    "backbone": "tf_efficientnet_lite0",
    "teacher_hash": "0123456789ab",
    "images_key": "abcdef012345",
    "pairs_key": "543210fedcba",
    "variant": "point-pair-conf",
    "seed": "3",
    "ratio": "0.1",
    "shard": "0",
    "n_shards": "4",
    "table": "table2",
    "short_side": "256",
}
CONFIGS = {
    "demo": [],
    "test-full": [".test/config/config.yaml", ".test/config_full/config.yaml"],
}


def fields_of(pattern: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", pattern))


def test_every_field_of_the_layout_is_a_wildcard_or_filled_by_the_rules():
    patterns = [*layout.RESULT_FILES.values(), *layout.CACHE_FILES.values()]
    used = set().union(*(fields_of(p) for p in [*patterns, *layout.JOB_FILES.values()]))
    assert used == set(layout.WILDCARDS) | {"short_side"}
    assert set(EXAMPLE_FIELDS) == used


@pytest.mark.parametrize("rule", sorted(layout.JOB_FILES))
@pytest.mark.parametrize("kind", ["log", "benchmark"])
def test_each_job_file_matches_its_rule_and_no_other(rule, kind):
    path = layout.job_file(kind, rule).format(**EXAMPLE_FIELDS)
    relative = path.split("/", 1)[1]  # below logs/ or benchmarks/
    assert layout.job_rules(relative, kind) == [rule]
    if kind == "benchmark":
        assert stage_of(relative) == rule


def test_fill_keeps_the_fields_it_is_not_given():
    pattern = layout.RESULT_FILES["image_cache"]
    assert layout.fill(pattern, short_side=64) == "{dataset}/image_cache/short64.npy"
    assert layout.fill(pattern) == pattern


def test_pattern_regex_refuses_what_the_wildcards_refuse():
    regex = layout.pattern_regex(layout.JOB_FILES["evaluate"])
    assert regex.fullmatch("d/eval_b/0123456789ab/point-pair/seed0_ratio0.1")
    assert not regex.fullmatch("d/eval_b/XYZ/point-pair/seed0_ratio0.1")  # not a hash
    assert not regex.fullmatch("d/eval_b/0123456789ab/conf/seed0_ratio0.1")  # not a variant


def layout_files(plan: Plan, wildcards: dict[str, str]) -> set[str]:
    """Every result and cache file the layout gives for these wildcards (and the config's
    decoded-image cache size)."""
    fields = {**wildcards, "short_side": plan.config["student"]["full"]["cache_short_side"]}
    files = set()
    for name, pattern in layout.RESULT_FILES.items():
        if fields_of(pattern) <= set(fields):
            files.add(plan.result_file(name, **fields))
    for name, pattern in layout.CACHE_FILES.items():
        if fields_of(pattern) <= set(fields):
            files.add(plan.cache_file(name, **fields))
    return files


@pytest.mark.slow
@pytest.mark.parametrize("configs", CONFIGS.values(), ids=CONFIGS.keys())
def test_planned_jobs_write_where_the_layout_says(configs, tmp_path):
    configfiles = [ROOT / path for path in configs]
    plan = Plan(merged_config([ROOT / "config" / "config.yaml", *configfiles]))
    hf_card = plan.result_file("model_folder_card", dataset=plan.benchmark_datasets()[0])
    jobs = planned_job_blocks(tmp_path, "--forceall", configfiles=configfiles)
    jobs += planned_job_blocks(tmp_path, "--forceall", hf_card, configfiles=configfiles)
    rules = {job["rule"] for job in jobs}
    # Every rule under results_dir (all of them but the demo's generator) was planned.
    assert rules == {*layout.JOB_FILES, "all", "demo_dataset"} - (
        {"features"} if plan.config["student"]["mode"] == "full" else {"image_cache"}
    )
    for job in jobs:
        rule, wildcards = job["rule"], job["wildcards"]
        if rule in ("all", "demo_dataset"):
            continue
        # Outputs: the layout's files of the job's wildcards.
        assert set(job["output"]) <= layout_files(plan, wildcards), rule
        # Log and benchmark: the rule's job files, which the report maps back to the rule.
        for kind, folder in (("log", "logs"), ("benchmark", "benchmarks")):
            (path,) = job[kind]
            prefix = f"{plan.results}/{folder}/"
            assert path.startswith(prefix), (rule, path)
            assert layout.job_rules(path.removeprefix(prefix), kind) == [rule], path
        assert stage_of(job["benchmark"][0].removeprefix(f"{plan.results}/benchmarks/")) == rule
        # The plan's own paths of the job: what the tables, the report and deploy read.
        run = [wildcards.get(key) for key in ("dataset", "backbone", "teacher_hash", "variant")]
        run_id = [wildcards.get("seed"), wildcards.get("ratio", "0")]
        if rule in ("distill", "calibrate"):
            model, history = sorted(job["output"], key=lambda path: path.endswith(".csv"))
            assert plan.student_model(*run, *run_id) == model
            assert plan.student_file("history", *run, *run_id) == history
        if rule == "evaluate":
            assert plan.eval_file(*run, *run_id) in job["output"]
        if rule == "evaluate_cft":
            assert plan.cft_eval_file(*run[:2], *run_id) in job["output"]
        if rule == "teacher_zero_shot":
            teacher = plan.teacher_by_hash(wildcards["teacher_hash"])
            assert job["output"] == [plan.teacher_eval_file(wildcards["dataset"], teacher)]
        if rule == "deploy_best":
            assert plan.deploy_selection_file(wildcards["dataset"]) in job["output"]
    (all_job,) = [job for job in jobs if job["rule"] == "all"]
    assert sorted(all_job["input"]) == sorted(plan.configured_targets())
    (curves,) = [job for job in jobs if job["rule"] == "training_curves"]
    assert sorted(curves["input"]) == sorted(path for path, _ in plan.training_histories()[1])
