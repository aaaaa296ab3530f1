"""Rule fig4: see leaf.figures.fig4_step."""

from leaf.figures import fig4_step
from leaf.workflow_io import run_step

run_step(snakemake, fig4_step)  # noqa: F821 (snakemake is injected by the script directive)
