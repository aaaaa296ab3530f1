"""Rule calibrate: see leaf.student.steps.calibrate_step."""

from leaf.student.steps import calibrate_step
from leaf.workflow_io import run_step

run_step(snakemake, calibrate_step)  # noqa: F821 (snakemake is injected by the script directive)
