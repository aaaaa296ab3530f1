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
        predictions=PLAN.result_pattern("eval_predictions"),
        metrics=PLAN.result_pattern("eval_metrics"),
    log:
        PLAN.log("evaluate"),
    benchmark:
        PLAN.benchmark("evaluate")
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
