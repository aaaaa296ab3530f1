# Student stages, one rule each whatever student.mode says; the mode decides what a stage reads
# (student_images) and which implementation runs it (leaf.student.stages):
# * head (default): a small head on frozen-backbone features cached once per (dataset, backbone)
#   by `features`; stage 1 (distill) once per seed, reused by every ratio; stage 2 (calibrate)
#   per (seed, ratio > 0);
# * full (the paper's): every image decoded once into `image_cache`, then the backbone and a
#   linear head fine-tuned end to end from it (one GPU per job, see stage_gpus).


rule features:
    input:
        manifest=rules.prepare.output.manifest,
    output:
        features=PLAN.result_pattern("features"),
    log:
        PLAN.log("features"),
    benchmark:
        PLAN.benchmark("features")
    conda:
        "../envs/student.yaml"
    threads: 2
    params:
        backbone=lambda wc: wc.backbone,
        weights=lookup(dpath="student/weights", within=config),
        image_size=lookup(dpath="student/image_size", within=config),
        crop_pct=lookup(dpath="student/crop_pct", within=config),
        batch_size=lookup(dpath="student/feature_batch_size", within=config),
        pooling=lookup(dpath="student/pooling", within=config),
        engine=lookup(dpath="student/feature_engine", within=config),
    script:
        "../scripts/features.py"


rule image_cache:
    input:
        manifest=rules.prepare.output.manifest,
    output:
        cache=PLAN.result_pattern("image_cache", short_side=CACHE_SHORT_SIDE),
        index=PLAN.result_pattern("image_cache_index", short_side=CACHE_SHORT_SIDE),
    log:
        PLAN.log("image_cache", short_side=CACHE_SHORT_SIDE),
    benchmark:
        PLAN.benchmark("image_cache", short_side=CACHE_SHORT_SIDE)
    conda:
        "../envs/student.yaml"
    threads: 2
    params:
        short_side=CACHE_SHORT_SIDE,
    script:
        "../scripts/image_cache.py"


rule distill:
    input:
        unpack(student_images),
        split=rules.split.output.split,
        teacher_points=rules.merge_points.output.merged,
        teacher_pairs=rules.filter_pairs.output.kept,
    output:
        model=PLAN.result_pattern("distilled_model"),
        history=PLAN.result_pattern("distilled_history"),
    log:
        PLAN.log("distill"),
    benchmark:
        PLAN.benchmark("distill")
    conda:
        "../envs/student.yaml"
    threads: STUDENT_THREADS
    resources:
        gpu=STUDENT_GPUS,
    params:
        mode=STUDENT_MODE,
        settings=lambda wc: student_settings("distill", wc),
        seed=lambda wc: int(wc.seed),
        distill=distill_settings,
    script:
        "../scripts/distill.py"


rule calibrate:
    input:
        unpack(student_images),
        manifest=rules.prepare.output.manifest,
        subsets=rules.subsets.output.subsets,
        distilled=rules.distill.output.model,
    output:
        model=PLAN.result_pattern("calibrated_model"),
        history=PLAN.result_pattern("calibrated_history"),
    log:
        PLAN.log("calibrate"),
    benchmark:
        PLAN.benchmark("calibrate")
    conda:
        "../envs/student.yaml"
    threads: STUDENT_THREADS
    resources:
        gpu=STUDENT_GPUS,
    params:
        mode=STUDENT_MODE,
        settings=lambda wc: student_settings("calibrate", wc),
        ratio=lambda wc: float(wc.ratio),
        seed=lambda wc: int(wc.seed),
        calibration=lookup(dpath="calibration", within=config),
    script:
        "../scripts/calibrate.py"
