"""Rule results_table (table1 .. table4): see leaf.tables.results_table_step."""

from leaf.tables import results_table_step
from leaf.workflow_io import run_step

run_step(snakemake, results_table_step)  # noqa: F821 (snakemake is injected by the script directive)
