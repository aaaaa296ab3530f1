"""Rule demo_dataset: see leaf.demo_data.demo_dataset_step."""

from leaf.demo_data import demo_dataset_step
from leaf.workflow_io import run_step

run_step(snakemake, demo_dataset_step)  # noqa: F821 (snakemake is injected by the script directive)
