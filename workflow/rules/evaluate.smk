# Evaluation of every student on the test split (one metrics JSON per run; tables.smk
# aggregates them). student.mode decides what it reads (student_images): the cached features
# (head) or the image cache's centre crops through the fine-tuned backbone (full, one GPU).


rule evaluate:
    input:
        unpack(student_images),
        split=rules.split.output.split,
        manifest=rules.prepare.output.manifest,
        model=student_model,
    output:
        predictions=f"{RESULTS}/{{dataset}}/eval/{{backbone}}/{{teacher_hash}}/{{variant}}/seed{{seed}}_ratio{{ratio}}.parquet",
        metrics=f"{RESULTS}/{{dataset}}/eval/{{backbone}}/{{teacher_hash}}/{{variant}}/seed{{seed}}_ratio{{ratio}}.json",
    log:
        f"{RESULTS}/logs/{{dataset}}/eval_{{backbone}}/{{teacher_hash}}/{{variant}}/seed{{seed}}_ratio{{ratio}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/eval_{{backbone}}/{{teacher_hash}}/{{variant}}/seed{{seed}}_ratio{{ratio}}.tsv"
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
