"""Rules evaluate and evaluate_cft: see leaf.student.stages.evaluate_step (student.mode picks
the implementation)."""

from leaf.student.stages import evaluate_step
from leaf.workflow_io import run_step

run_step(snakemake, evaluate_step)  # noqa: F821 (snakemake is injected by the script directive)
