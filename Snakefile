# LEAF: label-efficient image quality assessment.
# MLLM teacher judgments (cached once) -> student distillation -> calibration on a few MOS.
# Configuration: config/config.yaml (validated by workflow/schemas/config.schema.yaml).
# Resources (gpu, mem_mb, runtime): workflow/profiles/.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/student.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/deploy.smk"


localrules:
    all,


rule all:
    default_target: True
    input:
        # table1 and every table/figure configured under `tables` (leaf.experiments.Plan).
        PLAN.configured_targets(),
