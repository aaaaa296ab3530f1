"""Rule results_table (table1 .. table4): see leaf.tables.results_table_step."""

from leaf.workflow_io import run_step

# snakemake is injected by the script directive. A light job: it runs in the warm worker when
# that is on (see leaf.warm_worker), so this process imports neither torch nor pandas.
run_step(snakemake, "leaf.tables:results_table_step", warm=True)  # noqa: F821
