# Data stages: the embedded demo dataset, the manifest, the train/test split, the nested MOS
# subsets and the random pairs.


rule demo_dataset:
    output:
        labels="resources/demo/labels.csv",
        images=directory("resources/demo/images"),
    log:
        "resources/demo/demo_dataset.log",
    benchmark:
        "resources/demo/demo_dataset.benchmark.tsv"
    conda:
        "../envs/student.yaml"
    params:
        size=config["demo"]["size"],
        levels=config["demo"]["levels"],
        seed=config["demo"]["seed"],
    script:
        "../scripts/demo_dataset.py"


rule prepare:
    input:
        unpack(prepare_inputs),
    output:
        manifest=PLAN.result_pattern("manifest"),
    log:
        PLAN.log("prepare"),
    benchmark:
        PLAN.benchmark("prepare")
    conda:
        "../envs/student.yaml"
    # Every image is decoded once (sizes and hashes); Pillow decodes in parallel threads.
    threads: 2
    params:
        adapter=lambda wc: dataset_config(wc)["adapter"],
        root=lambda wc: dataset_config(wc)["root"],
        options=lambda wc: dataset_config(wc).get("options", {}),
    script:
        "../scripts/prepare.py"


rule split:
    input:
        manifest=rules.prepare.output.manifest,
    output:
        split=PLAN.result_pattern("split"),
    log:
        PLAN.log("split"),
    benchmark:
        PLAN.benchmark("split")
    conda:
        "../envs/student.yaml"
    params:
        test_fraction=lambda wc: split_config(wc)["test_fraction"],
        seed=lambda wc: split_config(wc)["seed"],
        group_by=lambda wc: split_config(wc)["group_by"],
        official_column=lambda wc: split_config(wc)["official_column"],
    script:
        "../scripts/split.py"


rule subsets:
    input:
        split=rules.split.output.split,
    output:
        subsets=PLAN.result_pattern("subsets"),
    log:
        PLAN.log("subsets"),
    benchmark:
        PLAN.benchmark("subsets")
    conda:
        "../envs/student.yaml"
    params:
        # Every ratio of a configured table or figure (calibration.ratios, fig4, table3/4).
        ratios=PLAN.all_ratios(),
        seed=lambda wc: int(wc.seed),
        holdout_fraction=config["calibration"]["holdout_fraction"],
    script:
        "../scripts/subsets.py"


rule pairs:
    input:
        split=rules.split.output.split,
    output:
        pairs=PLAN.result_pattern("pairs"),
    log:
        PLAN.log("pairs"),
    benchmark:
        PLAN.benchmark("pairs")
    conda:
        "../envs/student.yaml"
    params:
        per_image=config["pairs"]["per_image"],
        seed=config["pairs"]["seed"],
    script:
        "../scripts/pairs.py"
