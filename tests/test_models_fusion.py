"""BatchNorm folding for inference: the same outputs without any BatchNorm left."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lgdnet.models import create_model, fold_batchnorm

pytestmark = pytest.mark.usefixtures("one_thread")


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _trained_looking(model: nn.Module) -> nn.Module:
    """Random BatchNorm statistics and affine parameters, as after training."""
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            shape = module.running_mean.shape
            module.running_mean.copy_(torch.rand(shape, generator=generator) * 0.4 - 0.2)
            module.running_var.copy_(torch.rand(shape, generator=generator) * 1.5 + 0.5)
            module.weight.data.copy_(torch.rand(shape, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(shape, generator=generator) * 0.2 - 0.1)
    return model


@pytest.mark.parametrize("name, frames, channels, stage", [
    ("lgd3d_tiny", 8, 3, 1), ("lgd2d_tiny", 3, 3, 1), ("p3d_tiny", 8, 3, 1),
    ("tsn_tiny", 3, 3, 1), ("lgd3d_tiny", 8, 2, 1), ("lgd3d_tiny", 8, 3, 2)])
def test_folded_network_computes_the_same(name, frames, channels, stage):
    torch.manual_seed(0)
    model = create_model(name, 5, in_channels=channels, base_width=4)
    if stage == 2:
        model.to_stage2(sketch_dim=32)
    model = _trained_looking(model).train()
    before = _norms(model)
    folded = fold_batchnorm(model)
    assert before > 10 and _norms(folded) == 0
    assert _norms(model) == before and model.training  # the original is left alone
    assert not folded.training
    clips = torch.randn(2, channels, frames, 32, 32)
    model.eval()
    with torch.no_grad():
        expected, got = model.forward_parts(clips), folded.forward_parts(clips)
    torch.testing.assert_close(folded(clips), model(clips), rtol=1e-4, atol=1e-5)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)
    # the features of the local and global paths are preserved too (feature extraction)
    with torch.no_grad():
        for a, b in zip(model.forward_features(clips), folded.forward_features(clips)):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_inplace_and_parameter_names():
    model = _trained_looking(create_model("lgd3d_tiny", 5, base_width=4))
    norm_names = {f"{m}.{p}" for m, module in model.named_modules()
                  if isinstance(module, nn.modules.batchnorm._BatchNorm) for p in ("weight", "bias")}
    names = {n for n, _ in model.named_parameters()}
    same = fold_batchnorm(model, inplace=True)
    assert same is model and _norms(model) == 0
    # the BatchNorm parameters are gone, every folded convolution gained a bias, and no other
    # parameter changed its name
    folded_names = {n for n, _ in model.named_parameters()}
    assert names - norm_names <= folded_names and not norm_names & folded_names
    assert "conv1.bias" in folded_names and "layer1.0.local_unit.conv2_t.bias" in folded_names


def test_batchnorm_without_statistics_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="running statistics"):
        fold_batchnorm(model)
