# Baselines: "CFT-only", stage 2 alone (a fresh head calibrated on the same MOS subsets, from the
# same frozen features, without distillation). Its rows ("CFT-only <x>% MOS") are in tables 1
# and 2 (tables.<table>.cft_only) and table 3, and its curve in fig4.


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
