"""Rule evaluate: see leaf.student.steps.predict_step."""

from leaf.student.steps import predict_step
from leaf.workflow_io import run_step

run_step(snakemake, predict_step)  # noqa: F821 (snakemake is injected by the script directive)
