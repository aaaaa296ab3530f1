"""Rule cache_pairs: see leaf.teacher.steps.cache_pairs_step."""

from leaf.workflow_io import run_step

# snakemake is injected by the script directive. The config is read at run time, not passed as
# params: a param that differs between results folders (e.g. the dataset's root) would rerun this
# shared job, and with it the teacher, for every folder. A light job: it runs in the warm worker
# when that is on (see leaf.warm_worker).
run_step(snakemake, "leaf.teacher.steps:cache_pairs_step", warm=True, config=snakemake.config)  # noqa: F821
