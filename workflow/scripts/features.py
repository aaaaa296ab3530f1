"""Rule features: see leaf.student.steps.features_step."""

from leaf.student.steps import features_step
from leaf.workflow_io import run_step

run_step(snakemake, features_step)  # noqa: F821 (snakemake is injected by the script directive)
