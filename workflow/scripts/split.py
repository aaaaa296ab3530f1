"""Rule split: see leaf.split.split_step."""

from leaf.split import split_step
from leaf.workflow_io import run_step

run_step(snakemake, split_step)  # noqa: F821 (snakemake is injected by the script directive)
