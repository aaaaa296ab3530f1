# Teacher stages: point-wise and pair-wise judgments in shards (one job each, e.g. one GPU job
# per shard on a cluster), merged into the Parquet caches; confidence filtering; the teacher's
# own zero-shot result. The cache folder is keyed by the teacher hash (teacher config minus name,
# tau and shards), so only a change of the judging configuration recomputes it. Every configured
# teacher (`teacher` and `extra_teachers`) runs through these rules under its own hash.


# Jobs that only gather or merge small files: run where Snakemake runs, not as cluster jobs.
localrules:
    merge_points,
    merge_pairs,
    filter_pairs,
    teacher_zero_shot,


rule teacher_point:
    input:
        unpack(teacher_source),
        manifest=rules.prepare.output.manifest,
    output:
        points=f"{RESULTS}/{{dataset}}/teacher/{{teacher_hash}}/shards/points_{{shard}}-of-{{n_shards}}.parquet",
    log:
        f"{RESULTS}/logs/{{dataset}}/teacher_{{teacher_hash}}/point_{{shard}}-of-{{n_shards}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/teacher_{{teacher_hash}}/point_{{shard}}-of-{{n_shards}}.tsv"
    conda:
        "../envs/teacher.yaml"
    resources:
        gpu=teacher_job_gpus,
    params:
        teacher=teacher_judgment,
        shard=lambda wc: int(wc.shard),
        n_shards=lambda wc: int(wc.n_shards),
    script:
        "../scripts/teacher_point.py"


rule teacher_pair:
    input:
        unpack(teacher_source),
        manifest=rules.prepare.output.manifest,
        pairs=rules.pairs.output.pairs,
    output:
        teacher_pairs=f"{RESULTS}/{{dataset}}/teacher/{{teacher_hash}}/shards/pairs_{{shard}}-of-{{n_shards}}.parquet",
    log:
        f"{RESULTS}/logs/{{dataset}}/teacher_{{teacher_hash}}/pair_{{shard}}-of-{{n_shards}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/teacher_{{teacher_hash}}/pair_{{shard}}-of-{{n_shards}}.tsv"
    conda:
        "../envs/teacher.yaml"
    resources:
        gpu=teacher_job_gpus,
    params:
        teacher=teacher_judgment,
        shard=lambda wc: int(wc.shard),
        n_shards=lambda wc: int(wc.n_shards),
    script:
        "../scripts/teacher_pair.py"


rule merge_points:
    input:
        shards=lambda wc: teacher_shards(wc, "points"),
    output:
        merged=f"{RESULTS}/{{dataset}}/teacher/{{teacher_hash}}/points.parquet",
    log:
        f"{RESULTS}/logs/{{dataset}}/teacher_{{teacher_hash}}/merge_points.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/teacher_{{teacher_hash}}/merge_points.tsv"
    conda:
        "../envs/student.yaml"
    script:
        "../scripts/merge_points.py"


rule merge_pairs:
    input:
        shards=lambda wc: teacher_shards(wc, "pairs"),
    output:
        merged=f"{RESULTS}/{{dataset}}/teacher/{{teacher_hash}}/pairs.parquet",
    log:
        f"{RESULTS}/logs/{{dataset}}/teacher_{{teacher_hash}}/merge_pairs.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/teacher_{{teacher_hash}}/merge_pairs.tsv"
    conda:
        "../envs/student.yaml"
    script:
        "../scripts/merge_pairs.py"


rule filter_pairs:
    input:
        pairs=rules.merge_pairs.output.merged,
    output:
        kept=f"{RESULTS}/{{dataset}}/teacher/{{teacher_hash}}/pairs_kept.parquet",
    log:
        f"{RESULTS}/logs/{{dataset}}/teacher_{{teacher_hash}}/filter_pairs.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/teacher_{{teacher_hash}}/filter_pairs.tsv"
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
        metrics=f"{RESULTS}/{{dataset}}/eval/teacher_{{teacher_hash}}.json",
    log:
        f"{RESULTS}/logs/{{dataset}}/teacher_{{teacher_hash}}/zero_shot.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/teacher_{{teacher_hash}}/zero_shot.tsv"
    conda:
        "../envs/student.yaml"
    script:
        "../scripts/teacher_zero_shot.py"
