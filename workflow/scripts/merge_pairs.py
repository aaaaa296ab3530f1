"""Rule merge_pairs: see leaf.teacher.steps.merge_pairs_step."""

from leaf.teacher.steps import merge_pairs_step
from leaf.workflow_io import run_step

run_step(snakemake, merge_pairs_step)  # noqa: F821 (snakemake is injected by the script directive)
