"""Rule prepare: see leaf.datasets.prepare_step."""

from leaf.datasets import prepare_step
from leaf.workflow_io import run_step

run_step(snakemake, prepare_step)  # noqa: F821 (snakemake is injected by the script directive)
