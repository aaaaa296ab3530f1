"""Rule distill_full: see leaf.student.full.full_distill_step."""

from leaf.student.full import full_distill_step
from leaf.workflow_io import run_step

run_step(snakemake, full_distill_step)  # noqa: F821 (snakemake is injected by the script directive)
