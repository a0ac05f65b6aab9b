"""The networks' interface is timm's and torchvision's: ``model(x)`` is the logits tensor,
``forward_head(forward_features(x)) == model(x)``, ``reset_classifier``, ``get_classifier``,
``num_features``; checkpoints written before the block registered its unit still load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import lgdnet
from lgdnet.models import CombinationClassifier, GlobalLocalHead, create_model, stage_loss

LEGACY = Path(__file__).parent / "data" / "legacy_checkpoints"
TINY = ["lgd3d_tiny", "p3d_tiny", "lgd2d_tiny", "tsn_tiny"]


def clip_for(model, n: int = 2) -> torch.Tensor:
    frames = 8 if model.kind == "3d" else 3
    return torch.randn(n, model.in_channels, frames, 32, 32,
                       generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("tag", ["lgd3d_tiny_stage1", "lgd3d_tiny_stage2", "lgd2d_tiny_stage1",
                                 "p3d_tiny_stage1"])
def test_checkpoints_written_by_the_older_layout_still_load(tag):
    """Fixtures written at commit a81daeb (parameters named ``layer1.0.conv1.weight``):
    ``lgdnet.load_model`` rebuilds them and reproduces the logits that commit computed."""
    expected = torch.load(LEGACY / "expected_logits.pt")[tag]
    model = lgdnet.load_model(LEGACY / f"{tag}.safetensors")
    assert model.stage == (2 if "stage2" in tag else 1) and model.classes == ["a", "b", "c"]
    frames = 2 if "2d" in tag else 8
    x = torch.randn(2, 3, frames, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    assert not model.training


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("name", TINY)
def test_model_returns_logits_and_head_composes_with_features(name, stage):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4)
    if stage == 2:
        model.to_stage2(sketch_dim=64)
    model.eval()
    x = clip_for(model)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        assert isinstance(logits, torch.Tensor) and logits.shape == (2, 4)
        torch.testing.assert_close(model.forward_head(features), logits)
        pre = model.forward_head(features, pre_logits=True)
    width = 2 * model.num_features if stage == 1 else 2 * 64
    assert pre.shape == (2, width)
    assert model.num_features == features[0].shape[1] == features[1].shape[1]
    head = model.get_classifier()
    assert isinstance(head, GlobalLocalHead if stage == 1 else CombinationClassifier)
    # a generic loop needs no special case
    F.cross_entropy(model.train()(x), torch.tensor([0, 3])).backward()


def test_stage1_loss_is_eq6_outside_forward():
    """``forward_parts`` gives the two classifiers' logits; ``stage_loss`` sums their
    cross-entropies (Eq. 6); ``model(x)`` is their mean."""
    model = create_model("lgd3d_tiny", num_classes=3).eval()
    x, y = clip_for(model), torch.tensor([0, 2])
    parts = model.forward_parts(x)
    expected = F.cross_entropy(parts["global_logits"], y) + F.cross_entropy(parts["local_logits"], y)
    torch.testing.assert_close(stage_loss(parts, y), expected)
    torch.testing.assert_close(model(x), (parts["global_logits"] + parts["local_logits"]) / 2)


@pytest.mark.parametrize("stage", [1, 2])
def test_reset_classifier_keeps_the_backbone(stage):
    torch.manual_seed(0)
    model = create_model("lgd3d_tiny", num_classes=400, dropout=0.3)
    if stage == 2:
        model.to_stage2(sketch_dim=32)
    model.eval()
    x = clip_for(model)
    backbone = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    features = model.forward_features(x)
    model.reset_classifier(101)
    assert model.num_classes == 101 and model.build_args["num_classes"] == 101
    assert model(x).shape == (2, 101) and model.stage == stage
    assert model.get_classifier().dropout.p == 0.3  # kept unless given
    for key, value in backbone.items():
        assert torch.equal(model.state_dict()[key], value), key
    torch.testing.assert_close(model.forward_features(x)[0], features[0])
    if stage == 2:
        assert model.stage2_args["sketch_dim"] == 32
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(0)


def test_to_stage2_is_one_call_and_keeps_the_device_and_dtype():
    model = create_model("lgd2d_tiny", num_classes=3).double()
    assert model.to_stage2(sketch_dim=32) is model
    assert model.head.classifier.weight.dtype == torch.float64 and model.stage == 2


def test_load_model_returns_an_nn_module_ready_to_fine_tune(tmp_path):
    from lgdnet.engine.checkpoint import save_checkpoint

    model = create_model("lgd3d_tiny", num_classes=3)
    save_checkpoint(tmp_path / "ckpt", model, config={"data": {}}, classes=["x", "y", "z"],
                    epoch=1)
    loaded = lgdnet.load_model(tmp_path / "ckpt.safetensors")
    assert isinstance(loaded, torch.nn.Module) and loaded.classes == ["x", "y", "z"]
    loaded.reset_classifier(5)
    loaded.train()
    F.cross_entropy(loaded(clip_for(loaded)), torch.tensor([4, 1])).backward()
    assert loaded.layer1[0].local_unit.conv1.weight.grad is not None


def test_predictor_leaves_the_callers_module_alone():
    from lgdnet.engine.predict import Predictor, inference_sampling

    model = create_model("lgd3d_tiny", num_classes=3, memory_format="contiguous").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predictor = Predictor(model, ["a", "b", "c"], inference_sampling(None, "3d"),
                          fold_bn=True, memory_format="channels_last")
    assert predictor.model is not model and not predictor.model.training
    assert model.training and model.layer1[0].local_unit.bn1 is not None
    assert set(model.state_dict()) == set(before)
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert model.conv1.weight.is_contiguous()
