"""Every job that needs a GPU asks for one, under every profile, for every shipped config.

Each config under config/ (the demo, the AGIQA-3K ones, each paper file alone and all of them
with paper/all.yaml) is planned by Snakemake itself (a dry run) under each profile in
workflow/profiles/. From the resources Snakemake assigns to each planned job: a job that runs an
MLLM asks for its GPUs (a vLLM teacher shard: the engine's tensor_parallel_size; a CUDA
transformers shard: one); a job that trains or evaluates a fine-tuned backbone (a student stage
in full mode) asks for exactly one; every other job asks for none. The SLURM profile's partition
file then sends exactly the GPU jobs to the GPU partition (through the SLURM plugin's own
partition selection).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from workflow_helpers import ROOT, planned_job_resources, shipped_config_sets

from leaf.experiments import Plan, merged_config
from leaf.teacher.presets import PRESETS

pytestmark = pytest.mark.slow

CONFIG = ROOT / "config"
PROFILES = sorted(p for p in (ROOT / "workflow" / "profiles").iterdir() if p.is_dir())
SHARED = (ROOT / ".." / "shared").resolve()
STUDENT_STAGES = {"distill", "calibrate", "calibrate_cft", "evaluate", "evaluate_cft"}
TEACHER_SHARDS = {"teacher_point", "teacher_pair"}


def test_every_config_file_is_planned():
    """A new config under config/ is picked up by shipped_config_sets (none is forgotten)."""
    planned = {path for files in shipped_config_sets().values() for path in files}
    shipped = {p for p in CONFIG.rglob("*.yaml") if p.name != "config.yaml"}
    assert shipped <= planned, shipped - planned


def reads_shared(files: list[Path]) -> bool:
    return any("../shared" in path.read_text() for path in files)


def expected_gpus(rule: str, wildcards: dict[str, str], config: dict, plan: Plan) -> int:
    """The GPUs a job must ask for, from what it runs (not from the profile): a vLLM teacher
    shard its engine's tensor_parallel_size (explicit, else its preset's, else 1), a CUDA
    transformers shard 1, a full-mode student stage 1, everything else 0."""
    if rule in TEACHER_SHARDS:
        teacher = plan.teacher_by_hash(wildcards["teacher_hash"]).config
        options = teacher.get(teacher["backend"]) or {}
        if teacher["backend"] == "vllm":
            preset = PRESETS.get(options.get("preset"), {})
            return int(options.get("tensor_parallel_size") or preset.get("tensor_parallel_size", 1))
        if teacher["backend"] == "transformers":
            return 0 if str(options.get("device", "cpu")) == "cpu" else 1
        return 0
    if rule in STUDENT_STAGES and config["student"].get("mode", "head") == "full":
        return 1
    return 0


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
@pytest.mark.parametrize("name", sorted(shipped_config_sets()))
def test_gpu_jobs_ask_for_gpus_and_no_other_job_does(name, profile):
    files = shipped_config_sets()[name]
    if reads_shared(files) and not SHARED.is_dir():
        pytest.skip(f"{name} reads ../shared, which is absent")
    config = merged_config([CONFIG / "config.yaml", *files])
    plan = Plan(config)
    # Planned from the repository root, where the configs' relative paths (../shared/...) and
    # the profiles' partition file resolve; --forceall plans every job, done or not.
    jobs = planned_job_resources(
        ROOT, "--workflow-profile", str(profile), "--forceall", configfiles=files
    )
    assert jobs, "the dry run planned no job"
    wrong = []
    for rule, wildcards, resources in jobs:
        if rule == "all":
            continue
        asked = int(resources.get("gpu", "0"))
        expected = expected_gpus(rule, wildcards, config, plan)
        if asked != expected:
            wrong.append(f"{rule} {wildcards}: gpu={asked}, expected {expected}")
    assert not wrong, "\n".join(wrong[:20])
    rules = {rule for rule, _, _ in jobs}
    if config["student"].get("mode") == "full":
        assert STUDENT_STAGES & rules, "a full-mode config planned no student stage"
    if name in ("paper/agiqa3k", "paper/all"):  # the tensor-parallel table-4 teachers
        assert any(int(r.get("gpu", 0)) == 2 for rule, _, r in jobs if rule in TEACHER_SHARDS)


def partition_file(profile: Path) -> Path | None:
    settings = yaml.safe_load((profile / "config.yaml").read_text())
    value = settings.get("slurm-partition-config")
    return ROOT / value if value else None


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_slurm_partitions_send_gpu_jobs_to_gpu_partitions(profile):
    """The SLURM plugin's partition selection with the profile's partition file: a job that asks
    for GPUs lands on a GPU partition, a CPU job on a CPU partition."""
    path = partition_file(profile)
    if path is None:
        pytest.skip(f"{profile.name} selects no SLURM partitions")
    from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file

    partitions = read_partition_file(path)
    gpu_partitions = {p.name for p in partitions if p.limits.max_gpu > 0}
    cpu_partitions = {p.name for p in partitions if p.limits.max_gpu == 0}
    assert gpu_partitions and cpu_partitions
    logger = SimpleNamespace(info=lambda *a: None, debug=lambda *a: None, warning=print)

    def job(gpu: int, mem_mb: int, runtime: int, threads: int):
        resources = {"gpu": gpu, "mem_mb": mem_mb, "runtime": runtime, "cpus_per_gpu": 4}
        return SimpleNamespace(resources=resources, threads=threads, name="job")

    for gpu in (1, 2, 4):  # a teacher with tensor_parallel_size 1, 2, 4; full-mode training
        assert get_best_partition(partitions, job(gpu, 32000, 240, 2), logger) in gpu_partitions
    for mem_mb, runtime in ((2000, 30), (16000, 480)):
        chosen = get_best_partition(partitions, job(0, mem_mb, runtime, 2), logger)
        assert chosen in cpu_partitions
