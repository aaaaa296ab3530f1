# Evaluation of every student on the test split (one metrics JSON per run; tables.smk
# aggregates them).


# student.mode selects how the students are evaluated (same outputs in both modes): head mode
# from the cached features, full mode from the image cache (centre crops) and the fine-tuned
# backbone stored in the checkpoint.
if STUDENT_MODE == "head":

    rule evaluate:
        input:
            features=rules.features.output.features,
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
        script:
            "../scripts/evaluate.py"

else:

    rule evaluate_full:
        input:
            image_cache=rules.image_cache.output.cache,
            cache_index=rules.image_cache.output.index,
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
        threads: 2
        script:
            "../scripts/evaluate_full.py"
