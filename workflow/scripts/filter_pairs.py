"""Rule filter_pairs: see leaf.teacher.cache.filter_pairs_step."""

from leaf.teacher.cache import filter_pairs_step
from leaf.workflow_io import run_step

run_step(snakemake, filter_pairs_step)  # noqa: F821 (snakemake is injected by the script directive)
