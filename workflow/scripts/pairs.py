"""Rule pairs: see leaf.pairs.pairs_step."""

from leaf.pairs import pairs_step
from leaf.workflow_io import run_step

run_step(snakemake, pairs_step)  # noqa: F821 (snakemake is injected by the script directive)
