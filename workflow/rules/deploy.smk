# Deployment: each student as a self-contained artifact (backbone + head weights, preprocessing,
# MOS calibration, provenance) for `leaf predict` / `leaf export`, and the best calibrated one.
#
# results/{dataset}/deploy/best.leaf.pt: among the calibrated students of one MOS ratio
# (deploy.ratio, default the largest of calibration.ratios; one run per seed), the one with the
# best SRCC on the held-out select part of its MOS subset (the score its calibrate checkpoint
# kept its epoch by); test scores are never used to choose. Runs at different ratios are not
# compared: their select parts differ in size. selection.csv beside it lists the runs compared
# (select SRCC, select n) and the chosen one; `rule all` builds it for the benchmark datasets
# (table1/table2), so the report shows it (category "Deploy").
# Next to it, results/{dataset}/deploy/best-hf/ is the same model as a folder to share
# (model.safetensors, config.json, README.md model card with its run's test SRCC/PLCC).


# Jobs that only gather or merge small files: run where Snakemake runs, not as cluster jobs.
localrules:
    deploy_best,
    model_folder,


rule deploy:
    input:
        model=main_student_model,
    output:
        artifact=PLAN.result_pattern("deploy_artifact"),
    log:
        PLAN.log("deploy"),
    benchmark:
        PLAN.benchmark("deploy")
    conda:
        "../envs/student.yaml"
    threads: 1
    params:
        dataset=lambda wc: wc.dataset,
        backbone=lambda wc: wc.backbone,
        weights=lookup(dpath="student/weights", within=config),
        image_size=lookup(dpath="student/image_size", within=config),
        crop_pct=lookup(dpath="student/crop_pct", within=config),
        pooling=lookup(dpath="student/pooling", within=config),
        seed=lambda wc: int(wc.seed),
        ratio=lambda wc: float(wc.ratio),
        teacher_hash=TEACHER_HASH,
        teacher_backend=config["teacher"]["backend"],
        # Name, backend and model of the teacher, recorded for the model card.
        teacher=PLAN.teacher.description,
        # What defines the student (stored, and hashed into config_hash); the artifact records
        # its own seed and ratio, so `seeds` and calibration.ratios are left out.
        run_config=lambda wc: {
            "dataset": {"name": wc.dataset, **dataset_config(wc)},
            "teacher_hash": TEACHER_HASH,
            "split": split_config(wc),
            **{name: config[name] for name in ("pairs", "student", "distill")},
            "calibration": {
                k: v for k, v in config["calibration"].items() if k != "ratios"
            },
        },
    script:
        "../scripts/deploy.py"


rule deploy_best:
    input:
        # The calibrated run of every seed at the deploy ratio, of the configured backbone.
        candidates=lambda wc: [
            PLAN.result_file(
                "deploy_artifact",
                dataset=wc.dataset,
                backbone=BACKBONE,
                seed=seed,
                ratio=ratio,
            )
            for seed, ratio in PLAN.deploy_runs()
        ],
    output:
        artifact=PLAN.result_pattern("best_artifact"),
        selection=report(
            PLAN.result_pattern("deploy_selection"),
            caption="../report/deploy_selection.rst",
            category="Deploy",
            labels={"dataset": "{dataset}", "table": "deploy selection"},
        ),
    log:
        PLAN.log("deploy_best"),
    benchmark:
        PLAN.benchmark("deploy_best")
    conda:
        "../envs/student.yaml"
    params:
        ratio=lambda wc: PLAN.deploy_ratio(),
    script:
        "../scripts/deploy_best.py"


rule model_folder:
    input:
        artifact=rules.deploy_best.output.artifact,
        # The test metrics of every run deploy_best compared; the card reports the chosen
        # run's (leaf.model_card.matching_evaluation).
        evaluations=lambda wc: [
            PLAN.eval_file(wc.dataset, BACKBONE, TEACHER_HASH, VARIANT, seed, ratio)
            for seed, ratio in PLAN.deploy_runs()
        ],
    output:
        weights=PLAN.result_pattern("model_folder_weights"),
        config=PLAN.result_pattern("model_folder_config"),
        card=PLAN.result_pattern("model_folder_card"),
    log:
        PLAN.log("model_folder"),
    benchmark:
        PLAN.benchmark("model_folder")
    conda:
        "../envs/student.yaml"
    params:
        licence=config["deploy"]["licence"],
    script:
        "../scripts/model_folder.py"
