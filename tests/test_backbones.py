"""Backbones: offline packaged ImageNet weights classify real photos; bad weights fail loudly."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from leaf.student.backbones import (
    WeightsError,
    create_backbone,
    create_classifier,
    package_weights_path,
    preprocess_config,
    read_state_dict,
)
from leaf.student.features import build_transform

LITE0 = "tf_efficientnet_lite0"
CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def classifier():
    return create_classifier(LITE0, "package")


@pytest.fixture(scope="module")
def backbone():
    return create_backbone(LITE0, "package")


def _top5(model, image: np.ndarray) -> set[int]:
    transform = build_transform(preprocess_config(model), image_size=224)
    with torch.inference_mode():
        logits = model(transform(Image.fromarray(image).convert("RGB"))[None])
    return set(logits[0].topk(5).indices.tolist())


def test_packaged_lite0_recognises_a_cat_and_a_coffee(classifier):
    assert _top5(classifier, data.chelsea()) & CAT_CLASSES
    assert _top5(classifier, data.coffee()) & COFFEE_CLASSES


def test_backbone_gives_pooled_features_with_the_classifier_weights(backbone, classifier):
    assert backbone.num_classes == 0 and backbone.num_features == 1280
    assert torch.equal(backbone.conv_stem.weight, classifier.conv_stem.weight)
    assert torch.equal(backbone.bn2.running_var, classifier.bn2.running_var)
    with torch.inference_mode():
        features = backbone(torch.zeros(2, 3, 224, 224))
    assert features.shape == (2, 1280)
    assert preprocess_config(backbone)["mean"] == (0.5, 0.5, 0.5)


def _outputs(model):
    torch.manual_seed(0)
    with torch.inference_mode():
        return model.eval()(torch.randn(1, 3, 96, 96))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_path_in_timm_names(backbone, tmp_path, suffix):
    path = tmp_path / f"lite0{suffix}"
    state = {k: v.clone().contiguous() for k, v in backbone.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    assert torch.equal(_outputs(create_backbone(LITE0, str(path))), _outputs(backbone))


def test_package_file_as_a_path_maps_by_order(backbone):
    path = package_weights_path(LITE0)
    assert next(iter(read_state_dict(path))).startswith("_conv_stem")  # other naming scheme
    assert torch.equal(_outputs(create_backbone(LITE0, str(path))), _outputs(backbone))


def test_bad_weights_raise_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        create_backbone(LITE0, str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsError, match="neither 'package', 'timm'"):
        create_backbone(LITE0, "imagenet")
    with pytest.raises(WeightsError, match="no offline weights"):
        create_backbone("resnet18", "package")
    with pytest.raises(WeightsError, match="unknown timm model"):
        create_backbone("no_such_net", "package")
    wrong = tmp_path / "wrong.pt"
    torch.save({f"w{i}": torch.zeros(3) for i in range(5)}, wrong)
    with pytest.raises(WeightsError, match="cannot be mapped"):
        create_backbone(LITE0, str(wrong))


def test_mismatched_shapes_say_where(backbone, tmp_path):
    state = dict(backbone.state_dict())
    state["conv_head.weight"] = torch.zeros(7, 7)
    path = tmp_path / "bad_shape.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="conv_head.weight"):
        create_backbone(LITE0, str(path))


def test_timm_download_offline_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail fast
    try:
        create_backbone(LITE0, "timm")
    except WeightsError as err:
        assert "unreachable" in str(err) and "checkpoint path" in str(err)
    else:
        pytest.skip("timm's weights are cached on this machine")
