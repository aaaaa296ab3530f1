"""Rule image_cache: see leaf.student.image_cache.image_cache_step."""

from leaf.student.image_cache import image_cache_step
from leaf.workflow_io import run_step

run_step(snakemake, image_cache_step)  # noqa: F821 (snakemake is injected by the script directive)
