#!/usr/bin/env bash
# Benchmark: AGIQA-3K with real MLLM judgments (Q-Bench logits, point-only) on CPU, end to end.
#
#   bash bench/agiqa3k.sh            # from the repository root (any folder works)
#
# 1. config/agiqa3k_qbench.yaml, all its targets (`rule all`): manifest, split, the four teacher
#    imports (mPLUG-Owl main; LLaVA-1.5, Qwen-VL, Shikra as extra_teachers), native-size
#    EfficientNet-Lite0 features (once), 5 seeds x {label-free, 10%, 30% MOS} per teacher, the
#    CFT-only baseline -> results/agiqa3k_qbench/table1.csv (mPLUG-Owl + CFT-only) and
#    table4.csv (every teacher). Timed.
# 2. docs/results.md: the generated block (tables, per-seed LEAF vs CFT-only, wall time per
#    stage from the Snakemake benchmark files, machine) is replaced; the prose around it stays.
#
# Environment: CORES (default 2); FRESH=1 (default) deletes results/agiqa3k_qbench first so the
# timed run includes every stage, FRESH=0 reuses what is cached. Uses .venv when it exists.
# Needs the read-only data at ../shared (datasets/agiqa3k, teachers/qbench-agiqa3k).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -f .venv/bin/activate ]]; then source .venv/bin/activate; fi

CORES=${CORES:-2}
FRESH=${FRESH:-1}
MAIN=results/agiqa3k_qbench
CONFIGS=(config/config.yaml config/agiqa3k_qbench.yaml)

for path in ../shared/datasets/agiqa3k/data.csv ../shared/teachers/qbench-agiqa3k/mplug_owl.json; do
    [[ -e $path ]] || { echo "missing $path (the shared AGIQA-3K data)" >&2; exit 1; }
done

[[ $FRESH == 1 ]] && rm -rf "$MAIN"
start=$(date +%s)
snakemake --cores "$CORES" --configfile "${CONFIGS[@]}"
wall=$(($(date +%s) - start))
echo "AGIQA-3K run: ${wall} s wall"

python -m leaf.report_results --doc docs/results.md --configfile "${CONFIGS[@]}" \
    --gap-ratio 0.1 --wall-seconds "$wall"
echo "updated docs/results.md"
