"""Rule teacher_pair: see leaf.teacher.steps.teacher_pair_step."""

from leaf.experiments import teacher_speed_options
from leaf.teacher.steps import teacher_pair_step
from leaf.workflow_io import run_step

# Speed-only engine options (batch sizes, GPU memory, ...) are read from the config at run time,
# not passed as params: changing them reruns nothing (leaf.teacher.factory.NON_JUDGMENT_OPTIONS).
speed = teacher_speed_options(snakemake.config, snakemake.wildcards.teacher_hash)  # noqa: F821
run_step(snakemake, teacher_pair_step, speed=speed)  # noqa: F821 (snakemake is injected by the script directive)
