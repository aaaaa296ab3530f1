# Config validation, derived settings and input functions shared by every stage.

from snakemake.utils import validate

from leaf.config_checks import check_config
from leaf.teacher.factory import judgment_config, teacher_hash

validate(config, "../schemas/config.schema.yaml")
check_config(config)

RESULTS = config["results_dir"]
TEACHER_JUDGMENT = judgment_config(config["teacher"])
TEACHER_HASH = teacher_hash(config["teacher"])
BACKBONE = config["student"]["backbone"]
N_SHARDS = config["teacher"].get("shards", 1)
# Student training mode: "head" (cached features, student.smk's distill/calibrate and
# evaluate.smk's evaluate) or "full" (end-to-end fine-tuning from the decoded-image cache:
# image_cache, distill_full, calibrate_full, evaluate_full). Both write the same files.
STUDENT_MODE = config["student"].get("mode", "head")


wildcard_constraints:
    dataset="[A-Za-z0-9_-]+",
    seed=r"\d+",
    ratio=r"[0-9.]+",
    shard=r"\d+",
    teacher_hash="[0-9a-f]{12}",
    backbone="[A-Za-z0-9_.-]+",


def ratio_label(ratio):
    """The ratio as it appears in file names, e.g. 0.1 -> '0.1', 0.0 -> '0'."""
    return f"{float(ratio):g}"


def dataset_config(wildcards):
    return config["datasets"][wildcards.dataset]


def prepare_inputs(wildcards):
    """The generated demo labels for the demo adapter; real datasets are read in place."""
    if dataset_config(wildcards)["adapter"] == "demo":
        return {"labels": f"{dataset_config(wildcards)['root']}/labels.csv"}
    return {}


def teacher_source(wildcards):
    """The imported judgments file, so that a change of its content reruns the teacher."""
    if config["teacher"]["backend"] == "import":
        return {"source": config["teacher"]["import"]["path"]}
    return {}


def teacher_dir(wildcards):
    return f"{RESULTS}/{wildcards.dataset}/teacher/{TEACHER_HASH}"


def point_shards(wildcards):
    return [
        f"{teacher_dir(wildcards)}/shards/points_{shard}-of-{N_SHARDS}.parquet"
        for shard in range(N_SHARDS)
    ]


def pair_shards(wildcards):
    return [
        f"{teacher_dir(wildcards)}/shards/pairs_{shard}-of-{N_SHARDS}.parquet"
        for shard in range(N_SHARDS)
    ]


def student_model(wildcards):
    """Label-free (ratio 0) evaluates the distilled model; other ratios the calibrated one."""
    student_dir = f"{RESULTS}/{wildcards.dataset}/student/{wildcards.backbone}"
    if float(wildcards.ratio) == 0:
        return f"{student_dir}/distill_seed{wildcards.seed}.pt"
    return f"{student_dir}/calibrated_seed{wildcards.seed}_ratio{wildcards.ratio}.pt"


def table1_runs():
    """(dataset, seed, ratio) of every student run reported in table 1."""
    return [
        {"dataset": dataset, "seed": seed, "ratio": ratio_label(ratio)}
        for dataset in config["tables"]["table1"]["datasets"]
        for ratio in config["calibration"]["ratios"]
        for seed in config["seeds"]
    ]


def table1_inputs(wildcards):
    return {
        "run_metrics": [
            f"{RESULTS}/{run['dataset']}/eval/{BACKBONE}/seed{run['seed']}_ratio{run['ratio']}.json"
            for run in table1_runs()
        ],
        "teacher_metrics": [
            f"{RESULTS}/{dataset}/eval/teacher_{TEACHER_HASH}.json"
            for dataset in config["tables"]["table1"]["datasets"]
        ],
    }


def cft_runs():
    """(dataset, seed, ratio) of every CFT-only run: the table1 runs with a MOS ratio > 0."""
    return [run for run in table1_runs() if float(run["ratio"]) > 0]
