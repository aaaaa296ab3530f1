"""LEAF: label-efficient IQA by distilling an MLLM teacher into a lightweight CNN student."""

from importlib.metadata import PackageNotFoundError, version

try:  # single-sourced: the version in pyproject.toml, as installed
    __version__ = version("leaf-iqa")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"


def create_metric(path, device=None):
    """A deployed student (a ``*.leaf.pt`` artifact or its model folder) as a no-reference IQA
    metric: see :func:`leaf.api.create_metric` (imported on first use, so that ``import leaf``
    stays light)."""
    from leaf.api import create_metric as create

    return create(path, device)


load_model = create_metric
