"""Rule deploy: see leaf.deploy.deploy_step."""

from leaf.deploy import deploy_step
from leaf.workflow_io import run_step

run_step(snakemake, deploy_step)  # noqa: F821 (snakemake is injected by the script directive)
