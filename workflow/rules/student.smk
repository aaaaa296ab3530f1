# Student stages. `features` (frozen-backbone features, once per (dataset, backbone)) always
# exists. student.mode selects the training rules, which write the same files in both modes:
# * head (default): stage 1 distillation on the cached features once per seed (reused by every
#   ratio), stage 2 calibration per (seed, ratio > 0);
# * full (the paper's): every image decoded once into an image cache (image_cache), then the
#   backbone and a linear head fine-tuned end to end from it (distill_full, calibrate_full).


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
        pooling=config["student"].get("pooling", "center_crop"),
    script:
        "../scripts/features.py"


if STUDENT_MODE == "head":

    rule distill:
        input:
            features=rules.features.output.features,
            split=rules.split.output.split,
            teacher_points=f"{RESULTS}/{{dataset}}/teacher/{{teacher_hash}}/points.parquet",
            teacher_pairs=f"{RESULTS}/{{dataset}}/teacher/{{teacher_hash}}/pairs_kept.parquet",
        output:
            model=f"{RESULTS}/{{dataset}}/student/{{backbone}}/{{teacher_hash}}/{{variant}}/distill_seed{{seed}}.pt",
        log:
            f"{RESULTS}/logs/{{dataset}}/student_{{backbone}}/{{teacher_hash}}/{{variant}}/distill_seed{{seed}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/{{dataset}}/student_{{backbone}}/{{teacher_hash}}/{{variant}}/distill_seed{{seed}}.tsv"
        conda:
            "../envs/student.yaml"
        threads: 1
        params:
            seed=lambda wc: int(wc.seed),
            head=config["student"]["head"],
            distill=distill_settings,
        script:
            "../scripts/distill.py"

    rule calibrate:
        input:
            features=rules.features.output.features,
            manifest=rules.prepare.output.manifest,
            subsets=rules.subsets.output.subsets,
            distilled=rules.distill.output.model,
        output:
            model=f"{RESULTS}/{{dataset}}/student/{{backbone}}/{{teacher_hash}}/{{variant}}/calibrated_seed{{seed}}_ratio{{ratio}}.pt",
        log:
            f"{RESULTS}/logs/{{dataset}}/student_{{backbone}}/{{teacher_hash}}/{{variant}}/calibrate_seed{{seed}}_ratio{{ratio}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/{{dataset}}/student_{{backbone}}/{{teacher_hash}}/{{variant}}/calibrate_seed{{seed}}_ratio{{ratio}}.tsv"
        conda:
            "../envs/student.yaml"
        threads: 1
        params:
            ratio=lambda wc: float(wc.ratio),
            seed=lambda wc: int(wc.seed),
            calibration=config["calibration"],
        script:
            "../scripts/calibrate.py"

else:
    CACHE_SHORT_SIDE = config["student"]["full"]["cache_short_side"]

    rule image_cache:
        input:
            manifest=rules.prepare.output.manifest,
        output:
            cache=f"{RESULTS}/{{dataset}}/image_cache/short{CACHE_SHORT_SIDE}.npy",
            index=f"{RESULTS}/{{dataset}}/image_cache/short{CACHE_SHORT_SIDE}.parquet",
        log:
            f"{RESULTS}/logs/{{dataset}}/image_cache_short{CACHE_SHORT_SIDE}.log",
        benchmark:
            f"{RESULTS}/benchmarks/{{dataset}}/image_cache_short{CACHE_SHORT_SIDE}.tsv"
        conda:
            "../envs/student.yaml"
        threads: 2
        params:
            short_side=CACHE_SHORT_SIDE,
        script:
            "../scripts/image_cache.py"

    rule distill_full:
        input:
            image_cache=rules.image_cache.output.cache,
            cache_index=rules.image_cache.output.index,
            split=rules.split.output.split,
            teacher_points=f"{RESULTS}/{{dataset}}/teacher/{{teacher_hash}}/points.parquet",
            teacher_pairs=f"{RESULTS}/{{dataset}}/teacher/{{teacher_hash}}/pairs_kept.parquet",
        output:
            model=f"{RESULTS}/{{dataset}}/student/{{backbone}}/{{teacher_hash}}/{{variant}}/distill_seed{{seed}}.pt",
        log:
            f"{RESULTS}/logs/{{dataset}}/student_{{backbone}}/{{teacher_hash}}/{{variant}}/distill_seed{{seed}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/{{dataset}}/student_{{backbone}}/{{teacher_hash}}/{{variant}}/distill_seed{{seed}}.tsv"
        conda:
            "../envs/student.yaml"
        threads: 2
        params:
            seed=lambda wc: int(wc.seed),
            backbone=lambda wc: wc.backbone,
            weights=config["student"]["weights"],
            distill=distill_settings,
            full=config["student"]["full"],
        script:
            "../scripts/distill_full.py"

    rule calibrate_full:
        input:
            image_cache=rules.image_cache.output.cache,
            cache_index=rules.image_cache.output.index,
            manifest=rules.prepare.output.manifest,
            subsets=rules.subsets.output.subsets,
            distilled=rules.distill_full.output.model,
        output:
            model=f"{RESULTS}/{{dataset}}/student/{{backbone}}/{{teacher_hash}}/{{variant}}/calibrated_seed{{seed}}_ratio{{ratio}}.pt",
        log:
            f"{RESULTS}/logs/{{dataset}}/student_{{backbone}}/{{teacher_hash}}/{{variant}}/calibrate_seed{{seed}}_ratio{{ratio}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/{{dataset}}/student_{{backbone}}/{{teacher_hash}}/{{variant}}/calibrate_seed{{seed}}_ratio{{ratio}}.tsv"
        conda:
            "../envs/student.yaml"
        threads: 2
        params:
            ratio=lambda wc: float(wc.ratio),
            seed=lambda wc: int(wc.seed),
            calibration=config["calibration"],
            full=config["student"]["full"],
        script:
            "../scripts/calibrate_full.py"
