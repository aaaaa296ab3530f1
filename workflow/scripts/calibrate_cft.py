"""Rule calibrate_cft: see leaf.student.stages.calibrate_cft_step (student.mode picks the
implementation)."""

from leaf.student.stages import calibrate_cft_step
from leaf.workflow_io import run_step

run_step(snakemake, calibrate_cft_step)  # noqa: F821 (snakemake is injected by the script directive)
