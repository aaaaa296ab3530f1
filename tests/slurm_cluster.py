"""A throw-away single-node SLURM cluster on localhost, for tests of the SLURM profile.

``with slurm_cluster() as cluster:`` starts its own munged (own key and socket), slurmctld and
``slurmd -N localhost`` with every file (configuration, state, spool, logs, pid files) in a new
temporary folder, waits until ``sinfo`` reports the node idle, and on exit cancels the jobs left,
stops all three daemons by their pid files and deletes the folder. Client commands (sbatch,
squeue, sinfo) find this cluster through ``cluster.env`` (``SLURM_CONF``). Needs root and the
Debian packages ``slurm-wlm`` and ``munge`` (``make slurm-setup``).

The node declares ``Gres=gpu:1`` backed by ``/dev/null`` (a count-only GPU would drain the node),
so ``--gpus=1`` jobs are scheduled one at a time like on a one-GPU node; no GPU is used. It has
no accounting database (``accounting_storage/none``), as on clusters without slurmdbd: job status
must come from ``squeue`` (kept for ``MinJobAge`` seconds after a job ends).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

# Daemons and client commands the cluster and the SLURM executor plugin use.
COMMANDS = (
    "munged",
    "mungekey",
    "slurmctld",
    "slurmd",
    "sinfo",
    "sbatch",
    "srun",
    "squeue",
    "scancel",
)
PARTITION = "debug"
NODE = "localhost"


def missing_requirements() -> str | None:
    """Why a local cluster cannot start here (None if it can)."""
    missing = [name for name in COMMANDS if shutil.which(name) is None]
    if missing:
        return f"SLURM/munge not installed (missing {', '.join(missing)}; run `make slurm-setup`)"
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (install the munge package)"
    return None


@dataclass(frozen=True)
class SlurmCluster:
    """A running cluster: its folder, partition and the environment its clients need."""

    root: Path
    partition: str
    conf: Path

    @property
    def env_vars(self) -> dict[str, str]:
        """The variables a client (e.g. Snakemake submitting jobs) needs to use this cluster."""
        return {
            "SLURM_CONF": str(self.conf),
            "PATH": f"{self.root / 'bin'}{os.pathsep}{os.environ['PATH']}",
        }

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **self.env_vars}

    def run(self, *cmd: str) -> str:
        """Run a SLURM client command against this cluster; its stdout."""
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=True).stdout

    def pids(self) -> dict[str, int]:
        """Daemon -> pid of the daemons that wrote a pid file."""
        return {
            path.stem: int(path.read_text().split()[0])
            for path in self.root.rglob("*.pid")
            if path.read_text().strip()
        }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(pid_file: Path, timeout: float = 15.0) -> None:
    """SIGTERM the process in ``pid_file`` and wait for it to exit (SIGKILL after ``timeout``)."""
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().split()[0])
    except (ValueError, IndexError):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def _wait_for(what: str, check, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def _write_conf(root: Path, munge_socket: Path, cpus: int, mem_mb: int, gpus: int) -> Path:
    for name in ("state", "spool"):
        (root / name).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=leaftest",
                f"SlurmctldHost={NODE}(127.0.0.1)",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={munge_socket}",
                f"StateSaveLocation={root / 'state'}",
                f"SlurmdSpoolDir={root / 'spool'}",
                f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'slurmd.pid'}",
                f"SlurmctldLogFile={root / 'slurmctld.log'}",
                f"SlurmdLogFile={root / 'slurmd.log'}",
                # No cgroups in containers: track job processes by parent pid.
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none",
                # No slurmdbd: sacct has nothing to report, the profile must use squeue.
                "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/none",
                "MpiDefault=none",
                "SchedulerType=sched/backfill",
                # cons_tres: CPUs, memory and GPUs (--gpus) are consumable.
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "GresTypes=gpu",
                "DefMemPerCPU=1000",
                # Finished jobs stay visible to squeue this long (the profile's status command).
                "MinJobAge=300",
                "ReturnToService=2",
                # Trust the node sizes below (declared to fit the profile's GPU-node requests)
                # instead of draining the node for having less real CPUs/memory.
                "SlurmdParameters=config_overrides",
                f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} "
                f"Gres=gpu:{gpus} State=UNKNOWN",
                f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    # One device file per GPU; /dev/null is enough for scheduling (nothing opens it).
    (root / "gres.conf").write_text(
        "AutoDetect=off\n"
        + "".join(f"NodeName={NODE} Name=gpu File=/dev/null\n" for _ in range(gpus))
    )
    return conf


def _write_srun(root: Path, conf: Path) -> None:
    """An ``srun`` first on the PATH of ``env_vars`` that finds this cluster's configuration.

    snakemake-executor-plugin-slurm-jobstep (0.6) removes every SLURM_* variable, SLURM_CONF
    included, before it starts the job with ``srun`` inside the allocation; that srun would look
    for /etc/slurm/slurm.conf. Real clusters keep their configuration there (or run configless).
    """
    srun = root / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {shutil.which("srun")} "$@"\n')
    srun.chmod(0o755)


@contextmanager
def _munged(root: Path) -> Iterator[Path]:
    """Our own munged (own key, socket, pid file) run as the munge user; yields its socket."""
    folder = root / "munge"
    folder.mkdir()
    folder.chmod(0o755)  # clients need to reach the socket; the key itself is 0600
    munge = pwd.getpwnam("munge")
    key = folder / "munge.key"
    subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True)
    for path in (folder, key):
        os.chown(path, munge.pw_uid, munge.pw_gid)
    socket_path = folder / "munge.socket"
    pid_file = folder / "munged.pid"
    try:
        subprocess.run(
            [
                "runuser",
                "-u",
                "munge",
                "--",
                "munged",
                f"--key-file={key}",
                f"--socket={socket_path}",
                f"--pid-file={pid_file}",
                f"--log-file={folder / 'munged.log'}",
                f"--seed-file={folder / 'munged.seed'}",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        _wait_for("munged", socket_path.exists, 10, folder / "munged.log")
        yield socket_path
    finally:
        _stop(pid_file)


def _cancel_all(cluster: SlurmCluster, timeout: float = 30.0) -> None:
    """Cancel every job still queued or running and wait until none is left."""
    subprocess.run(["scancel", "--full", "--user", "root"], env=cluster.env, capture_output=True)

    def queue_empty() -> bool:
        result = subprocess.run(
            ["squeue", "--noheader", "--states=PENDING,RUNNING,COMPLETING"],
            env=cluster.env,
            capture_output=True,
            text=True,
        )
        return result.returncode != 0 or not result.stdout.strip()

    _wait_for("the cancelled jobs to end", queue_empty, timeout)


@contextmanager
def slurm_cluster(
    *, cpus: int = 2, mem_mb: int = 4000, gpus: int = 1, timeout: float = 60
) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd in a temporary folder; stop them all on exit.

    The node declares ``cpus`` CPUs, ``mem_mb`` MB and ``gpus`` GPUs (SLURM trusts these sizes).
    """
    with ExitStack() as stack:
        # In the system temp folder (not e.g. pytest's 0700 tmp_path): munged runs as the munge
        # user and needs to reach its folder; mkdtemp makes it 0700, opened to 0755 here.
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="leaf-slurm-")))
        root.chmod(0o755)
        munge_socket = stack.enter_context(_munged(root))
        conf = _write_conf(root, munge_socket, cpus, mem_mb, gpus)
        _write_srun(root, conf)
        cluster = SlurmCluster(root=root, partition=PARTITION, conf=conf)
        # Registered before the start so that a half-started daemon is stopped too.
        stack.callback(_stop, root / "slurmctld.pid")
        stack.callback(_stop, root / "slurmd.pid")
        for cmd in (["slurmctld", "-f", str(conf)], ["slurmd", "-f", str(conf), "-N", NODE]):
            subprocess.run(cmd, env=cluster.env, check=True, capture_output=True, text=True)

        def node_idle() -> bool:
            result = subprocess.run(
                ["sinfo", "--noheader", "--format=%t", "--nodes", NODE],
                env=cluster.env,
                capture_output=True,
                text=True,
            )
            return result.returncode == 0 and result.stdout.strip() == "idle"

        _wait_for("the node to become idle", node_idle, timeout, root / "slurmd.log")
        # Job steps outlive slurmd: cancel what a failed run left before the daemons stop.
        stack.callback(_cancel_all, cluster)
        yield cluster
