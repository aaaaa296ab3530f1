"""Run the real workflow (snakemake CLI) in a temporary working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from leaf.datasets import load_labels

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
# dataset adapter -> label file of tests/fixtures/ in the dataset's real format (relative to root)
LABEL_FILES = {
    "agiqa3k": "agiqa3k/data.csv",
    "aigiqa20k": "aigiqa20k/info_train.csv",
    "koniq10k": "koniq10k/koniq10k_distributions_sets.csv",
    "spaq": "spaq/MOS and Image attribute scores.csv",
}
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PAPER_DATASETS = ("agiqa3k", "aigiqa20k", "koniq10k", "spaq")
TEACHER_RULES = {"teacher_point", "teacher_pair", "merge_points", "merge_pairs"}


def tiny_dataset(adapter: str, root: Path) -> pd.DataFrame:
    """The fixture label file at its real place under ``root`` plus one small image for every
    row, at the path the adapter resolves it to. Returns the adapter's label table."""
    label_file = root / Path(LABEL_FILES[adapter]).name
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / LABEL_FILES[adapter], label_file)
    labels = load_labels(adapter, root)
    rng = np.random.default_rng(0)
    for path in labels["path"]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)
    return labels


def shipped_config_sets() -> dict[str, list[Path]]:
    """Every shipped config, as the files layered over config/config.yaml (as the docs say):
    the demo alone, each config/*.yaml, each paper dataset file over config/paper/protocol.yaml,
    and all four with config/paper/all.yaml."""
    config, paper = ROOT / "config", ROOT / "config" / "paper"
    sets: dict[str, list[Path]] = {"demo": []}
    for path in sorted(config.glob("*.yaml")):
        if path.name != "config.yaml":
            sets[path.stem] = [path]
    for dataset in PAPER_DATASETS:
        sets[f"paper/{dataset}"] = [paper / "protocol.yaml", paper / f"{dataset}.yaml"]
    sets["paper/all"] = [
        paper / "protocol.yaml",
        *(paper / f"{dataset}.yaml" for dataset in PAPER_DATASETS),
        paper / "all.yaml",
    ]
    return sets


def write_override(path: Path, settings: dict) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


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


# The job fields planned_job_blocks keeps: name=value lists and path lists.
KEYED_FIELDS = ("wildcards", "resources")
PATH_FIELDS = ("input", "output", "log", "benchmark")


def planned_job_blocks(workdir: Path, *args: str, configfiles=()) -> list[dict]:
    """Every job of a dry run as Snakemake prints it (``rule X:`` ... ``output: a, b`` ...
    ``wildcards: a=1, b=2`` ... ``resources: tmpdir=/tmp, gpu=1``): dicts with ``rule``, the
    :data:`KEYED_FIELDS` as dicts and the :data:`PATH_FIELDS` as lists (empty when absent)."""
    result = snakemake(workdir, "-n", *args, configfiles=configfiles)
    jobs: list[dict] = []
    job = None
    for line in (result.stdout + result.stderr).splitlines():
        stripped = line.strip()
        if line.startswith(("rule ", "localrule ")) and stripped.endswith(":"):
            job = {"rule": stripped.split()[1].rstrip(":")}
            job |= {key: {} for key in KEYED_FIELDS} | {key: [] for key in PATH_FIELDS}
            jobs.append(job)
        elif job is not None and stripped.partition(":")[0] in KEYED_FIELDS + PATH_FIELDS:
            key, _, values = stripped.partition(":")
            items = [item.strip() for item in values.split(", ")]
            if key in PATH_FIELDS:
                job[key] = items
            else:
                job[key] = dict(item.partition("=")[::2] for item in items)
        elif not stripped:
            job = None
    return jobs


def planned_job_resources(
    workdir: Path, *args: str, configfiles=()
) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """(rule, wildcards, resources) of every job of a dry run, as Snakemake assigned them
    (:func:`planned_job_blocks`)."""
    return [
        (job["rule"], job["wildcards"], job["resources"])
        for job in planned_job_blocks(workdir, *args, configfiles=configfiles)
    ]
