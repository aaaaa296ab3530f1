"""Rule fig2: see leaf.figures.fig2_step."""

from leaf.figures import fig2_step
from leaf.workflow_io import run_step

run_step(snakemake, fig2_step)  # noqa: F821 (snakemake is injected by the script directive)
