# Baselines: "CFT-only" (calibration fine-tuning only), stage 2 alone on the same MOS subsets
# without distillation: in head mode a fresh head over the same frozen features, in full mode the
# ImageNet backbone + a fresh head fine-tuned end to end with the same stage-2 code as
# `calibrate`. Its rows ("CFT-only <x>% MOS") are in tables 1 and 2 (tables.<table>.cft_only)
# and table 3, and its curve in fig4.


rule calibrate_cft:
    input:
        unpack(student_images),
        manifest=rules.prepare.output.manifest,
        subsets=rules.subsets.output.subsets,
    output:
        model=f"{RESULTS}/{{dataset}}/student/{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.pt",
        history=f"{RESULTS}/{{dataset}}/student/{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.history.csv",
    log:
        f"{RESULTS}/logs/{{dataset}}/student_{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/student_{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.tsv"
    conda:
        "../envs/student.yaml"
    threads: STUDENT_THREADS
    resources:
        gpu=STUDENT_GPUS,
    params:
        mode=STUDENT_MODE,
        settings=lambda wc: student_settings("calibrate_cft", wc),
        ratio=lambda wc: float(wc.ratio),
        seed=lambda wc: int(wc.seed),
        calibration=lookup(dpath="calibration", within=config),
    script:
        "../scripts/calibrate_cft.py"


rule evaluate_cft:
    input:
        unpack(student_images),
        split=rules.split.output.split,
        manifest=rules.prepare.output.manifest,
        model=rules.calibrate_cft.output.model,
    output:
        predictions=f"{RESULTS}/{{dataset}}/eval/{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.parquet",
        metrics=f"{RESULTS}/{{dataset}}/eval/{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.json",
    log:
        f"{RESULTS}/logs/{{dataset}}/eval_{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/eval_{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.tsv"
    conda:
        "../envs/student.yaml"
    threads: STUDENT_THREADS
    resources:
        gpu=STUDENT_GPUS,
    params:
        mode=STUDENT_MODE,
        settings=lambda wc: student_settings("evaluate", wc),
    script:
        "../scripts/evaluate.py"
