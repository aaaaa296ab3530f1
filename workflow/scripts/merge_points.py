"""Rule merge_points: see leaf.teacher.steps.merge_points_step."""

from leaf.teacher.steps import merge_points_step
from leaf.workflow_io import run_step

run_step(snakemake, merge_points_step)  # noqa: F821 (snakemake is injected by the script directive)
