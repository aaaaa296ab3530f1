"""Static checks: ruff, snakefmt and `snakemake --lint` stay clean."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PYTHON_PATHS = ["src", "tests", "bench", "workflow/scripts"]


def _run(*cmd):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize(
    "cmd",
    [
        [str(BIN / "ruff"), "check", *PYTHON_PATHS],
        [str(BIN / "ruff"), "format", "--check", *PYTHON_PATHS],
        [str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/rules"],
    ],
    ids=["ruff-check", "ruff-format", "snakefmt"],
)
def test_code_is_clean(cmd):
    result = _run(*cmd)
    assert result.returncode == 0, result.stdout + result.stderr


TEST_CONFIGS = {
    "demo": [],
    "test": [".test/config/config.yaml"],
    "test-full": [".test/config/config.yaml", ".test/config_full/config.yaml"],
}


@pytest.mark.parametrize("configs", TEST_CONFIGS.values(), ids=TEST_CONFIGS.keys())
def test_snakemake_lint_is_clean(configs):
    config_args = ["--configfile", *configs] if configs else []
    result = _run(str(BIN / "snakemake"), "--lint", "--cores", "1", *config_args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Lints for" not in output, output
