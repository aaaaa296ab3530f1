"""Rule teacher_zero_shot: see leaf.tables.teacher_zero_shot_step."""

from leaf.tables import teacher_zero_shot_step
from leaf.workflow_io import run_step

run_step(snakemake, teacher_zero_shot_step)  # noqa: F821 (snakemake is injected by the script directive)
