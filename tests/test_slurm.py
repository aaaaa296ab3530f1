"""The demo through the SLURM profile on a real (one-node, localhost) SLURM cluster.

The profile template (workflow/profiles/slurm) is copied as a user would: the CHANGE_ME
partitions of its partition file become the test cluster's partition and the account line is
dropped (no accounting database). Every job, the two teacher shards included, must be a separate
SLURM job, and the table must equal the one of a local run (the workflow is deterministic on CPU).
Needs root and `make slurm-setup`; skipped otherwise, except under CI=true where it fails.
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from slurm_cluster import missing_requirements, slurm_cluster
from workflow_helpers import ROOT, planned_jobs, snakemake

pytestmark = pytest.mark.slow

SLURM_PROFILE = ROOT / "workflow" / "profiles" / "slurm" / "config.yaml"
PARTITIONS = ROOT / "workflow" / "profiles" / "slurm" / "partitions.yaml"
SMALL_DEMO = ROOT / ".test" / "config" / "config.yaml"
TABLE = "results/table1.csv"
SHARDS = 2
# "Job 12 has been submitted with SLURM jobid 7 (log: /.../rule_teacher_point/<wildcards>/7.log)."
LOCALRULES = re.compile(r"^localrules:\n((?:[ \t]+\w+,?\n)+)", re.MULTILINE)
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")
# The test node is sized like a GPU node that fits every request of the template
# (slurmd trusts the declared size; the jobs themselves are small).
NODE_CPUS = 8
NODE_MEM_MB = 64000


@pytest.fixture(scope="module")
def cluster():
    reason = missing_requirements()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no SLURM test cluster: {reason}")
        pytest.skip(reason)
    with slurm_cluster(cpus=NODE_CPUS, mem_mb=NODE_MEM_MB) as running:
        pids = running.pids()
        yield running
    assert set(pids) == {"munged", "slurmctld", "slurmd"}
    alive = {name: pid for name, pid in pids.items() if Path(f"/proc/{pid}").exists()}
    assert not alive, f"daemons still running after the cluster stopped: {alive}"


def cluster_profile(cluster, folder: Path) -> Path:
    """The SLURM profile template filled in for ``cluster``, written to ``folder``."""
    profile = yaml.safe_load(SLURM_PROFILE.read_text())
    for resources in [profile["default-resources"], *profile["set-resources"].values()]:
        resources.pop("slurm_account", None)
    # The test cluster has one partition (with a GPU): every entry of the partition file
    # becomes it, with the most GPUs any entry allows.
    limits = yaml.safe_load(PARTITIONS.read_text())["partitions"].values()
    partitions = {cluster.partition: {"max_gpu": max(entry["max_gpu"] for entry in limits)}}
    folder.mkdir()
    (folder / "partitions.yaml").write_text(yaml.safe_dump({"partitions": partitions}))
    profile["slurm-partition-config"] = str(folder / "partitions.yaml")
    text = yaml.safe_dump(profile, sort_keys=False)
    assert "CHANGE_ME" not in text, "a placeholder of the SLURM profile was not filled in"
    (folder / "config.yaml").write_text(text)
    return folder


def declared_localrules() -> set[str]:
    """The rules of every ``localrules:`` directive of the workflow (run by Snakemake itself)."""
    files = [ROOT / "Snakefile", *(ROOT / "workflow" / "rules").glob("*.smk")]
    names = set()
    for path in files:
        for block in LOCALRULES.findall(path.read_text()):
            names.update(name.strip().rstrip(",") for name in block.split())
    return names


def slurm_jobs(output: str) -> dict[str, list[int]]:
    """SLURM job ids per rule, from Snakemake's submission messages."""
    jobs = defaultdict(list)
    for slurm_id, log in SUBMITTED.findall(output):
        rule = next(part for part in Path(log).parts if part.startswith("rule_"))
        jobs[rule.removeprefix("rule_")].append(int(slurm_id))
    return dict(jobs)


def test_slurm_profile_has_placeholders():
    """Users must see what to edit: partition and account are placeholders, not guesses."""
    profile = yaml.safe_load(SLURM_PROFILE.read_text())
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"
    assert profile["default-resources"]["slurm_account"].startswith("CHANGE_ME")
    assert profile["slurm-partition-config"] == "profiles/slurm/partitions.yaml"
    partitions = yaml.safe_load(PARTITIONS.read_text())["partitions"]
    assert all(name.startswith("CHANGE_ME") for name in partitions)
    # GPUs are the rules' (tests/test_gpu_plan.py), never a profile's guess.
    assert not any("gpu" in resources for resources in profile["set-resources"].values())


def test_demo_on_slurm_equals_local_run(cluster, tmp_path, monkeypatch):
    config = tmp_path / "shards.yaml"
    # One seed keeps the run short; two shards show the sharding.
    config.write_text(yaml.safe_dump({"teacher": {"shards": SHARDS}, "seeds": [0]}))
    configfiles = (SMALL_DEMO, config)
    local, on_slurm = tmp_path / "local", tmp_path / "slurm"
    local.mkdir()
    on_slurm.mkdir()
    profile = cluster_profile(cluster, tmp_path / "profile")
    # Every job but the local ones (localrules: tables, merges) becomes a SLURM job.
    local_rules = declared_localrules()
    assert {"results_table", "merge_points"} <= local_rules
    planned = planned_jobs(on_slurm, TABLE, configfiles=configfiles)
    expected_jobs = {rule: n for rule, n in planned.items() if rule not in local_rules}
    # Snakemake and the jobs it submits find the test cluster through these (a local run
    # ignores them).
    for name, value in cluster.env_vars.items():
        monkeypatch.setenv(name, value)

    with ThreadPoolExecutor(1) as pool:
        # The local reference runs meanwhile: the SLURM run mostly waits for its status checks.
        local_run = pool.submit(snakemake, local, TABLE, configfiles=configfiles)
        start = time.monotonic()
        result = snakemake(
            on_slurm,
            TABLE,
            "--workflow-profile",
            str(profile),
            # Test-only: keep the SLURM logs of successful jobs and poll squeue early.
            "--slurm-keep-successful-logs",
            "--slurm-init-seconds-before-status-checks",
            "2",
            configfiles=configfiles,
        )
        print(f"SLURM run: {time.monotonic() - start:.0f} s")
        local_run.result()
    output = result.stdout + result.stderr

    jobs = slurm_jobs(output)
    print("SLURM job ids per rule:", jobs)
    # Every job of the DAG went through sbatch, each as its own SLURM job.
    assert {rule: len(ids) for rule, ids in jobs.items()} == expected_jobs
    all_ids = [slurm_id for ids in jobs.values() for slurm_id in ids]
    assert len(set(all_ids)) == len(all_ids)
    # The teacher shards: one SLURM job per shard, whose log names that shard's output.
    for rule, stem in (("teacher_point", "points"), ("teacher_pair", "pairs")):
        assert len(jobs[rule]) == SHARDS
        logs = [
            (on_slurm / ".snakemake" / "slurm_logs").rglob(f"rule_{rule}/*/{slurm_id}.log")
            for slurm_id in jobs[rule]
        ]
        texts = [next(found).read_text() for found in logs]
        for shard in range(SHARDS):
            name = f"{stem}_{shard}-of-{SHARDS}.parquet"
            assert sum(name in text for text in texts) == 1, f"{rule}: {name} not in one log"
    # No job is left in the queue.
    assert cluster.run("squeue", "--noheader", "--states=PENDING,RUNNING").strip() == ""

    local_table = (local / TABLE).read_text()
    slurm_table = (on_slurm / TABLE).read_text()
    assert slurm_table == local_table, f"local:\n{local_table}\nSLURM:\n{slurm_table}"
