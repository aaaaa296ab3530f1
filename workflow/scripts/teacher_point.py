"""Rule teacher_point: see leaf.teacher.steps.teacher_points_step."""

from leaf.teacher.steps import teacher_points_step
from leaf.workflow_io import run_step

run_step(snakemake, teacher_points_step)  # noqa: F821 (snakemake is injected by the script directive)
