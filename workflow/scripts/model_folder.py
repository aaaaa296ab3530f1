"""Rule model_folder: see leaf.model_card.model_folder_step."""

from leaf.model_card import model_folder_step
from leaf.workflow_io import run_step

run_step(snakemake, model_folder_step)  # noqa: F821 (snakemake is injected by the script directive)
