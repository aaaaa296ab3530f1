"""Kill the real vLLM teacher midway through its shards, then resume: only missing shards rerun.

Runs the workflow with the vllm backend on the tiny offline Qwen2-VL (tests/tiny_vlm.py) and
three teacher shards, one job at a time. As soon as the first shard's cache exists, the whole
Snakemake process group is killed with SIGKILL (a node crash). Shard caches are written to a
temporary name and renamed at the end, so what is left must be complete shards only; the rerun
must plan exactly the missing shards and leave the finished one untouched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pandas as pd
import pytest
import yaml
from workflow_helpers import ROOT, planned_jobs, snakemake, snakemake_command

from leaf.teacher.cache import read_cache

pytest.importorskip(
    "vllm", reason="vLLM is not installed (pip install -e '.[vllm]'): resume test skipped"
)
pytestmark = pytest.mark.slow

N_SHARDS = 3
UNTIL = ("--until", "merge_points", "merge_pairs")


@pytest.fixture
def vllm_teacher_config(tmp_path, monkeypatch):
    from tiny_vlm import TINY_ENGINE, build_tiny_qwen2_vl

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    model = build_tiny_qwen2_vl(tmp_path / "tiny_qwen2_vl")
    override = {
        "teacher": {
            "backend": "vllm",
            "shards": N_SHARDS,
            "vllm": {"model": model, **TINY_ENGINE, "batch_size": 16},
        },
        # Only this teacher: drop the demo's second teacher (and table 4, the grid naming it), so
        # every planned or finished teacher shard below is one of the vLLM teacher's.
        "extra_teachers": {"BRISQUE-sharp": None},
        "tables": {"teacher_backbone_grid": None},
    }
    path = tmp_path / "vllm_teacher.yaml"
    path.write_text(yaml.safe_dump(override))
    return [ROOT / ".test" / "config" / "config.yaml", path]


def _finished_shards(workdir):
    """The points shards in the shared teacher cache (docs/cache_schema.md)."""
    cache = workdir / "results" / "teacher_cache"
    return sorted(cache.glob("images-*/teacher_*/points_*.parquet"))


def _job_logs(workdir):
    return set((workdir / "results" / "logs").rglob("*.log"))


def test_killed_teacher_resumes_missing_shards_only(tmp_path, vllm_teacher_config):
    workdir = tmp_path / "run"
    workdir.mkdir()
    snakemake(workdir, "--until", "prepare", configfiles=vllm_teacher_config)
    command = snakemake_command(workdir, "--cores", "1", *UNTIL, configfiles=vllm_teacher_config)
    job = subprocess.Popen(
        command,
        cwd=workdir,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while not _finished_shards(workdir):
            assert job.poll() is None, "the workflow ended before any shard finished"
            assert time.monotonic() < deadline, "no teacher shard finished in 10 minutes"
            time.sleep(0.2)
        # Snakemake records a job as complete after its process exits; a shard killed before
        # that is (rightly) rerun. Wait until the next job starts (one job at a time, so the
        # shard's job is finalised), then kill that next job midway.
        logs_before = _job_logs(workdir)
        while _job_logs(workdir) == logs_before:
            assert job.poll() is None, "the workflow ended before the next job started"
            assert time.monotonic() < deadline, "no further job started in 10 minutes"
            time.sleep(0.05)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()

    done = _finished_shards(workdir)
    assert 1 <= len(done) < N_SHARDS, f"kill came too late to test resuming: {done}"
    shard_dir = done[0].parent
    visible = [p.name for p in shard_dir.iterdir() if p.is_file() and not p.name.startswith(".")]
    assert sorted(visible) == sorted(p.name for p in shard_dir.glob("*.parquet"))
    for path in done:
        frame, metadata = read_cache(path)  # complete, readable caches only
        assert metadata["backend"] == "vllm" and len(frame) > 0
    stamps = {path: path.stat().st_mtime_ns for path in done}

    # After a crash, Snakemake's lock is left behind: the user runs --unlock, then reruns.
    snakemake(workdir, "--unlock", configfiles=vllm_teacher_config)
    jobs = planned_jobs(workdir, *UNTIL, configfiles=vllm_teacher_config)
    assert jobs.get("teacher_point") == N_SHARDS - len(done)
    assert jobs.get("teacher_pair") is not None

    snakemake(workdir, *UNTIL, configfiles=vllm_teacher_config)
    assert {path: path.stat().st_mtime_ns for path in done} == stamps
    manifest = pd.read_parquet(workdir / "results" / "demo" / "manifest.parquet")
    teacher_hash = shard_dir.name.removeprefix("teacher_")
    merged = workdir / "results" / "demo" / "teacher" / teacher_hash / "points.parquet"
    points, metadata = read_cache(merged)
    assert sorted(points["image_id"]) == sorted(manifest["image_id"])
    assert metadata["backend"] == "vllm"

    # The cache is keyed on what defines the judgments: a change of a speed, memory or placement
    # option of the engine (another GPU) plans no teacher job; a judgment-defining one does.
    base = yaml.safe_load(vllm_teacher_config[1].read_text())

    def planned_with(vllm_change: dict) -> dict[str, int]:
        changed = {**base, "teacher": {**base["teacher"]}}
        changed["teacher"]["vllm"] = {**base["teacher"]["vllm"], **vllm_change}
        path = tmp_path / "changed.yaml"
        path.write_text(yaml.safe_dump(changed))
        return planned_jobs(workdir, *UNTIL, configfiles=[vllm_teacher_config[0], path])

    speed_changes = {
        "max_num_seqs": 2,
        "batch_size": 3,
        "gpu_memory_utilization": 0.5,
        "tensor_parallel_size": 2,
        "enforce_eager": False,
        "kv_cache_memory_bytes": 128 << 20,
        "max_model_len": 2048,
        "distributed_executor_backend": "mp",
    }
    for option, value in speed_changes.items():
        jobs = planned_with({option: value})
        assert not ({"teacher_point", "teacher_pair"} & set(jobs)), (option, jobs)
    for option, value in {"revision": "main", "dtype": "bfloat16", "max_pixels": 4096}.items():
        jobs = planned_with({option: value})
        assert jobs.get("teacher_point") == N_SHARDS, (option, jobs)
