"""Rule table1: see leaf.tables.table1_step."""

from leaf.tables import table1_step
from leaf.workflow_io import run_step

run_step(snakemake, table1_step)  # noqa: F821 (snakemake is injected by the script directive)
