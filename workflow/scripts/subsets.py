"""Rule subsets: see leaf.split.subsets_step."""

from leaf.split import subsets_step
from leaf.workflow_io import run_step

run_step(snakemake, subsets_step)  # noqa: F821 (snakemake is injected by the script directive)
