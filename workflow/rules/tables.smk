# Result tables and figures, each a target under results_dir and part of `snakemake --report`.
# What goes into each comes from the `tables` section of the config (leaf.experiments.Plan);
# the files keep the paper's numbers (table1.csv is `tables.aigc_comparison`, see
# leaf.config_checks.PAPER_TABLES). Requesting one that is not configured fails with an error
# naming the missing key.


# Jobs that only gather or merge small files: run where Snakemake runs, not as cluster jobs.
localrules:
    results_table,
    fig2,
    fig4,
    training_curves,


rule results_table:
    input:
        unpack(table_inputs),
    output:
        table=report(
            PLAN.result_pattern("table"),
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
    log:
        PLAN.log("results_table"),
    benchmark:
        PLAN.benchmark("results_table")
    conda:
        "../envs/student.yaml"
    params:
        key=table_key,
        rows=table_rows,
        plcc_kind=PLAN.plcc_kind,
    script:
        "../scripts/results_table.py"


rule fig4:
    input:
        unpack(fig4_inputs),
    output:
        png=report(
            PLAN.result_pattern("fig4_png"),
            caption="../report/fig4.rst",
            category="Figures",
            labels={"figure": "fig4"},
        ),
        svg=PLAN.result_pattern("fig4_svg"),
        csv=PLAN.result_pattern("fig4_csv"),
    log:
        PLAN.log("fig4"),
    benchmark:
        PLAN.benchmark("fig4")
    conda:
        "../envs/student.yaml"
    params:
        runs=lambda wc: fig4_params(wc, "runs"),
        cft_runs=lambda wc: fig4_params(wc, "cft_runs"),
        dataset=lambda wc: fig4_params(wc, "dataset"),
        plcc_kind=PLAN.plcc_kind,
    script:
        "../scripts/fig4.py"


rule fig2:
    input:
        unpack(fig2_inputs),
    output:
        png=report(
            PLAN.result_pattern("fig2_png"),
            caption="../report/fig2.rst",
            category="Figures",
            labels={"figure": "fig2"},
        ),
        svg=PLAN.result_pattern("fig2_svg"),
        stats=PLAN.result_pattern("fig2_stats"),
        caption=PLAN.result_pattern("fig2_caption"),
    log:
        PLAN.log("fig2"),
    benchmark:
        PLAN.benchmark("fig2")
    conda:
        "../envs/student.yaml"
    params:
        dataset=lambda wc: PLAN.fig2_spec()["dataset"],
        seed=lambda wc: PLAN.fig2_spec()["seed"],
        ratio=lambda wc: PLAN.fig2_spec()["ratio"],
    script:
        "../scripts/fig2.py"


rule training_curves:
    input:
        histories=lambda wc: [path for path, _ in PLAN.training_histories()[1]],
    output:
        png=report(
            PLAN.result_pattern("training_curves_png"),
            caption="../report/training_curves.rst",
            category="Training",
            labels={"figure": "training curves"},
        ),
        svg=PLAN.result_pattern("training_curves_svg"),
        csv=PLAN.result_pattern("training_curves_csv"),
    log:
        PLAN.log("training_curves"),
    benchmark:
        PLAN.benchmark("training_curves")
    conda:
        "../envs/student.yaml"
    params:
        runs=lambda wc: [run for _, run in PLAN.training_histories()[1]],
        dataset=lambda wc: PLAN.training_histories()[0],
    script:
        "../scripts/training_curves.py"
