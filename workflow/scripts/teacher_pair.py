"""Rule teacher_pair: see leaf.teacher.steps.teacher_pairs_step."""

from leaf.teacher.steps import teacher_pairs_step
from leaf.workflow_io import run_step

run_step(snakemake, teacher_pairs_step)  # noqa: F821 (snakemake is injected by the script directive)
