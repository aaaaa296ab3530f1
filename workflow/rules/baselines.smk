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
        model=PLAN.result_pattern("cft_model"),
        history=PLAN.result_pattern("cft_history"),
    log:
        PLAN.log("calibrate_cft"),
    benchmark:
        PLAN.benchmark("calibrate_cft")
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
        predictions=PLAN.result_pattern("cft_eval_predictions"),
        metrics=PLAN.result_pattern("cft_eval_metrics"),
    log:
        PLAN.log("evaluate_cft"),
    benchmark:
        PLAN.benchmark("evaluate_cft")
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
