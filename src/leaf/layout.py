"""Where every file of a run lives: the one definition of the path layout.

The rules (workflow/rules/*.smk, through :class:`leaf.experiments.Plan`), the plan's own paths
and the report's reading of benchmark files (:func:`leaf.report_results.stage_of`) all derive
from the tables here. Patterns use Snakemake's wildcard syntax (``{dataset}``) and are relative:

* :data:`RESULT_FILES`: name -> file below ``results_dir``;
* :data:`CACHE_FILES`: name -> file below ``teacher_cache``, the shared teacher cache keyed by
  content (:mod:`leaf.teacher.cache_keys`, docs/cache_schema.md);
* :data:`JOB_FILES`: rule -> the stem of its log (``logs/<stem>.log``) and benchmark
  (``benchmarks/<stem>.tsv``) below ``results_dir``. The jobs of the shared cache have
  ``images-{images_key}`` in the place of the dataset;
* :data:`WILDCARDS`: wildcard -> regex, Snakemake's ``wildcard_constraints`` and what
  :func:`job_rules` matches. A field not listed (``short_side``: filled from the config by the
  rules) matches one path component.

Fields: dataset, backbone, teacher_hash (12 hex), variant (:data:`VARIANT_PATTERN`), seed,
ratio (as :func:`leaf.experiments.ratio_label` writes it), table (table1 .. table4),
images_key, pairs_key, shard, n_shards, short_side (the decoded-image cache's short side, px).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from leaf.config_checks import PAPER_TABLES

# A stage-1 variant (leaf.experiments.variant_name): its terms joined by "-".
VARIANT_PATTERN = "(point|pair)(-pair)?(-conf)?"
WILDCARDS = {
    "dataset": "[A-Za-z0-9_-]+",
    "seed": r"\d+",
    "ratio": r"[0-9.]+",
    "shard": r"\d+",
    "n_shards": r"\d+",
    "teacher_hash": "[0-9a-f]{12}",
    "images_key": "[0-9a-f]{12}",
    "pairs_key": "[0-9a-f]{12}",
    "backbone": "[A-Za-z0-9_.-]+",
    "variant": VARIANT_PATTERN,
    "table": "|".join(PAPER_TABLES.values()),
}

# A LEAF student run's folder (model, history) and its evaluation's prefix.
_STUDENT = "{dataset}/student/{backbone}/{teacher_hash}/{variant}"
_EVAL = "{dataset}/eval/{backbone}/{teacher_hash}/{variant}"
RESULT_FILES = {
    # data.smk: manifest, train/test split, nested MOS subsets per seed, random pairs.
    "manifest": "{dataset}/manifest.parquet",
    "split": "{dataset}/split.parquet",
    "subsets": "{dataset}/subsets/seed{seed}.parquet",
    "pairs": "{dataset}/pairs.parquet",
    # student.smk: what a student reads, frozen features (head mode) or decoded images (full).
    "features": "{dataset}/features/{backbone}.pt",
    "image_cache": "{dataset}/image_cache/short{short_side}.npy",
    "image_cache_index": "{dataset}/image_cache/short{short_side}.parquet",
    # teacher.smk: the shards merged for this results folder, kept pairs, zero-shot metrics.
    "teacher_points": "{dataset}/teacher/{teacher_hash}/points.parquet",
    "teacher_pairs": "{dataset}/teacher/{teacher_hash}/pairs.parquet",
    "teacher_pairs_kept": "{dataset}/teacher/{teacher_hash}/pairs_kept.parquet",
    "teacher_eval": "{dataset}/eval/teacher_{teacher_hash}.json",
    # student.smk: stage 1 (distill, ratio 0) and stage 2 (calibrate) models and histories.
    "distilled_model": f"{_STUDENT}/distill_seed{{seed}}.pt",
    "distilled_history": f"{_STUDENT}/distill_seed{{seed}}.history.csv",
    "calibrated_model": f"{_STUDENT}/calibrated_seed{{seed}}_ratio{{ratio}}.pt",
    "calibrated_history": f"{_STUDENT}/calibrated_seed{{seed}}_ratio{{ratio}}.history.csv",
    # baselines.smk: CFT-only (calibration fine-tuning alone, no teacher).
    "cft_model": "{dataset}/student/{backbone}/cft_seed{seed}_ratio{ratio}.pt",
    "cft_history": "{dataset}/student/{backbone}/cft_seed{seed}_ratio{ratio}.history.csv",
    # evaluate.smk / baselines.smk: test-split predictions and metrics.
    "eval_predictions": f"{_EVAL}/seed{{seed}}_ratio{{ratio}}.parquet",
    "eval_metrics": f"{_EVAL}/seed{{seed}}_ratio{{ratio}}.json",
    "cft_eval_predictions": "{dataset}/eval/{backbone}/cft_seed{seed}_ratio{ratio}.parquet",
    "cft_eval_metrics": "{dataset}/eval/{backbone}/cft_seed{seed}_ratio{ratio}.json",
    # tables.smk: result tables (the paper's numbers) and figures.
    "table": "{table}.csv",
    "fig2_png": "fig2.png",
    "fig2_svg": "fig2.svg",
    "fig2_stats": "fig2.json",
    "fig2_caption": "fig2_caption.rst",
    "fig4_png": "fig4.png",
    "fig4_svg": "fig4.svg",
    "fig4_csv": "fig4.csv",
    "training_curves_png": "training_curves.png",
    "training_curves_svg": "training_curves.svg",
    "training_curves_csv": "training_curves.csv",
    # deploy.smk: one artifact per run, the best one, its selection table and model folder.
    "deploy_artifact": "{dataset}/deploy/{backbone}_seed{seed}_ratio{ratio}.leaf.pt",
    "best_artifact": "{dataset}/deploy/best.leaf.pt",
    "deploy_selection": "{dataset}/deploy/selection.csv",
    "model_folder_weights": "{dataset}/deploy/best-hf/model.safetensors",
    "model_folder_config": "{dataset}/deploy/best-hf/config.json",
    "model_folder_card": "{dataset}/deploy/best-hf/README.md",
}
# The shared teacher cache: the key tables of an images key and of a pairs key, and a teacher's
# shard caches under both.
CACHE_FILES = {
    "images": "images-{images_key}/images.parquet",
    "pairs": "images-{images_key}/pairs-{pairs_key}.parquet",
    "points_shard": (
        "images-{images_key}/teacher_{teacher_hash}/points_{shard}-of-{n_shards}.parquet"
    ),
    "pairs_shard": (
        "images-{images_key}/teacher_{teacher_hash}/pairs-{pairs_key}/"
        "pairs_{shard}-of-{n_shards}.parquet"
    ),
}
JOB_FILES = {
    "prepare": "{dataset}/prepare",
    "split": "{dataset}/split",
    "subsets": "{dataset}/subsets_seed{seed}",
    "pairs": "{dataset}/pairs",
    "cache_images": "images-{images_key}/cache_images",
    "cache_pairs": "images-{images_key}/pairs-{pairs_key}/cache_pairs",
    "teacher_point": "images-{images_key}/teacher_{teacher_hash}/point_{shard}-of-{n_shards}",
    "teacher_pair": (
        "images-{images_key}/teacher_{teacher_hash}/pairs-{pairs_key}/pair_{shard}-of-{n_shards}"
    ),
    "merge_points": "{dataset}/teacher_{teacher_hash}/merge_points",
    "merge_pairs": "{dataset}/teacher_{teacher_hash}/merge_pairs",
    "filter_pairs": "{dataset}/teacher_{teacher_hash}/filter_pairs",
    "teacher_zero_shot": "{dataset}/teacher_{teacher_hash}/zero_shot",
    "features": "{dataset}/features_{backbone}",
    "image_cache": "{dataset}/image_cache_short{short_side}",
    "distill": "{dataset}/student_{backbone}/{teacher_hash}/{variant}/distill_seed{seed}",
    "calibrate": (
        "{dataset}/student_{backbone}/{teacher_hash}/{variant}/calibrate_seed{seed}_ratio{ratio}"
    ),
    "calibrate_cft": "{dataset}/student_{backbone}/cft_seed{seed}_ratio{ratio}",
    "evaluate": "{dataset}/eval_{backbone}/{teacher_hash}/{variant}/seed{seed}_ratio{ratio}",
    "evaluate_cft": "{dataset}/eval_{backbone}/cft_seed{seed}_ratio{ratio}",
    "results_table": "{table}",
    "fig2": "fig2",
    "fig4": "fig4",
    "training_curves": "training_curves",
    "deploy": "{dataset}/deploy/{backbone}_seed{seed}_ratio{ratio}",
    "deploy_best": "{dataset}/deploy/best",
    "model_folder": "{dataset}/deploy/best-hf",
}
# A job file's folder below results_dir and suffix.
JOB_FILE_KINDS = {"log": ("logs", ".log"), "benchmark": ("benchmarks", ".tsv")}

_FIELD = re.compile(r"\{(\w+)\}")


def fill(pattern: str, **fields) -> str:
    """``pattern`` with the given fields filled in and every other ``{wildcard}`` kept, e.g.
    ``fill("{dataset}/short{short_side}.npy", short_side=64)`` -> ``"{dataset}/short64.npy"``."""
    return _FIELD.sub(lambda m: str(fields.get(m.group(1), m.group(0))), pattern)


def job_file(kind: str, rule: str, **fields) -> str:
    """The log (``kind="log"``) or benchmark path pattern of ``rule``'s jobs, relative to
    ``results_dir``, with ``fields`` filled in (:func:`fill`). KeyError for an unknown kind or
    a rule without job files."""
    folder, suffix = JOB_FILE_KINDS[kind]
    return f"{folder}/{fill(JOB_FILES[rule], **fields)}{suffix}"


def pattern_regex(pattern: str) -> re.Pattern:
    """The regex that matches exactly the paths of a pattern: each field by its
    :data:`WILDCARDS` regex (one path component when not listed), a repeated field by the same
    text."""
    parts, seen, end = [], set(), 0
    for match in _FIELD.finditer(pattern):
        name = match.group(1)
        parts.append(re.escape(pattern[end : match.start()]))
        if name in seen:
            parts.append(f"(?P={name})")
        else:
            parts.append(f"(?P<{name}>{WILDCARDS.get(name, '[^/]+')})")
            seen.add(name)
        end = match.end()
    parts.append(re.escape(pattern[end:]))
    return re.compile("".join(parts))


_JOB_REGEXES = {rule: pattern_regex(stem) for rule, stem in JOB_FILES.items()}


def job_rules(relative: str | PurePosixPath, kind: str = "benchmark") -> list[str]:
    """The rules whose log or benchmark pattern (:data:`JOB_FILES`) matches ``relative``, a
    path relative to the logs or benchmarks folder (``demo/prepare.tsv`` -> ``["prepare"]``).
    Empty for a file of no current rule (e.g. of an older layout); the layout keeps the
    patterns apart, so a file of the workflow's matches one rule."""
    suffix = JOB_FILE_KINDS[kind][1]
    text = PurePosixPath(relative).as_posix()
    if not text.endswith(suffix):
        return []
    stem = text.removesuffix(suffix)
    return [rule for rule, regex in _JOB_REGEXES.items() if regex.fullmatch(stem)]
