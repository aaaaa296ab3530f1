#!/usr/bin/env bash
# Side-by-side speed benchmark: the baseline (main at 1c8263b) against the current commit, run
# one after the other on this machine from empty results folders, with the same settings.
#
#   bash bench/speed.sh            # part 1: `make demo` (every target + report)
#   PARTS="demo agiqa3k" bash bench/speed.sh
#                                  # + part 2: AGIQA-3K Q-Bench config (table1 + teacher grid):
#                                  #   features timed apart from the rest (needs ../shared)
#
# Both trees are `git worktree`s under bench/.speed/ (git-ignored), each run with its own source
# first on PYTHONPATH and the repository's .venv. Where later work changed a default, the current
# tree runs with the baseline's value (bench/speed_pin.yaml: the 256 -> 224 crop). Each run's
# wall time, Snakemake's per-job benchmark files and the tables land in bench/.speed/<part>_<tree>;
# bench/speed_report.py compares the tables (1e-6) and writes bench/speed.md with the machine.
#
# Environment: BASE (default 1c8263b), CURRENT (default HEAD), CORES (default: nproc), PARTS.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BASE=${BASE:-1c8263b}
CURRENT=$(git rev-parse --short "${CURRENT:-HEAD}")  # resolved once: HEAD may move meanwhile
CORES=${CORES:-$(nproc)}
PARTS=${PARTS:-demo}
WORK=$ROOT/bench/.speed
BIN=$ROOT/.venv/bin
mkdir -p "$WORK"

tree() { # tree NAME COMMIT -> a clean worktree at COMMIT
    local dir=$WORK/$1
    if [[ -d $dir ]]; then git worktree remove --force "$dir"; fi
    git worktree add --detach --force "$dir" "$2" >/dev/null
    ln -sfn "$ROOT/../shared" "$WORK/shared"  # ../shared as seen from the worktrees
    echo "$dir"
}

timed() { # timed OUT_FILE LABEL command... -> appends "LABEL seconds" to OUT_FILE
    local out=$1 label=$2 start end
    shift 2
    start=$(date +%s.%N)
    # Explicit: run_part's subshell is tested with || (which switches set -e off inside it);
    # timed runs only inside that subshell, so exit ends the part.
    "$@" || {
        echo "$label failed (exit status $?): $*" >&2
        exit 1
    }
    end=$(date +%s.%N)
    echo "$label $(echo "$end - $start" | bc)" >>"$out"
    # Load average over the last 1/5/15 minutes when it ended (other work on the machine).
    echo "$label $(cut -d' ' -f1-3 /proc/loadavg)" >>"$(dirname "$out")/loads.txt"
}

run_part() { # run_part PART NAME DIR [configfile...]
    local part=$1 name=$2 dir=$3 out=$WORK/${1}_$2
    shift 3
    rm -rf "$out" && mkdir -p "$out"
    git -C "$dir" rev-parse --short HEAD >"$out/commit.txt"  # the tree this part ran on
    (
        cd "$dir"
        rm -rf results resources .snakemake
        export PYTHONPATH=$dir/src
        local smk=("$BIN/snakemake" --cores "$CORES")
        local configs=()
        [[ $# -gt 0 ]] && configs=(--configfile "$@")
        case $part in
        demo)
            timed "$out/times.txt" demo "${smk[@]}" "${configs[@]}"
            timed "$out/times.txt" report "${smk[@]}" "${configs[@]}" --report results/report.html
            cp results/table*.csv results/fig4.csv "$out/"
            ;;
        agiqa3k)
            local main
            main=$("$BIN/python" -c "import yaml; print(yaml.safe_load(open('config/agiqa3k_qbench.yaml'))['results_dir'])")
            # Targets before --configfile (its list would take them as config files).
            timed "$out/times.txt" features "${smk[@]}" \
                "$main/agiqa3k/features/tf_efficientnet_lite0.pt" "${configs[@]}"
            timed "$out/times.txt" after_features "${smk[@]}" "${configs[@]}"
            cp "$main"/table*.csv "$out/"
            cp -r "$main/benchmarks" "$out/benchmarks"
            ;;
        esac
        [[ -d results/benchmarks ]] && cp -r results/benchmarks "$out/benchmarks" || true
    ) >"$out/snakemake.log" 2>&1 || {
        tail -20 "$out/snakemake.log"
        exit 1
    }
    cat "$out/times.txt"
}

BASE_DIR=$(tree baseline "$BASE")
CURRENT_DIR=$(tree current "$CURRENT")
for part in $PARTS; do
    case $part in
    demo) base_configs=() current_configs=("$ROOT/bench/speed_pin.yaml") ;;
    agiqa3k)
        base_configs=(config/config.yaml config/agiqa3k_qbench.yaml)
        current_configs=(config/config.yaml config/agiqa3k_qbench.yaml "$ROOT/bench/speed_pin.yaml")
        ;;
    *) echo "unknown part $part (demo | agiqa3k)" >&2 && exit 2 ;;
    esac
    echo "== $part: baseline $BASE"
    run_part "$part" baseline "$BASE_DIR" "${base_configs[@]}"
    echo "== $part: current $CURRENT"
    run_part "$part" current "$CURRENT_DIR" "${current_configs[@]}"
done
"$BIN/python" bench/speed_report.py --work "$WORK" --parts $PARTS \
    --baseline "$BASE" --current "$CURRENT" --cores "$CORES" \
    --out bench/speed.md
