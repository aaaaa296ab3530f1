# Student stages (cached-feature "head" mode): frozen-backbone features computed once per
# (dataset, backbone); stage 1 distillation once per seed (reused by every ratio); stage 2
# calibration per (seed, ratio > 0).


rule features:
    input:
        manifest=rules.prepare.output.manifest,
    output:
        features=f"{RESULTS}/{{dataset}}/features/{{backbone}}.pt",
    log:
        f"{RESULTS}/logs/{{dataset}}/features_{{backbone}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/features_{{backbone}}.tsv"
    conda:
        "../envs/student.yaml"
    threads: 2
    params:
        backbone=lambda wc: wc.backbone,
        weights=config["student"]["weights"],
        image_size=config["student"]["image_size"],
        batch_size=config["student"]["feature_batch_size"],
    script:
        "../scripts/features.py"


rule distill:
    input:
        features=rules.features.output.features,
        split=rules.split.output.split,
        teacher_points=f"{RESULTS}/{{dataset}}/teacher/{TEACHER_HASH}/points.parquet",
        teacher_pairs=f"{RESULTS}/{{dataset}}/teacher/{TEACHER_HASH}/pairs_kept.parquet",
    output:
        model=f"{RESULTS}/{{dataset}}/student/{{backbone}}/distill_seed{{seed}}.pt",
    log:
        f"{RESULTS}/logs/{{dataset}}/student_{{backbone}}/distill_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/student_{{backbone}}/distill_seed{{seed}}.tsv"
    conda:
        "../envs/student.yaml"
    threads: 1
    params:
        seed=lambda wc: int(wc.seed),
        head=config["student"]["head"],
        distill=config["distill"],
    script:
        "../scripts/distill.py"


rule calibrate:
    input:
        features=rules.features.output.features,
        manifest=rules.prepare.output.manifest,
        subsets=rules.subsets.output.subsets,
        distilled=rules.distill.output.model,
    output:
        model=f"{RESULTS}/{{dataset}}/student/{{backbone}}/calibrated_seed{{seed}}_ratio{{ratio}}.pt",
    log:
        f"{RESULTS}/logs/{{dataset}}/student_{{backbone}}/calibrate_seed{{seed}}_ratio{{ratio}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/student_{{backbone}}/calibrate_seed{{seed}}_ratio{{ratio}}.tsv"
    conda:
        "../envs/student.yaml"
    threads: 1
    params:
        ratio=lambda wc: float(wc.ratio),
        seed=lambda wc: int(wc.seed),
        calibration=config["calibration"],
    script:
        "../scripts/calibrate.py"
