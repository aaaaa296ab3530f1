# Baselines: "CFT-only", stage 2 alone on the same MOS subsets without distillation: in head mode
# a fresh head over the same frozen features, in full mode the ImageNet backbone + a fresh head
# fine-tuned end to end with the same stage-2 code as calibrate_full. Its rows ("CFT-only <x>%
# MOS") are in tables 1 and 2 (tables.<table>.cft_only) and table 3, and its curve in fig4.


if STUDENT_MODE == "head":

    rule calibrate_cft:
        input:
            features=rules.features.output.features,
            manifest=rules.prepare.output.manifest,
            subsets=rules.subsets.output.subsets,
        output:
            model=f"{RESULTS}/{{dataset}}/student/{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.pt",
        log:
            f"{RESULTS}/logs/{{dataset}}/student_{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/{{dataset}}/student_{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.tsv"
        conda:
            "../envs/student.yaml"
        threads: 1
        params:
            ratio=lambda wc: float(wc.ratio),
            seed=lambda wc: int(wc.seed),
            calibration=config["calibration"],
            head=config["student"]["head"],
        script:
            "../scripts/calibrate.py"

    rule evaluate_cft:
        input:
            features=rules.features.output.features,
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
        script:
            "../scripts/evaluate.py"

else:

    rule calibrate_cft_full:
        input:
            image_cache=rules.image_cache.output.cache,
            cache_index=rules.image_cache.output.index,
            manifest=rules.prepare.output.manifest,
            subsets=rules.subsets.output.subsets,
        output:
            model=f"{RESULTS}/{{dataset}}/student/{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.pt",
        log:
            f"{RESULTS}/logs/{{dataset}}/student_{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/{{dataset}}/student_{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.tsv"
        conda:
            "../envs/student.yaml"
        threads: 2
        params:
            ratio=lambda wc: float(wc.ratio),
            seed=lambda wc: int(wc.seed),
            backbone=lambda wc: wc.backbone,
            weights=config["student"]["weights"],
            calibration=config["calibration"],
            full=config["student"]["full"],
        script:
            "../scripts/calibrate_cft_full.py"

    rule evaluate_cft_full:
        input:
            image_cache=rules.image_cache.output.cache,
            cache_index=rules.image_cache.output.index,
            split=rules.split.output.split,
            manifest=rules.prepare.output.manifest,
            model=rules.calibrate_cft_full.output.model,
        output:
            predictions=f"{RESULTS}/{{dataset}}/eval/{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.parquet",
            metrics=f"{RESULTS}/{{dataset}}/eval/{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.json",
        log:
            f"{RESULTS}/logs/{{dataset}}/eval_{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/{{dataset}}/eval_{{backbone}}/cft_seed{{seed}}_ratio{{ratio}}.tsv"
        conda:
            "../envs/student.yaml"
        threads: 2
        script:
            "../scripts/evaluate_full.py"
