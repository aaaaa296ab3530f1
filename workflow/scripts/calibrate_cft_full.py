"""Rule calibrate_cft in full mode (the CFT-only baseline): see leaf.student.full.full_cft_step."""

from leaf.student.full import full_cft_step
from leaf.workflow_io import run_step

run_step(snakemake, full_cft_step)  # noqa: F821 (snakemake is injected by the script directive)
