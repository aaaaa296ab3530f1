"""LEAF: label-efficient IQA by distilling an MLLM teacher into a lightweight CNN student."""

from importlib.metadata import PackageNotFoundError, version

try:  # single-sourced: the version in pyproject.toml, as installed
    __version__ = version("leaf-iqa")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
