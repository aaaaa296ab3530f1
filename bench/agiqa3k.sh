#!/usr/bin/env bash
# Benchmark: AGIQA-3K with real MLLM judgments (Q-Bench logits, point-only) on CPU, end to end.
#
#   bash bench/agiqa3k.sh            # from the repository root (any folder works)
#
# 1. mPLUG-Owl teacher (config/agiqa3k_qbench.yaml): manifest, split, teacher import, native-size
#    EfficientNet-Lite0 features, 5 seeds x {label-free, 10%, 30% MOS}, table1, and the CFT-only
#    baseline (table_cft) -> results/agiqa3k_qbench/{table1,table_cft}.csv. Timed.
# 2. The other imported teachers (config/agiqa3k_qbench_<teacher>.yaml), each in its own
#    results folder seeded with step 1's manifest and features (so they are not recomputed).
# 3. docs/results.md: the generated block (tables, per-seed LEAF vs CFT-only, wall time per
#    stage from the Snakemake benchmark files, machine) is replaced; the prose around it stays.
#
# Environment: CORES (default 2); SNAKEFILE (default Snakefile); FRESH=1 (default) deletes
# results/agiqa3k_qbench first so the timed run includes every stage, FRESH=0 reuses what is
# cached; OTHERS=0 skips step 2. Uses .venv when it exists.
# Needs the read-only data at ../shared (datasets/agiqa3k, teachers/qbench-agiqa3k) and
# workflow/rules/baselines.smk included by the Snakefile.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -f .venv/bin/activate ]]; then source .venv/bin/activate; fi

CORES=${CORES:-2}
SNAKEFILE=${SNAKEFILE:-Snakefile}
FRESH=${FRESH:-1}
OTHERS=${OTHERS:-1}
MAIN=results/agiqa3k_qbench
BACKBONE=tf_efficientnet_lite0
BASE=(config/config.yaml config/agiqa3k_qbench.yaml)
# name shown in docs/results.md : config suffix
OTHER_TEACHERS=("LLaVA-1.5:llava" "Qwen-VL:qwen_vl" "Shikra:shikra")

for path in ../shared/datasets/agiqa3k/data.csv ../shared/teachers/qbench-agiqa3k/mplug_owl.json; do
    [[ -e $path ]] || { echo "missing $path (the shared AGIQA-3K data)" >&2; exit 1; }
done
grep -q "baselines.smk" "$SNAKEFILE" || {
    echo "$SNAKEFILE does not include workflow/rules/baselines.smk (CFT-only)" >&2
    exit 1
}

[[ $FRESH == 1 ]] && rm -rf "$MAIN"
start=$(date +%s)
snakemake -s "$SNAKEFILE" --cores "$CORES" "$MAIN/table1.csv" "$MAIN/table_cft.csv" --configfile "${BASE[@]}"
wall=$(($(date +%s) - start))
echo "mPLUG-Owl run: ${wall} s wall"

others=()
if [[ $OTHERS == 1 ]]; then
    for entry in "${OTHER_TEACHERS[@]}"; do
        name=${entry%%:*} suffix=${entry#*:}
        dir=results/agiqa3k_qbench_$suffix
        mkdir -p "$dir/agiqa3k/features"
        # Same dataset and student: reuse the manifest and features (mtimes kept, so Snakemake
        # sees them up to date).
        [[ -e $dir/agiqa3k/manifest.parquet ]] || cp -p "$MAIN/agiqa3k/manifest.parquet" "$dir/agiqa3k/"
        [[ -e $dir/agiqa3k/features/$BACKBONE.pt ]] ||
            cp -p "$MAIN/agiqa3k/features/$BACKBONE.pt" "$dir/agiqa3k/features/"
        snakemake -s "$SNAKEFILE" --cores "$CORES" "$dir/table1.csv" \
            --configfile "${BASE[@]}" "config/agiqa3k_qbench_$suffix.yaml"
        others+=(--other "$name=$dir")
    done
fi

python -m leaf.report_results --doc docs/results.md --results "$MAIN" --teacher mPLUG-Owl \
    --eval-dir "$MAIN/agiqa3k/eval/$BACKBONE" --gap-ratio 0.1 --wall-seconds "$wall" "${others[@]}"
echo "updated docs/results.md"
