"""Rule distill: see leaf.student.steps.distill_step."""

from leaf.student.steps import distill_step
from leaf.workflow_io import run_step

run_step(snakemake, distill_step)  # noqa: F821 (snakemake is injected by the script directive)
