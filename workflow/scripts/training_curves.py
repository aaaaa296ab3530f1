"""Rule training_curves: see leaf.figures.training_curves_step."""

from leaf.workflow_io import run_step

# snakemake is injected by the script directive. A light job: it runs in the warm worker when
# that is on (see leaf.warm_worker), so this process imports neither torch nor pandas.
run_step(snakemake, "leaf.figures:training_curves_step", warm=True)  # noqa: F821
