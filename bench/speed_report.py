"""Write bench/speed.md from the runs of bench/speed.sh: wall times side by side, their ratios
against the issue's goals, per-rule job time from Snakemake's benchmark files, and whether the
tables agree (every numeric value within 1e-6 of the baseline's, rows matched on the text
columns both versions have).

    python bench/speed_report.py --work bench/.speed --parts demo agiqa3k --baseline 1c8263b \
        --current abc1234 --cores 2 --out bench/speed.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
from pathlib import Path

import numpy as np
import pandas as pd

TOLERANCE = 1e-6
# (part, time label) -> the goal: current time at most this share of the baseline's.
GOALS = {("demo", "demo+report"): 0.40, ("agiqa3k", "after_features"): 0.25}
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
N_AGIQA3K = 2982
# Numeric columns that name a row (matched, not compared).
ROW_KEYS = ("ratio", "seed")


def machine() -> str:
    """CPU model, the precision-relevant flags and the core count, from /proc/cpuinfo."""
    model, flags = platform.processor() or "unknown CPU", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        text = cpuinfo.read_text()
        if found := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
            model = found.group(1).strip()
        if found := re.search(r"^flags\s*:\s*(.+)$", text, re.M):
            flags = set(found.group(1).split())
    present = [flag for flag in FLAGS if flag in flags] or ["none of " + ", ".join(FLAGS)]
    return f"{model}; flags: {', '.join(present)}; {os.cpu_count()} cores"


def markers(name: str) -> tuple[str, str]:
    """The HTML comments around section ``name`` of a report that another script writes."""
    return f"<!-- begin {name}: written by bench/{name}.py -->", f"<!-- end {name} -->"


def kept_sections(path: Path) -> str:
    """Every marked section (:func:`markers`) of the report at ``path``, markers included, so
    that rewriting the report keeps what other scripts wrote into it."""
    if not path.exists():
        return ""
    pattern = r"<!-- begin (\S+): .*? -->.*?<!-- end \1 -->"
    return "".join(f"\n{m.group(0)}\n" for m in re.finditer(pattern, path.read_text(), re.S))


def replace_section(path: Path, name: str, body: str) -> None:
    """Write ``body`` as section ``name`` of the report at ``path``: in place of that section
    if the report has it, else at its end."""
    begin, end = markers(name)
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = f"{text.rstrip()}\n\n{block}\n" if text else f"{block}\n"
    path.write_text(text)


def times(folder: Path) -> dict[str, float]:
    """Wall seconds by label from ``times.txt`` (demo+report is their sum)."""
    values = {}
    for line in (folder / "times.txt").read_text().splitlines():
        label, seconds = line.split()
        values[label] = float(seconds)
    if "demo" in values and "report" in values:
        values["demo+report"] = values["demo"] + values["report"]
    return values


def tree_commit(folder: Path) -> str | None:
    """The commit the part ran on (``commit.txt`` written by bench/speed.sh), if recorded."""
    path = folder / "commit.txt"
    return path.read_text().strip() if path.exists() else None


def job_seconds(folder: Path) -> pd.DataFrame:
    """Jobs and summed wall seconds (``s``) per rule, from the Snakemake benchmark files; each
    file's rule is read from the run's Snakemake log (``rule NAME:`` then ``benchmark: PATH``)."""
    rule_of, rule = {}, None
    for line in (folder / "snakemake.log").read_text().splitlines():
        if found := re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):", line):
            rule = found.group(1)
        elif (found := re.match(r"^\s+benchmark: (\S+)", line)) and rule:
            rule_of[Path(found.group(1)).name, Path(found.group(1)).parent.name] = rule
    rows = []
    for path in (folder / "benchmarks").rglob("*.tsv"):
        name = rule_of.get((path.name, path.parent.name), "?")
        rows.append({"rule": name, "s": float(pd.read_csv(path, sep="\t")["s"].iloc[-1])})
    if not rows:
        return pd.DataFrame(columns=["jobs", "s"])
    return pd.DataFrame(rows).groupby("rule")["s"].agg(jobs="count", s="sum")


def compare_tables(baseline: Path, current: Path) -> list[str]:
    """One line per table: agreement of every common numeric value within TOLERANCE."""
    lines = []
    for base_file in sorted(baseline.glob("*.csv")):
        current_file = current / base_file.name
        if not current_file.exists():
            lines.append(f"- {base_file.name}: missing in the current run")
            continue
        base, new = pd.read_csv(base_file), pd.read_csv(current_file)
        common = [column for column in base.columns if column in new.columns]
        keys = [
            column
            for column in common
            if column in ROW_KEYS or not pd.api.types.is_numeric_dtype(base[column])
        ]
        numeric = [column for column in common if column not in keys]
        if keys:
            merged = base.merge(new, on=keys, suffixes=("_base", "_new"), how="outer")
        else:
            merged = base.add_suffix("_base").join(new.add_suffix("_new"))
        if len(merged) != len(base) or len(merged) != len(new):
            lines.append(
                f"- {base_file.name}: rows differ ({len(base)} baseline, {len(new)} current, "
                f"{len(merged)} matched on {keys})"
            )
            continue
        worst, worst_column = 0.0, None
        for column in numeric:
            a = merged[f"{column}_base"].to_numpy(float)
            b = merged[f"{column}_new"].to_numpy(float)
            both_nan = np.isnan(a) & np.isnan(b)
            difference = np.where(both_nan, 0.0, np.abs(a - b))
            difference = np.nan_to_num(difference, nan=np.inf)
            if difference.size and difference.max() > worst:
                worst, worst_column = float(difference.max()), column
        verdict = "same within 1e-6" if worst <= TOLERANCE else "DIFFERENT"
        where = f" (largest in {worst_column})" if worst_column else ""
        lines.append(
            f"- {base_file.name}: {verdict}: largest difference {worst:.2e}{where} over "
            f"{len(merged)} rows x {len(numeric)} numeric columns"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--parts", nargs="+", required=True)
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--current", required=True)
    parser.add_argument("--cores", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    today = dt.date.today().isoformat()
    lines = [
        "# Speed: baseline against current, side by side",
        "",
        "Written by `bench/speed.sh` (do not edit by hand; rerun it). Baseline: main at "
        f"`{args.baseline}`; current: `{args.current}` (each part names the trees it ran); both "
        "run one after the other in one benchmark run on the same machine, from empty results "
        f"folders, `--cores {args.cores}`.",
        "",
        f"- Date: {today}",
        f"- Machine: {machine()}",
        "",
    ]
    for part in args.parts:
        base_dir, current_dir = args.work / f"{part}_baseline", args.work / f"{part}_current"
        base_times, current_times = times(base_dir), times(current_dir)
        lines += [f"## {part}", ""]
        commits = {
            name: tree_commit(folder)
            for name, folder in (("baseline", base_dir), ("current", current_dir))
        }
        if any(commits.values()):
            ended = dt.datetime.fromtimestamp((current_dir / "times.txt").stat().st_mtime)
            lines += [
                "Trees run: "
                + ", ".join(f"{name} `{commit or '?'}`" for name, commit in commits.items())
                + f"; the part ended {ended:%Y-%m-%d %H:%M}.",
                "",
            ]
        lines += ["| step | baseline s | current s | current/baseline | goal |"]
        lines += ["|---|---:|---:|---:|---|"]
        for label, base_seconds in base_times.items():
            new_seconds = current_times.get(label, float("nan"))
            ratio = new_seconds / base_seconds
            goal = GOALS.get((part, label))
            verdict = (
                "" if goal is None else f"<= {goal:.0%}: {'met' if ratio <= goal else 'NOT met'}"
            )
            lines.append(
                f"| {label} | {base_seconds:.1f} | {new_seconds:.1f} | {ratio:.0%} | {verdict} |"
            )
        loads = []
        for name, folder in (("baseline", base_dir), ("current", current_dir)):
            if (folder / "loads.txt").exists():
                for line in (folder / "loads.txt").read_text().splitlines():
                    label, *averages = line.split()
                    loads.append(f"{name} {label}: {' / '.join(averages)}")
        if loads:
            lines += [
                "",
                "Load average (1 / 5 / 15 min) when each step ended; the run's own jobs (as many "
                "as cores, plus Snakemake and the warm worker) keep it near the core count, well "
                "above it means other work shared the machine: " + "; ".join(loads) + ".",
            ]
        if part == "agiqa3k":
            feature_rows = []
            for name, folder in (("baseline", base_dir), ("current", current_dir)):
                jobs = job_seconds(folder)
                if "features" in jobs.index:
                    rate = N_AGIQA3K / jobs.loc["features", "s"]
                    feature_rows.append(f"{name} {rate:.2f} images/s")
            lines += ["", "Feature extraction (Snakemake benchmark of `features`): "]
            lines[-1] += "; ".join(feature_rows) + " (goal: current >= 2x baseline)"
        base_jobs, current_jobs = job_seconds(base_dir), job_seconds(current_dir)
        joined = base_jobs.join(current_jobs, suffixes=("_baseline", "_current"), how="outer")
        lines += [
            "",
            "Per rule: jobs and the sum of their wall times (Snakemake `benchmark:` files; with "
            "`--cores` > 1 jobs overlap, so these sums exceed the wall time above):",
            "",
            "| rule | baseline jobs | baseline s | current jobs | current s |",
            "|---|---:|---:|---:|---:|",
        ]
        joined = joined.fillna(0)
        for rule, row in joined.sort_values("s_baseline", ascending=False).iterrows():
            lines.append(
                f"| {rule} | {row['jobs_baseline']:.0f} | {row['s_baseline']:.1f} | "
                f"{row['jobs_current']:.0f} | {row['s_current']:.1f} |"
            )
        lines += ["", "Results (tables of both runs):", ""]
        lines += compare_tables(base_dir, current_dir)
        lines.append("")
    args.out.write_text("\n".join(lines) + "\n" + kept_sections(args.out))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
