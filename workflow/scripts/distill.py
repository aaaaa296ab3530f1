"""Rule distill: see leaf.student.stages.distill_step (student.mode picks the
implementation)."""

from leaf.student.stages import distill_step
from leaf.workflow_io import run_step

run_step(snakemake, distill_step)  # noqa: F821 (snakemake is injected by the script directive)
