"""Rules evaluate and evaluate_cft: see leaf.student.stages.evaluate_step (student.mode picks
the implementation)."""

from leaf.student.stages import evaluate_step, light_job
from leaf.workflow_io import run_step

# snakemake is injected by the script directive; head-mode jobs run in the warm worker
run_step(snakemake, evaluate_step, warm=light_job)  # noqa: F821
