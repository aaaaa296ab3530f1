"""Rule deploy_best: see leaf.deploy.deploy_best_step."""

from leaf.deploy import deploy_best_step
from leaf.workflow_io import run_step

run_step(snakemake, deploy_best_step)  # noqa: F821 (snakemake is injected by the script directive)
