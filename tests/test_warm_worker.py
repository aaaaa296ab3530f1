"""The warm worker (leaf.warm_worker): light steps run in a fork of a process that imported torch
once, with the job's log, working directory and environment, and the same results."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from test_train import DISTILL, workflow_files  # noqa: F401 (fixture)

from leaf import warm_worker
from leaf.student.steps import distill_step
from leaf.workflow_io import run_step


@pytest.fixture(scope="module")
def server_path(tmp_path_factory):
    """The socket of a server private to this module's tests (started by the first job)."""
    return tmp_path_factory.mktemp("warm") / "w.sock"


@pytest.fixture()
def private_server(server_path, monkeypatch):
    """The warm worker switched on, with this module's own server."""
    monkeypatch.setattr(warm_worker, "socket_path", lambda: server_path)
    monkeypatch.setenv(warm_worker.ENV_SWITCH, "1")
    return server_path


def record_process(out: str, value: int) -> None:
    """A step: writes its pid, parent pid, cwd, an env variable and ``value`` to ``out``."""
    import logging

    logging.getLogger("leaf.test").info("recording %d", value)
    Path(out).write_text(
        f"{os.getpid()} {os.getppid()} {os.getcwd()} {os.environ.get('LEAF_TEST_VAR')} {value}"
    )


def failing_step(out: str) -> None:
    """A step that fails with a message."""
    raise ValueError(f"no good input for {out}")


def fake_job(tmp_path: Path, rule: str = "toy", **params) -> types.SimpleNamespace:
    """The parts of Snakemake's ``snakemake`` object that run_step reads."""
    return types.SimpleNamespace(
        rule=rule,
        input={},
        output={"out": str(tmp_path / "out.txt")},
        params=params,
        log=[str(tmp_path / "logs" / f"{rule}.log")],
        threads=1,
    )


def test_a_light_step_runs_in_a_fork_with_the_jobs_log_cwd_and_env(
    private_server, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEAF_TEST_VAR", "from-the-job")
    job = fake_job(tmp_path, value=7)
    run_step(job, record_process, warm=True)
    pid, parent, cwd, env_value, value = (tmp_path / "out.txt").read_text().split()
    assert int(pid) != os.getpid() and int(parent) != os.getpid()  # a child of the server
    assert (cwd, env_value, value) == (str(tmp_path), "from-the-job", "7")
    log_text = (tmp_path / "logs" / "toy.log").read_text()
    assert "rule toy: record_process(out, value)" in log_text and "recording 7" in log_text
    # The second job reuses the same server: a sibling of the first child.
    run_step(job, record_process, warm=True)
    assert (tmp_path / "out.txt").read_text().split()[1] == parent


def test_a_failure_raises_and_its_traceback_is_in_the_jobs_log(private_server, tmp_path):
    job = fake_job(tmp_path, rule="broken")
    with pytest.raises(RuntimeError, match="broken failed in the warm worker"):
        run_step(job, failing_step, warm=True)
    log_text = (tmp_path / "logs" / "broken.log").read_text()
    assert "ValueError: no good input for" in log_text and "out.txt" in log_text


def test_switched_off_or_not_asked_for_it_runs_in_process(tmp_path, monkeypatch):
    unused = tmp_path / "unused.sock"
    monkeypatch.setattr(warm_worker, "socket_path", lambda: unused)
    monkeypatch.setenv(warm_worker.ENV_SWITCH, "1")
    run_step(fake_job(tmp_path, value=1), record_process, warm=lambda kwargs: False)
    assert int((tmp_path / "out.txt").read_text().split()[0]) == os.getpid()
    monkeypatch.setenv(warm_worker.ENV_SWITCH, "0")
    run_step(fake_job(tmp_path, value=2), record_process, warm=True)
    assert int((tmp_path / "out.txt").read_text().split()[0]) == os.getpid()
    assert not unused.exists()  # no server was started


def test_enabled_by_default_outside_batch_schedulers(monkeypatch):
    monkeypatch.delenv(warm_worker.ENV_SWITCH, raising=False)
    for name in warm_worker.SCHEDULER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert warm_worker.enabled()
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    assert not warm_worker.enabled()
    monkeypatch.setenv(warm_worker.ENV_SWITCH, "1")
    assert warm_worker.enabled()


def test_the_server_key_follows_the_package_sources(tmp_path, monkeypatch):
    key = warm_worker.code_key()
    assert key == warm_worker.code_key() and len(key) == 16
    source = Path(warm_worker.__file__)
    stat = source.stat()
    try:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
        assert warm_worker.code_key() != key  # an edited package gets a new server
    finally:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_stale_socket_file_is_replaced(tmp_path, monkeypatch):
    stale = tmp_path / "stale.sock"
    monkeypatch.setattr(warm_worker, "socket_path", lambda: stale)
    monkeypatch.setenv(warm_worker.ENV_SWITCH, "1")
    stale.write_text("not a socket")
    run_step(fake_job(tmp_path, value=3), record_process, warm=True)
    assert (tmp_path / "out.txt").read_text().split()[-1] == "3"


def test_a_string_reference_is_imported_where_the_step_runs(private_server, tmp_path):
    run_step(fake_job(tmp_path, value=5), "test_warm_worker:record_process", warm=True)
    pid, *_, value = (tmp_path / "out.txt").read_text().split()
    assert int(pid) != os.getpid() and value == "5"
    run_step(fake_job(tmp_path, value=6), "test_warm_worker:record_process")
    pid, *_, value = (tmp_path / "out.txt").read_text().split()
    assert int(pid) == os.getpid() and value == "6"
    with pytest.raises(AttributeError):
        run_step(fake_job(tmp_path, value=7), "test_warm_worker:no_such_step")


def test_same_checkpoint_as_in_process(private_server, workflow_files, tmp_path):  # noqa: F811
    files = workflow_files
    job = types.SimpleNamespace(
        rule="distill",
        input={
            "features": files["features"],
            "split": files["split"],
            "teacher_points": files["points"],
            "teacher_pairs": files["pairs"],
        },
        output={"model": str(tmp_path / "warm.pt")},
        params={"seed": 0, "head": {"hidden": 8, "dropout": 0.1}, "distill": DISTILL},
        log=[str(tmp_path / "distill.log")],
        threads=1,
    )
    run_step(job, distill_step, warm=True)
    job.output = {"model": str(tmp_path / "in_process.pt")}
    run_step(job, distill_step, warm=False)
    warm = torch.load(tmp_path / "warm.pt", weights_only=True)
    in_process = torch.load(tmp_path / "in_process.pt", weights_only=True)
    assert warm["history"] == in_process["history"]
    for name, tensor in in_process["head"]["state_dict"].items():
        assert torch.equal(warm["head"]["state_dict"][name], tensor), name


def test_warm_up_leaves_nothing_for_a_forked_step_to_import():
    """The server's warm_up pays torch.use_deterministic_algorithms' lazy imports (torch._inductor,
    ~2 s) once, so a forked head-training step imports nothing more; without it, it would."""
    probe = (
        "import importlib, sys\n"
        "from leaf import warm_worker\n"
        "for name in warm_worker.PRELOAD: importlib.import_module(name)\n"
        "if sys.argv[1] == 'warm': warm_worker.warm_up()\n"
        "before = set(sys.modules)\n"
        "from leaf.student.train import deterministic\n"
        "with deterministic(0): pass\n"
        "print(len(set(sys.modules) - before))\n"
    )
    imported = {
        mode: int(subprocess.check_output([sys.executable, "-c", probe, mode], text=True))
        for mode in ("cold", "warm")
    }
    assert imported["cold"] > 100  # the probe sees the lazy imports when they are not paid
    assert imported["warm"] == 0
