# Evaluation on the test split and the result tables.


rule evaluate:
    input:
        features=rules.features.output.features,
        split=rules.split.output.split,
        manifest=rules.prepare.output.manifest,
        model=student_model,
    output:
        predictions=f"{RESULTS}/{{dataset}}/eval/{{backbone}}/seed{{seed}}_ratio{{ratio}}.parquet",
        metrics=f"{RESULTS}/{{dataset}}/eval/{{backbone}}/seed{{seed}}_ratio{{ratio}}.json",
    log:
        f"{RESULTS}/logs/{{dataset}}/eval_{{backbone}}/seed{{seed}}_ratio{{ratio}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/eval_{{backbone}}/seed{{seed}}_ratio{{ratio}}.tsv"
    conda:
        "../envs/student.yaml"
    script:
        "../scripts/evaluate.py"


rule table1:
    input:
        unpack(table1_inputs),
    output:
        table=f"{RESULTS}/table1.csv",
    log:
        f"{RESULTS}/logs/table1.log",
    benchmark:
        f"{RESULTS}/benchmarks/table1.tsv"
    conda:
        "../envs/student.yaml"
    params:
        runs=table1_runs(),
        teachers=config["tables"]["table1"]["datasets"],
    script:
        "../scripts/table1.py"
