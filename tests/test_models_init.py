"""Initialisation (Sec. 5.2): scratch, ImageNet 2D -> LGD-3D inflation and its equivalence."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lgdnet.errors import CheckpointError
from lgdnet.models import LGDBlock, create_model, load_imagenet_2d


def torchvision_names(state: dict) -> dict:
    """The project's names as torchvision's ResNet writes them (no ``local_unit.`` level)."""
    return {k.replace(".local_unit.", "."): v for k, v in state.items()}


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics so that the equivalence test exercises them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def write_2d_resnet(path, name: str = "tsn_tiny", prefix: str = "", **options) -> nn.Module:
    """A torchvision-format state dict written from the project's own 2D ResNet, with an
    ImageNet-style 1000-way ``fc`` that the loader must skip."""
    torch.manual_seed(1)
    net = create_model(name, num_classes=7, **options)
    randomise_batchnorm(net)
    state = torchvision_names(
        {k: v for k, v in net.state_dict().items() if not k.startswith("head.")})
    assert "layer1.0.conv1.weight" in state
    state["fc.weight"] = torch.randn(1000, net.feature_dim)
    state["fc.bias"] = torch.zeros(1000)
    torch.save({prefix + k: v for k, v in state.items()}, path)
    return net.eval()


def reference_2d_features(net: nn.Module, frame: torch.Tensor) -> torch.Tensor:
    """The 2D network's local map of one frame, skipping the max-pool LGD-3D does not have."""
    net.maxpool = nn.Identity()
    local, _ = net.forward_features(frame[:, :, None])  # (N, C, 1, H', W')
    return local[:, :, 0]


def check_equivalence(tmp_path, name2d: str, name3d: str, t: int, size: int) -> None:
    path = tmp_path / "resnet2d.pth"
    net2d = write_2d_resnet(path, name2d)
    model = create_model(name3d, num_classes=5, init="imagenet", pretrained=str(path)).eval()
    assert model.init_report.missing == [] and model.init_report.unexpected == []
    assert model.init_report.skipped == ["fc.weight", "fc.bias"]
    torch.manual_seed(2)
    frame = torch.randn(2, 3, size, size)
    static_clip = frame[:, :, None].expand(-1, -1, t, -1, -1).contiguous()
    with torch.no_grad():
        local, _ = model.forward_features(static_clip)
        expected = reference_2d_features(net2d, frame)
    assert local.shape[2] >= 1
    for step in range(local.shape[2]):  # every output time step equals the 2D features
        torch.testing.assert_close(local[:, :, step], expected, rtol=1e-4, atol=1e-4)
    assert expected.abs().mean() > 1e-3  # a non-trivial comparison


def test_imagenet_lgd3d_reproduces_2d_network_tiny(tmp_path):
    check_equivalence(tmp_path, "tsn_tiny", "lgd3d_tiny", t=8, size=32)


@pytest.mark.slow
def test_imagenet_lgd3d_reproduces_2d_network_resnet50(tmp_path):
    check_equivalence(tmp_path, "tsn_r50", "lgd3d_r50", t=4, size=64)


def test_equivalence_needs_zero_global_residual(tmp_path):
    """Control: with a non-zero W^{x,g} the 3D network no longer matches the 2D one."""
    path = tmp_path / "resnet2d.pth"
    net2d = write_2d_resnet(path)
    model = create_model("lgd3d_tiny", num_classes=5, init="imagenet", pretrained=str(path))
    model.eval()
    with torch.no_grad():
        model.layer2[0].global_to_local.expand.weight.normal_()
        frame = torch.randn(1, 3, 32, 32)
        local, _ = model.forward_features(frame[:, :, None].expand(-1, -1, 4, -1, -1))
        expected = reference_2d_features(net2d, frame)
    assert not torch.allclose(local[:, :, 0], expected, rtol=1e-4, atol=1e-4)


def test_imagenet_init_values(tmp_path):
    path = tmp_path / "resnet2d.pth"
    net2d = write_2d_resnet(path)
    model = create_model("lgd3d_tiny", num_classes=5, init="imagenet", pretrained=str(path))
    source = torchvision_names(net2d.state_dict())
    torch.testing.assert_close(
        model.layer3[0].local_unit.conv2.weight[:, :, 0], source["layer3.0.conv2.weight"]
    )
    assert model.layer3[0].local_unit.conv2.weight.shape[2] == 1  # inflated to 1 x 3 x 3
    temporal = model.layer1[0].local_unit.conv2_t.weight  # (C, C, 3, 1, 1)
    eye = torch.eye(temporal.shape[0])
    torch.testing.assert_close(temporal[:, :, 1, 0, 0], eye)
    assert temporal[:, :, 0].abs().sum() == 0 and temporal[:, :, 2].abs().sum() == 0
    for block in (m for m in model.modules() if isinstance(m, LGDBlock)):
        assert block.global_to_local.expand.weight.abs().sum() == 0  # Sec. 5.2
        assert block.global_to_local.reduce.weight.abs().sum() > 0  # keeps a gradient path
    assert "layer1.0.local_unit.conv2_t.weight" in model.init_report.initialised


def test_missing_and_unexpected_keys_are_reported_by_name(tmp_path):
    net = create_model("tsn_tiny", num_classes=3)
    state = torchvision_names(
        {k: v for k, v in net.state_dict().items() if not k.startswith("head.")})
    del state["layer2.0.conv1.weight"]
    state["layer9.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    model = create_model("lgd3d_tiny", num_classes=3)
    with pytest.warns(UserWarning,
                      match=r"layer2\.0\.local_unit\.conv1\.weight.*layer9\.0\.conv1\.weight"):
        report = load_imagenet_2d(model, path)
    assert report.missing == ["layer2.0.local_unit.conv1.weight"]  # the model's name
    assert report.unexpected == ["layer9.0.conv1.weight"]  # the file's name
    # "module." stripped, container unwrapped, torchvision's name mapped
    assert "layer1.0.local_unit.conv1.weight" in report.loaded


def test_shape_mismatch_and_missing_file_name_the_file(tmp_path):
    path = tmp_path / "wide.pth"
    write_2d_resnet(path, base_width=16)
    with pytest.raises(CheckpointError, match="wide.pth.*conv1.weight"):
        create_model("lgd3d_tiny", num_classes=3, init="imagenet", pretrained=str(path))
    with pytest.raises(CheckpointError, match="nope.pth"):
        create_model(
            "lgd3d_tiny", num_classes=3, init="imagenet", pretrained=str(tmp_path / "nope.pth")
        )


@pytest.mark.parametrize("name,in_channels", [("lgd3d_tiny", 2), ("lgd2d_tiny", 10)])
def test_flow_cross_modality_init(tmp_path, name, in_channels):
    path = tmp_path / "rgb.pth"
    net2d = write_2d_resnet(path, prefix="model.")
    model = create_model(name, num_classes=3, in_channels=in_channels, init="imagenet",
                         pretrained=str(path))  # fmt: skip
    rgb = net2d.conv1.weight  # (64, 3, 7, 7)
    w = model.conv1.weight.reshape(rgb.shape[0], in_channels, *rgb.shape[-2:])
    for c in range(in_channels):
        torch.testing.assert_close(w[:, c], rgb.mean(1))


def test_scratch_init_is_xavier_with_zero_biases():
    model = create_model("lgd3d_tiny", num_classes=3)
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv3d, nn.Linear)):
            w = module.weight
            fan_out, fan_in = w.shape[0] * w[0, 0].numel(), w.shape[1] * w[0, 0].numel()
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            assert w.abs().max() <= bound + 1e-6, name
            assert w.abs().max() > 0.5 * bound, name
            if module.bias is not None:
                assert module.bias.abs().sum() == 0, name
        elif isinstance(module, nn.BatchNorm3d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)


@pytest.mark.parametrize("name, baseline, frames", [("lgd3d_tiny", "p3d_tiny", 8),
                                                    ("lgd2d_tiny", "tsn_tiny", 3)])
def test_zero_global_residual_starts_as_the_baseline(name, baseline, frames):
    """With ``global_residual_init="zero"`` every W^{x,g} is 0, so the local path of a fresh
    LGD network computes exactly what the no-diffusion network with the same weights does."""
    torch.manual_seed(0)
    model = create_model(name, 4, base_width=4, global_residual_init="zero")
    blocks = [m for m in model.modules() if isinstance(m, LGDBlock)]
    assert blocks and all(torch.all(b.global_to_local.expand.weight == 0) for b in blocks)
    assert all(b.global_to_local.reduce.weight.abs().sum() > 0 for b in blocks)  # W2 stays Xavier
    plain = create_model(baseline, 4, base_width=4)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all("global" in k or "local_to" in k for k in unexpected)
    clips = torch.randn(2, 3, frames, 32, 32)
    model.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(clips)[0], plain.forward_features(clips)[0])
    default = create_model(name, 4, base_width=4)
    assert all(b.global_to_local.expand.weight.abs().sum() > 0
               for b in default.modules() if isinstance(b, LGDBlock))
    with pytest.raises(ValueError, match="global_residual_init"):
        create_model(name, 4, global_residual_init="ones")
