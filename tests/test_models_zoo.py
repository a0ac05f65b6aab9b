"""The zoo: shapes at the paper's inputs, parameter counts, options, the ``lgdnet models`` CLI."""

from __future__ import annotations

import json

import pytest
import torch

import lgdnet
from lgdnet.cli import main
from lgdnet.models import LGDNet, count_parameters, create_model, list_models
from lgdnet.models.network import unit_key

# (default input (C, T, H, W), local map (C_L, T', H', W')): Table 1, Sec. 4.1-4.2, 5.2.
PAPER_SHAPES = {
    "lgd3d_r50": ((3, 16, 112, 112), (2048, 4, 7, 7)),
    "lgd3d_r101": ((3, 16, 112, 112), (2048, 4, 7, 7)),
    "lgd3d_r50_long": ((3, 128, 112, 112), (2048, 16, 7, 7)),
    "p3d_r50": ((3, 16, 112, 112), (2048, 4, 7, 7)),
    "lgd2d_r50": ((3, 3, 224, 224), (2048, 3, 7, 7)),
    "lgd2d_r101": ((3, 3, 224, 224), (2048, 3, 7, 7)),
    "tsn_r50": ((3, 3, 224, 224), (2048, 3, 7, 7)),
    "lgd3d_tiny": ((3, 8, 64, 64), (256, 2, 4, 4)),
    "p3d_tiny": ((3, 8, 64, 64), (256, 2, 4, 4)),
    "lgd2d_tiny": ((3, 3, 64, 64), (256, 3, 2, 2)),
    "tsn_tiny": ((3, 3, 64, 64), (256, 3, 2, 2)),
}


def test_registry_is_the_documented_zoo():
    assert list_models() == sorted(PAPER_SHAPES)
    assert lgdnet.list_models() == list_models()


@pytest.mark.parametrize("name", sorted(PAPER_SHAPES))
def test_shapes_at_paper_input_on_meta(name):
    """Every model at its default input, traced on the meta device (shapes, no arithmetic)."""
    (c, t, h, w), local_shape = PAPER_SHAPES[name]
    with torch.device("meta"):
        model = create_model(name, num_classes=11)
    assert isinstance(model, LGDNet)
    assert model.default_input_size == (t, h, w)
    local, global_ = model.forward_features(torch.empty(2, c, t, h, w, device="meta"))
    assert tuple(local.shape) == (2, *local_shape)
    assert tuple(global_.shape) == (2, local_shape[0]) and model.feature_dim == local_shape[0]
    assert tuple(model(torch.empty(2, c, t, h, w, device="meta")).shape) == (2, 11)
    out = model.forward_parts(torch.empty(2, c, t, h, w, device="meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "logits": (2, 11), "global_logits": (2, 11), "local_logits": (2, 11)}  # fmt: skip


@pytest.mark.slow
def test_lgd3d_r50_real_forward_table1():
    torch.manual_seed(0)
    model = create_model("lgd3d_r50", num_classes=400).eval()
    with torch.no_grad():
        local, global_ = model.forward_features(torch.randn(1, 3, 16, 112, 112))
    assert local.shape == (1, 2048, 4, 7, 7) and global_.shape == (1, 2048)
    assert torch.isfinite(local).all() and torch.isfinite(global_).all()


@pytest.mark.slow
def test_lgd2d_r50_real_forward():
    torch.manual_seed(0)
    model = create_model("lgd2d_r50", num_classes=400).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 3, 224, 224))
    assert out.shape == (1, 400) and torch.isfinite(out).all()


def test_tiny_real_forward_any_frame_size():
    """Fully convolutional (Sec. 5.2): a 120 x 160 frame works."""
    model = create_model("lgd3d_tiny", num_classes=3).eval()
    with torch.no_grad():
        local, _ = model.forward_features(torch.randn(1, 3, 4, 120, 160))
    assert local.shape == (1, 256, 1, 8, 10)
    model2d = create_model("lgd2d_tiny", num_classes=3, num_segments=5).eval()
    assert model2d.default_input_size == (5, 64, 64)
    with torch.no_grad():
        local, _ = model2d.forward_features(torch.randn(1, 3, 5, 120, 160))
    assert local.shape == (1, 256, 5, 4, 5)


def test_any_frame_size_resnet50_on_meta():
    with torch.device("meta"):
        model = create_model("lgd3d_r50", num_classes=3)
    local, _ = model.forward_features(torch.empty(1, 3, 16, 120, 160, device="meta"))
    assert tuple(local.shape) == (1, 2048, 4, 8, 10)


def test_resnet50_2d_parameter_count_equals_torchvision():
    with torch.device("meta"):
        model = create_model("tsn_r50", num_classes=1000)
    backbone = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head."))
    assert backbone == 23_508_032
    assert backbone + count_parameters(model.head.global_classifier) == 25_557_032


def test_torchvision_parameter_names():
    """torchvision's ResNet names map onto the blocks' local units by :func:`unit_key`, and a
    state dict in those names loads into the network by ``load_state_dict``."""
    with torch.device("meta"):
        names = set(create_model("lgd3d_r50", num_classes=3).state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.0.bn1.weight",
                "layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight",
                "layer4.2.conv3.weight", "layer1.0.conv2_t.weight", "layer1.0.bn2_t.weight"):  # fmt: skip
        assert unit_key(key) in names, key
    assert unit_key("layer1.0.global_to_local.expand.weight") in names
    assert unit_key("layer4.2.local_unit.conv3.weight") == "layer4.2.local_unit.conv3.weight"
    model = create_model("tsn_tiny", num_classes=3)
    flat = {k.replace(".local_unit.", "."): v + 1 for k, v in model.state_dict().items()}
    assert "layer1.0.conv1.weight" in flat
    other = create_model("tsn_tiny", num_classes=3)
    other.load_state_dict(flat, strict=True)
    torch.testing.assert_close(other.layer1[0].local_unit.conv1.weight,
                               model.layer1[0].local_unit.conv1.weight + 1)


def test_unknown_and_bad_options_are_named():
    with pytest.raises(TypeError, match="colour"):
        create_model("lgd3d_tiny", num_classes=3, colour="red")
    with pytest.raises(TypeError, match="num_segments"):
        create_model("lgd3d_tiny", num_classes=3, num_segments=4)
    with pytest.raises(ValueError, match="diffusion"):
        create_model("lgd3d_tiny", num_classes=3, diffusion="v3")
    with pytest.raises(ValueError, match="pretrained"):
        create_model("lgd3d_tiny", num_classes=3, init="imagenet")
    with pytest.raises(ValueError, match="unknown model"):
        create_model("lgd4d", num_classes=3)


def test_build_args_rebuild_the_architecture(tmp_path):
    model = create_model("lgd2d_tiny", num_classes=6, diffusion="v1", rank_ratio=8,
                         in_channels=4, num_segments=5, layers=(1, 2, 1, 1))  # fmt: skip
    args = json.loads(json.dumps(model.build_args))
    assert "pretrained" not in args and "init" not in args
    rebuilt = create_model(**args)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert (rebuilt.kind, rebuilt.diffusion, rebuilt.in_channels, rebuilt.default_input_size) == (
        "2d", "v1", 4, (5, 64, 64))  # fmt: skip
    assert rebuilt.stage == 1 and rebuilt.stage2_args is None


def test_cli_models_prints_parameter_count(capsys):
    assert main(["models", "lgd3d_r50", "tsn_tiny"]) == 0
    text = capsys.readouterr().out
    with torch.device("meta"):
        expected = count_parameters(create_model("lgd3d_r50", num_classes=400))
    assert f"{expected:,}" in text
    assert "2 FLOPs per multiply-add" in text
    assert "2048,4,7,7" in text


@pytest.mark.slow
def test_cli_models_json_covers_the_zoo(capsys):
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert sorted(rows) == list_models()
    for name, (_, local_shape) in PAPER_SHAPES.items():
        assert tuple(rows[name]["local"]) == local_shape
        assert rows[name]["flops"] > 0
    with torch.device("meta"):
        assert rows["lgd2d_r101"]["parameters"] == count_parameters(
            create_model("lgd2d_r101", num_classes=400)
        )
    # the 2D ResNet-50 at 224 x 224 is ~4.1 G multiply-adds per frame, 3 frames per view
    assert 3 * 2 * 4.0e9 < rows["tsn_r50"]["flops"] < 3 * 2 * 4.2e9
