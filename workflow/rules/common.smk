# Config validation, derived settings and input functions shared by every stage.

import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from leaf.config_checks import (
    ConfigError,
    check_config,
    resolve_table_aliases,
    schema_errors,
)
from leaf.datasets import image_files, label_file
from leaf.experiments import TABLE_KEYS, Plan, ratio_label, variant_flags
from leaf.layout import WILDCARDS
from leaf.student.stages import stage_gpus, stage_settings, stage_threads
from leaf.teacher.cache_keys import GENERATED_ADAPTERS
from leaf.teacher.factory import judgment_config, teacher_gpus

# Idle OpenMP threads of the jobs sleep instead of spinning: with spinning (the default), a
# 2-thread torch job beside any other busy process waits ~1 s per forward pass on a 2-core
# machine. Jobs inherit this environment; a value set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Old `tables` keys (table1 .. table4, fig2, fig4) are renamed, with a warning, before the
# schema (which knows only the new ones) sees them.
resolve_table_aliases(config)
try:
    validate(config, "../schemas/config.schema.yaml")
except WorkflowError as error:
    # Snakemake's message is a dump of the schema: say which key is wrong, in one line each.
    problems = schema_errors(
        config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml"
    )
    if not problems:
        raise
    raise ConfigError("invalid config:\n  " + "\n  ".join(problems)) from error
check_config(config)
# Every run, file and table row behind the configured targets (leaf.experiments.Plan).
PLAN = Plan(config)

# The main teacher's cache hash, the student backbone and the stage-1 variant of the main runs.
TEACHER_HASH = PLAN.teacher.hash
BACKBONE = PLAN.backbone
VARIANT = PLAN.variant
# Student training mode: "head" (a head on cached frozen features) or "full" (end-to-end
# fine-tuning from the decoded-image cache). The same rules run both and write the same files;
# the mode picks their inputs (student_images) and implementation (leaf.student.stages).
STUDENT_MODE = config["student"]["mode"]
# Short side (px) of the decoded-image cache of full mode.
CACHE_SHORT_SIDE = config["student"]["full"]["cache_short_side"]
# How many GPUs a job needs is a fact of what it runs (an MLLM, a fine-tuned backbone), so the
# rules declare it (resources: gpu): every job that runs an MLLM or trains/evaluates a fine-tuned
# backbone asks for its GPUs, no other job does. Memory, run time and partitions are the
# profiles' (workflow/profiles/).
STUDENT_GPUS = stage_gpus(STUDENT_MODE)
STUDENT_THREADS = stage_threads(STUDENT_MODE)


# Every wildcard's pattern, from the path layout (leaf.layout: results, cache, logs, benchmarks
# are defined there, and the rules take them from PLAN).
wildcard_constraints:
    **WILDCARDS,


def dataset_config(wildcards):
    return config["datasets"][wildcards.dataset]


def split_config(wildcards):
    """The top-level `split` section with the dataset's own `split` overrides."""
    return PLAN.dataset_split(wildcards.dataset)


def prepare_inputs(wildcards):
    """The dataset's label file (leaf.datasets.label_file: the demo's generated one, or the
    real dataset's, read in place) and its images (leaf.datasets.image_files), so that editing
    a label or an image reruns prepare and what follows.
    """
    dataset = dataset_config(wildcards)
    where = (dataset["adapter"], dataset["root"], dataset.get("options", {}))
    path = label_file(*where)
    inputs = {"images": image_files(*where)}
    return {"labels": str(path), **inputs} if path is not None else inputs


def teacher_config(wildcards):
    """The config section of the teacher (main or extra) whose hash is in the path."""
    return PLAN.teacher_by_hash(wildcards.teacher_hash).config


def teacher_judgment(wildcards):
    return judgment_config(teacher_config(wildcards))


def teacher_source(wildcards):
    """The imported judgments file, so that a change of its content reruns the teacher."""
    section = teacher_config(wildcards)
    if section["backend"] == "import":
        return {"source": section["import"]["path"]}
    return {}


def teacher_job_gpus(wildcards):
    """GPUs of one teacher shard: the MLLM's (tensor-parallel) GPUs, none for a CPU teacher."""
    return teacher_gpus(teacher_config(wildcards))


def keyed_dataset(wildcards):
    """The configured dataset with the cache keys in the path (leaf.experiments.Plan)."""
    return PLAN.keyed_dataset(wildcards.images_key, wildcards.get("pairs_key"))


def cache_key_inputs(wildcards):
    """The demo's label file, so that its key tables wait for the demo to be written. A dataset
    read in place has none: its keys fix its content (a changed image has another key, hence
    another path), and an input whose path differs between results folders would rerun the
    shared jobs (docs/cache_schema.md)."""
    section = config["datasets"][keyed_dataset(wildcards)]
    if section["adapter"] not in GENERATED_ADAPTERS:
        return {}
    return {
        "labels": str(
            label_file(section["adapter"], section["root"], section.get("options", {}))
        )
    }


def shard_keys(wildcards):
    """The cache keys of a teacher shard (its params; stored in the shard's metadata)."""
    return {
        name: wildcards[name]
        for name in ("images_key", "pairs_key")
        if name in wildcards.keys()
    }


def teacher_shards(wildcards, kind):
    """The shared shard caches (kind: points | pairs) of the teacher whose hash is in the path,
    under the dataset's cache keys."""
    n_shards = teacher_config(wildcards).get("shards", 1)
    dataset_keys = PLAN.cache_keys(wildcards.dataset)
    keys = {
        "teacher_hash": wildcards.teacher_hash,
        "images_key": dataset_keys.images_key,
    }
    if kind == "pairs":
        keys["pairs_key"] = dataset_keys.pairs_key
    return [
        PLAN.cache_file(f"{kind}_shard", shard=shard, n_shards=n_shards, **keys)
        for shard in range(n_shards)
    ]


def student_images(wildcards):
    """What a student stage reads: the cached frozen features (head mode) or the decoded-image
    cache (full mode)."""
    if STUDENT_MODE == "head":
        features = rules.features.output.features
        return {
            "features": features.format(
                dataset=wildcards.dataset, backbone=wildcards.backbone
            )
        }
    cache = rules.image_cache.output
    return {
        "image_cache": cache.cache.format(dataset=wildcards.dataset),
        "cache_index": cache.index.format(dataset=wildcards.dataset),
    }


def student_settings(stage, wildcards):
    """The `student` settings ``stage`` reads in this mode (leaf.student.stages)."""
    return stage_settings(stage, STUDENT_MODE, config["student"], wildcards.backbone)


def student_model(wildcards):
    """Label-free (ratio 0) evaluates the distilled model; other ratios the calibrated one."""
    return PLAN.student_model(
        wildcards.dataset,
        wildcards.backbone,
        wildcards.teacher_hash,
        wildcards.variant,
        wildcards.seed,
        wildcards.ratio,
    )


def main_student_model(wildcards):
    """The student of the main teacher and stage-1 variant (what deploy packages)."""
    return PLAN.student_model(
        wildcards.dataset,
        wildcards.backbone,
        TEACHER_HASH,
        VARIANT,
        wildcards.seed,
        wildcards.ratio,
    )


def distill_settings(wildcards):
    """The `distill` section with the stage-1 flags of the variant in the path."""
    return {**config["distill"], **variant_flags(wildcards.variant)}


def table_key(wildcards):
    """The `tables` key of results/{table}.csv (table1 -> aigc_comparison, ...)."""
    return TABLE_KEYS[wildcards.table]


def table_inputs(wildcards):
    return {"metrics": [path for path, _ in PLAN.table_rows(table_key(wildcards))]}


def table_rows(wildcards):
    return [row for _, row in PLAN.table_rows(table_key(wildcards))]


def fig4_inputs(wildcards):
    _, leaf_rows, cft_rows = PLAN.fig4_rows()
    return {
        "run_metrics": [path for path, _ in leaf_rows],
        "cft_metrics": [path for path, _ in cft_rows],
    }


def fig4_params(wildcards, name):
    dataset, leaf_rows, cft_rows = PLAN.fig4_rows()
    runs = {"runs": leaf_rows, "cft_runs": cft_rows}
    return dataset if name == "dataset" else [row for _, row in runs[name]]


def fig2_inputs(wildcards):
    spec = PLAN.fig2_spec()
    dataset = spec["dataset"]
    return {
        "points": PLAN.result_file(
            "teacher_points", dataset=dataset, teacher_hash=TEACHER_HASH
        ),
        "split": PLAN.result_file("split", dataset=dataset),
        "manifest": PLAN.result_file("manifest", dataset=dataset),
        "subsets": PLAN.result_file("subsets", dataset=dataset, seed=spec["seed"]),
    }
