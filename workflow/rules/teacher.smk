# Teacher stages: point-wise and pair-wise judgments in shards (one job each, e.g. one GPU job
# per shard on a cluster), merged into the Parquet caches; confidence filtering; the teacher's
# own zero-shot result. Every configured teacher (`teacher` and `extra_teachers`) runs through
# these rules under its own hash (teacher config minus name, tau, shards and speed options).
#
# The shards live in one folder shared by every results folder, `teacher_cache`, keyed by what
# defines them (docs/cache_schema.md): the images' content (images key), the pair set (pairs
# key) and the teacher hash. The keys are computed while Snakemake plans, from the dataset's own
# files (no checkpoint); a key table per key (cache_images, cache_pairs), written from the
# dataset's files too, holds what the shards are shown, so that no shared file has a results
# folder's file as input. The merges are per results folder and check that the shards hold
# exactly that folder's images and pairs.


# Jobs that only gather, write or merge small files: run where Snakemake runs, not as cluster jobs.
localrules:
    cache_images,
    cache_pairs,
    merge_points,
    merge_pairs,
    filter_pairs,
    teacher_zero_shot,


rule cache_images:
    input:
        unpack(cache_key_inputs),
    output:
        table=PLAN.cache_pattern("images"),
    log:
        PLAN.log("cache_images"),
    benchmark:
        PLAN.benchmark("cache_images")
    conda:
        "../envs/student.yaml"
    params:
        images_key=lambda wc: wc.images_key,
    script:
        "../scripts/cache_images.py"


rule cache_pairs:
    input:
        unpack(cache_key_inputs),
    output:
        table=PLAN.cache_pattern("pairs"),
    log:
        PLAN.log("cache_pairs"),
    benchmark:
        PLAN.benchmark("cache_pairs")
    conda:
        "../envs/student.yaml"
    params:
        images_key=lambda wc: wc.images_key,
        pairs_key=lambda wc: wc.pairs_key,
    script:
        "../scripts/cache_pairs.py"


# No `ancient` inputs here: Snakemake 9.27 drops the jobs downstream of an `ancient` input
# whose producer reruns (e.g. on a changed param) and still exits 0 (tests/test_shared_cache.py).
rule teacher_point:
    input:
        unpack(teacher_source),
        manifest=rules.cache_images.output.table,
    output:
        points=PLAN.cache_pattern("points_shard"),
    log:
        PLAN.log("teacher_point"),
    benchmark:
        PLAN.benchmark("teacher_point")
    conda:
        "../envs/teacher.yaml"
    resources:
        gpu=teacher_job_gpus,
    params:
        teacher=teacher_judgment,
        cache_keys=shard_keys,
        shard=lambda wc: int(wc.shard),
        n_shards=lambda wc: int(wc.n_shards),
    script:
        "../scripts/teacher_point.py"


rule teacher_pair:
    input:
        unpack(teacher_source),
        manifest=rules.cache_images.output.table,
        pairs=rules.cache_pairs.output.table,
    output:
        teacher_pairs=PLAN.cache_pattern("pairs_shard"),
    log:
        PLAN.log("teacher_pair"),
    benchmark:
        PLAN.benchmark("teacher_pair")
    conda:
        "../envs/teacher.yaml"
    resources:
        gpu=teacher_job_gpus,
    params:
        teacher=teacher_judgment,
        cache_keys=shard_keys,
        shard=lambda wc: int(wc.shard),
        n_shards=lambda wc: int(wc.n_shards),
    script:
        "../scripts/teacher_pair.py"


rule merge_points:
    input:
        shards=lambda wc: teacher_shards(wc, "points"),
        manifest=rules.prepare.output.manifest,
    output:
        merged=PLAN.result_pattern("teacher_points"),
    log:
        PLAN.log("merge_points"),
    benchmark:
        PLAN.benchmark("merge_points")
    conda:
        "../envs/student.yaml"
    script:
        "../scripts/merge_points.py"


rule merge_pairs:
    input:
        shards=lambda wc: teacher_shards(wc, "pairs"),
        pairs=rules.pairs.output.pairs,
    output:
        merged=PLAN.result_pattern("teacher_pairs"),
    log:
        PLAN.log("merge_pairs"),
    benchmark:
        PLAN.benchmark("merge_pairs")
    conda:
        "../envs/student.yaml"
    script:
        "../scripts/merge_pairs.py"


rule filter_pairs:
    input:
        pairs=rules.merge_pairs.output.merged,
    output:
        kept=PLAN.result_pattern("teacher_pairs_kept"),
    log:
        PLAN.log("filter_pairs"),
    benchmark:
        PLAN.benchmark("filter_pairs")
    conda:
        "../envs/student.yaml"
    params:
        tau=lambda wc: teacher_config(wc)["tau"],
    script:
        "../scripts/filter_pairs.py"


rule teacher_zero_shot:
    input:
        points=rules.merge_points.output.merged,
        split=rules.split.output.split,
        manifest=rules.prepare.output.manifest,
    output:
        metrics=PLAN.result_pattern("teacher_eval"),
    log:
        PLAN.log("teacher_zero_shot"),
    benchmark:
        PLAN.benchmark("teacher_zero_shot")
    conda:
        "../envs/student.yaml"
    script:
        "../scripts/teacher_zero_shot.py"
