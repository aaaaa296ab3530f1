"""Run the real workflow (snakemake CLI) in a temporary working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TEACHER_RULES = {"teacher_point", "teacher_pair", "merge_points", "merge_pairs"}


def snakemake_command(workdir: Path, *args: str, configfiles=()) -> list[str]:
    """``snakemake -s <repo>/Snakefile -d <workdir> --cores 2 <args> --configfile ...``.

    The demo config comes first, then ``configfiles`` (nested keys merge, lists replace).
    A later ``--cores N`` in ``args`` overrides the default of 2.
    """
    files = [str(ROOT / "config" / "config.yaml"), *map(str, configfiles)]
    return [
        SNAKEMAKE,
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(workdir),
        "--cores",
        "2",
        *args,
        "--configfile",  # last: it takes every following word as a file
        *files,
    ]


def snakemake(workdir: Path, *args: str, configfiles=(), check=True) -> subprocess.CompletedProcess:
    """Run :func:`snakemake_command` to completion; raise with its output if it fails."""
    cmd = snakemake_command(workdir, *args, configfiles=configfiles)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}): {' '.join(cmd)}\n"
            f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
        )
    return result


def planned_jobs(workdir: Path, *args: str, configfiles=()) -> dict[str, int]:
    """Job counts per rule of a dry run (parsed from Snakemake's 'Job stats' table)."""
    result = snakemake(workdir, "-n", *args, configfiles=configfiles)
    text = result.stdout + result.stderr
    counts: dict[str, int] = {}
    lines = text.splitlines()
    for start, line in enumerate(lines):
        if line.strip() == "Job stats:":
            for row in lines[start + 3 :]:
                parts = row.split()
                if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
                    break
                counts[parts[0]] = int(parts[1])
            break
    return counts
