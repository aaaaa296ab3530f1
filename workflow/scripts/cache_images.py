"""Rule cache_images: see leaf.teacher.cache_keys.images_step."""

from leaf.teacher.cache_keys import images_step
from leaf.workflow_io import run_step

run_step(snakemake, images_step)  # noqa: F821 (snakemake is injected by the script directive)
