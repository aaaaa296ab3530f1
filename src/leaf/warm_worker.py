"""Warm worker: run short workflow steps in a fork of a process that has already imported torch.

Every Snakemake ``script:`` job is a new Python process. For a head-mode ``distill``,
``calibrate`` or ``evaluate`` job, importing torch, pandas, scipy and the package takes longer
than the work itself (about 3 s against about 1 s on a 2-core CPU; see bench/speed.md). The warm
worker pays the imports once per workflow run instead of once per job:

* the first job that asks for it starts ``python -m leaf.warm_worker SOCKET`` (a detached
  server that imports :data:`PRELOAD`, makes the first calls torch answers with lazy imports
  (:func:`warm_up`), then listens on a Unix socket);
* every job sends its step (module and function name, keyword arguments, log path, working
  directory, environment) and blocks; the server forks a child that runs the step exactly as the
  job's own process would (same function, same log file, same thread count: the results are
  identical) and sends back its exit status;
* the child dies with its job: if the job's process goes away (Snakemake cancelled it), the child
  sees the socket close and exits without writing outputs (outputs are written atomically);
* the server is single-threaded (fork-safe), keyed by the interpreter and the package's source
  files (an edited package starts a new server) and exits after :data:`IDLE_SECONDS` without a job.

Snakemake still runs one job per rule and output, with its own log and benchmark; the benchmark's
wall time (``s``) is right, while its memory and CPU columns measure the job's own light process
only. Jobs running under a batch scheduler (SLURM, PBS, LSF, SGE) never use it, and
``LEAF_WARM_WORKER=0`` turns it off (``1`` forces it on). Steps that need a process of their own
(feature extraction, the MLLM teacher, fine-tuning in full mode) never ask for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import logging
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Modules imported once by the server: what the light steps need (workflow/scripts/*.py that
# call run_step with warm=...).
PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "scipy.stats",
    "scipy.optimize",
    "torch",
    "leaf.student.steps",
    "leaf.student.stages",
    "leaf.split",
    "leaf.pairs",
    "leaf.teacher.cache",
    "leaf.teacher.cache_keys",
    "leaf.teacher.steps",
    "leaf.tables",
    "leaf.figures",
)
# Seconds the server waits for a new job before it exits.
IDLE_SECONDS = 60.0
# Seconds a job waits for a newly started server to accept connections.
START_TIMEOUT = 120.0
# Environment variables that mark a job of a batch scheduler (one job per allocation: no reuse).
SCHEDULER_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID")
ENV_SWITCH = "LEAF_WARM_WORKER"
_HEADER = struct.Struct("!Q")
_STATUS = struct.Struct("!i")


def enabled() -> bool:
    """Whether light steps go to the warm worker: ``LEAF_WARM_WORKER`` = 0/1 decides when set;
    otherwise on for POSIX jobs outside a batch scheduler."""
    switch = os.environ.get(ENV_SWITCH, "").strip().lower()
    if switch in ("0", "false", "no", "off"):
        return False
    if switch in ("1", "true", "yes", "on"):
        return True
    if os.name != "posix" or not hasattr(os, "fork"):
        return False
    return not any(os.environ.get(name) for name in SCHEDULER_VARIABLES)


def code_key() -> str:
    """A 16-hex-digit key of the interpreter and the package's source files (path, size,
    modification time): a changed package gets a server of its own."""
    package_dir = Path(__file__).resolve().parent
    digest = hashlib.sha256(f"{sys.executable}\0{sys.version}\0{PRELOAD}".encode())
    for path in sorted(package_dir.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def socket_path() -> Path:
    """The server's socket: ``$TMPDIR/leaf-warm-<uid>/<code_key>.sock``."""
    folder = Path(tempfile.gettempdir()) / f"leaf-warm-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / f"{code_key()}.sock"


def _send(conn: socket.socket, payload: bytes) -> None:
    conn.sendall(_HEADER.pack(len(payload)) + payload)


def _receive_exactly(conn: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = conn.recv(min(remaining, 1 << 20))
        if not chunk:
            raise ConnectionError("the warm-worker connection closed early")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _receive(conn: socket.socket) -> bytes:
    (size,) = _HEADER.unpack(_receive_exactly(conn, _HEADER.size))
    return _receive_exactly(conn, size)


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    return conn


def _start_server(path: Path) -> None:
    server_log = path.with_suffix(".log")
    with open(server_log, "ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "leaf.warm_worker", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def connect() -> socket.socket:
    """A connection to the running server, starting one if none answers.

    Raises:
        TimeoutError: no server accepted within :data:`START_TIMEOUT` seconds (its output is in
            the ``.log`` file next to the socket).
    """
    path = socket_path()
    conn = _connect(path)
    if conn is not None:
        return conn
    _start_server(path)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        conn = _connect(path)
        if conn is not None:
            return conn
        time.sleep(0.05)
    raise TimeoutError(
        f"the warm worker did not start within {START_TIMEOUT:.0f} s; "
        f"see {path.with_suffix('.log')}"
    )


def plain(value: Any) -> Any:
    """``value`` with Snakemake's path objects (str subclasses) and named lists turned into plain
    str/list/dict, so it unpickles without Snakemake."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {plain(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def run(call: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Run ``call(**kwargs)`` in a fork of the warm server and block until it ends. ``call`` must
    be a module-level function (pickled by reference) that reports its own errors (e.g.
    :func:`leaf.workflow_io.run_logged` writes them to the job's log); ``what`` names the job in
    the error message.

    Raises:
        RuntimeError: the call raised or its process died (exit status in the message).
    """
    request = pickle.dumps(
        {
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "sys_path": list(sys.path),
            # unpickled only after the child took the job's sys.path
            "call": pickle.dumps((call, plain(kwargs))),
        }
    )
    for attempt in range(2):
        try:
            with contextlib.closing(connect()) as conn:
                _send(conn, request)
                (status,) = _STATUS.unpack(_receive_exactly(conn, _STATUS.size))
            break
        except ConnectionError:
            # The server closed before it took the job (it was exiting idle): try a new one.
            if attempt:
                raise
    if status != 0:
        raise RuntimeError(f"{what} failed in the warm worker (exit status {status})")


# --- server -------------------------------------------------------------------------------------


def _exit_when_client_leaves(conn: socket.socket) -> None:
    """In the child: exit at once when the job's process closes its end (cancelled job)."""

    def watch() -> None:
        with contextlib.suppress(OSError):
            conn.recv(1)
        os._exit(130)

    threading.Thread(target=watch, daemon=True).start()


def _child(conn: socket.socket, payload: bytes) -> int:
    request = pickle.loads(payload)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[:] = request["sys_path"]
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _exit_when_client_leaves(conn)
    try:
        call, kwargs = pickle.loads(request["call"])
        call(**kwargs)
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def warm_up() -> None:
    """Run, once in the server, what the first call of a light step would otherwise pay for in
    every forked child: ``torch.use_deterministic_algorithms`` (entered by every head-training
    step, :func:`leaf.student.train.deterministic`) imports ``torch._inductor`` and
    ``torch._dynamo`` on its first call, about 1.5-2 s on a 2-core CPU, against 0.3-0.5 s of
    head training (bench/speed.md). The call sets the current mode again: no state changes."""
    import torch

    torch.use_deterministic_algorithms(
        torch.are_deterministic_algorithms_enabled(),
        warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
    )


def serve(path: Path, idle_seconds: float = IDLE_SECONDS) -> None:
    """Import :data:`PRELOAD`, listen on ``path`` and fork one child per job until idle.

    Single-threaded (the children are forked from a process without other threads). Another
    server already listening on ``path`` makes this one exit at once.
    """
    lock_file = open(path.with_suffix(".lock"), "w")  # noqa: SIM115 (held for the server's life)
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another server owns this socket
    for name in PRELOAD:
        importlib.import_module(name)
    warm_up()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    running: dict[int, socket.socket] = {}
    last_active = time.monotonic()
    try:
        while running or time.monotonic() - last_active < idle_seconds:
            readable, _, _ = select.select([listener], [], [], 0.02)
            for pid, conn in list(running.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    code = os.waitstatus_to_exitcode(status)
                    with contextlib.suppress(OSError):
                        conn.sendall(_STATUS.pack(code))
                    conn.close()
                    del running[pid]
                    last_active = time.monotonic()
            if not readable:
                continue
            conn, _ = listener.accept()
            conn.settimeout(10.0)
            try:
                payload = _receive(conn)
                conn.settimeout(None)
            except OSError:  # the job went away before it sent its request
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                listener.close()
                for other in running.values():
                    other.close()
                code = 1
                try:  # noqa: SIM105 (os._exit in every case)
                    code = _child(conn, payload)
                finally:
                    os._exit(code)
            running[pid] = conn
            last_active = time.monotonic()
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        lock_file.close()


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
