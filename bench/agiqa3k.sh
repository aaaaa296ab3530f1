#!/usr/bin/env bash
# Benchmark: AGIQA-3K with real MLLM judgments (imported logits, point-only) on CPU, end to end.
#
#   bash bench/agiqa3k.sh                                   # the flagship: five-level teachers
#   CONFIG=config/agiqa3k_qbench.yaml bash bench/agiqa3k.sh # the Q-Bench (two-word) teachers
#
# 1. table1 of the config (timed): manifest, split, the main teacher's import (Qwen2-VL-7B, or
#    mPLUG-Owl for the Q-Bench config), the frozen EfficientNet-Lite0 features, 5 seeds x
#    {label-free, 10%, 30% MOS}, the CFT-only baseline -> <results_dir>/table1.csv.
# 2. The rest of `rule all` (timed separately): the other teachers with the same student and the
#    cached features -> table4.csv.
# 3. The doc (docs/results.md for the flagship, docs/results_qbench.md for Q-Bench): its
#    generated block (tables, per-seed LEAF vs CFT-only, wall time per stage from the Snakemake
#    benchmark files, machine) is replaced; the prose around it stays.
#
# Environment: CONFIG (default config/agiqa3k_qalign.yaml), DOC (default: see 3.), CORES
# (default 2); FRESH=1 (default) deletes the config's results folder first so the timed run
# includes every stage, FRESH=0 reuses what is cached. Uses .venv when it exists.
# Needs the read-only data at ../shared (datasets/agiqa3k, teachers/...).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -f .venv/bin/activate ]]; then source .venv/bin/activate; fi

CONFIG=${CONFIG:-config/agiqa3k_qalign.yaml}
case $CONFIG in
    *qalign*) DEFAULT_DOC=docs/results.md ;;
    *) DEFAULT_DOC=docs/results_$(basename "$CONFIG" .yaml | sed 's/^agiqa3k_//').md ;;
esac
DOC=${DOC:-$DEFAULT_DOC}
CORES=${CORES:-2}
FRESH=${FRESH:-1}
CONFIGS=(config/config.yaml "$CONFIG")
MAIN=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['results_dir'])" "$CONFIG")

[[ -e ../shared/datasets/agiqa3k/data.csv ]] || {
    echo "missing ../shared/datasets/agiqa3k (the shared AGIQA-3K data)" >&2
    exit 1
}

[[ $FRESH == 1 ]] && rm -rf "$MAIN"
start=$(date +%s)
snakemake --cores "$CORES" "$MAIN/table1.csv" --configfile "${CONFIGS[@]}"
wall=$(($(date +%s) - start))
echo "AGIQA-3K table1 ($CONFIG, features included): ${wall} s wall"
start=$(date +%s)
snakemake --cores "$CORES" --configfile "${CONFIGS[@]}"
others=$(($(date +%s) - start))
echo "AGIQA-3K other teachers (table4): ${others} s wall"

python -m leaf.report_results --doc "$DOC" --configfile "${CONFIGS[@]}" \
    --gap-ratio 0.1 --wall-seconds "$wall" --extra-wall-seconds "$others"
echo "updated $DOC"
