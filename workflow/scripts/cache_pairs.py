"""Rule cache_pairs: see leaf.teacher.cache_keys.pairs_step."""

from leaf.teacher.cache_keys import pairs_step
from leaf.workflow_io import run_step

run_step(snakemake, pairs_step)  # noqa: F821 (snakemake is injected by the script directive)
