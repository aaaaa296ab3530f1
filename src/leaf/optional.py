"""Optional dependencies, imported on first use with an error that names the pip extra.

The core install (``pip install leaf-iqa``) scores images; the extras add the rest
(pyproject.toml): ``[workflow]`` (Snakemake, pandas, pyarrow, scipy, ...), ``[export]`` (ONNX),
``[brisque]`` (the BRISQUE teacher), ``[vllm]``.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def missing_extra(purpose: str, extra: str, error: ImportError) -> MissingExtraError:
    """The error to raise when ``purpose`` failed to import a package of ``extra``."""
    package = getattr(error, "name", None) or str(error)
    return MissingExtraError(
        f"{purpose} needs {package}, which is not installed: pip install 'leaf-iqa[{extra}]'"
    )


def optional_import(module: str, extra: str, purpose: str) -> ModuleType:
    """``importlib.import_module(module)``, or :class:`MissingExtraError` naming ``extra``
    (e.g. ``optional_import("onnxruntime", "export", "running an ONNX model")``)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise missing_extra(purpose, extra, error) from error
