"""Memory layout: channels-last networks compute what contiguous ones compute, end to end."""

from __future__ import annotations

import pytest
import torch

from lgdnet.models import (
    create_model,
    is_channels_last,
    resolve_memory_format,
    stage_loss,
    to_memory_format,
)

CLIPS = {"3d": (2, 3, 8, 64, 64), "2d": (2, 3, 3, 64, 64)}  # x_L of 2x2 positions or more


def _pair(name: str, diffusion: str, stage: int = 1):
    """The same network twice (same weights), the second converted to channels-last."""
    torch.manual_seed(0)
    model = create_model(name, 5, base_width=4, diffusion=diffusion, memory_format="contiguous")
    if stage == 2:
        model.to_stage2(sketch_dim=64)
    twin = create_model(name, 5, base_width=4, diffusion=diffusion, memory_format="contiguous")
    if stage == 2:
        twin.to_stage2(sketch_dim=64)
    twin.load_state_dict(model.state_dict())
    return model, to_memory_format(twin, "channels_last")


def test_create_model_is_channels_last_unless_asked():
    """The fast CPU layout without extra calls (issue: a plain create_model trains as fast as
    the command); ``memory_format="contiguous"`` for the other."""
    assert is_channels_last(create_model("lgd3d_tiny", 5))
    assert is_channels_last(create_model("lgd2d_tiny", 5))
    assert not is_channels_last(create_model("lgd3d_tiny", 5, memory_format="contiguous"))
    with pytest.raises(ValueError, match="unknown memory format"):
        create_model("lgd3d_tiny", 5, memory_format="nhwc")


def test_conversion_of_weights_and_back():
    model = create_model("lgd2d_tiny", 5, memory_format="contiguous")
    conv = model.conv1.weight
    assert not is_channels_last(model)
    to_memory_format(model, "channels_last")
    assert model.conv1.weight is conv  # same Parameter, new storage layout
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert is_channels_last(model)
    # vectors (BatchNorm, the low-rank projections) keep their layout
    assert all(p.is_contiguous() for p in model.parameters() if p.dim() < 4)
    model3d = to_memory_format(create_model("lgd3d_tiny", 5, memory_format="contiguous"),
                               "channels_last")
    weights = [p for p in model3d.parameters() if p.dim() == 5]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in weights)
    to_memory_format(model3d, "contiguous")
    assert all(p.is_contiguous() for p in model3d.parameters())
    with pytest.raises(ValueError, match="unknown memory format 'nhwc'"):
        to_memory_format(model, "nhwc")


def test_auto_layout_by_device_and_precision():
    assert resolve_memory_format("auto", "cpu") == "channels_last"
    assert resolve_memory_format("auto", torch.device("cpu"), "bf16") == "channels_last"
    assert resolve_memory_format("auto", "cuda", "fp32") == "contiguous"
    assert resolve_memory_format("auto", "cuda:0", "bf16") == "channels_last"
    assert resolve_memory_format("auto", "cuda", "fp16") == "channels_last"
    assert resolve_memory_format("contiguous", "cpu") == "contiguous"
    assert resolve_memory_format("channels_last", "cuda") == "channels_last"
    with pytest.raises(ValueError, match="expected one of"):
        resolve_memory_format("fast", "cpu")


@pytest.mark.parametrize(
    "name, diffusion, stage",
    [("lgd3d_tiny", "lgd", 1), ("lgd3d_tiny", "v1", 1), ("lgd3d_tiny", "v2", 1),
     ("lgd3d_tiny", "none", 1), ("lgd2d_tiny", "lgd", 1), ("lgd2d_tiny", "none", 1),
     ("lgd2d_tiny", "v2", 1), ("lgd3d_tiny", "lgd", 2)],
)
def test_channels_last_forward_and_gradients_match(name, diffusion, stage):
    model, twin = _pair(name, diffusion, stage)
    kind = "3d" if "3d" in name else "2d"
    clips = torch.randn(*CLIPS[kind], generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([1, 3])
    model.train()
    twin.train()
    expected, got = model.forward_parts(clips), twin.forward_parts(clips)
    # the layout reaches the last block's map: every convolution returned a channels-last map
    local = twin.forward_features(clips)[0]
    fmt = torch.channels_last_3d
    if kind == "2d":  # a clip view of (N*T, C, H, W) per-frame maps
        local = local.transpose(1, 2).flatten(0, 1)
        fmt = torch.channels_last
    assert local.is_contiguous(memory_format=fmt) and not local.is_contiguous()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)
    stage_loss(expected, labels).backward()
    stage_loss(got, labels).backward()
    twins = dict(twin.named_parameters())
    # relative to each gradient's largest entry: the layouts sum in other orders (the
    # reductions of block_v2's gate reach 1.0e-4 on some CPUs), and stage 2's Tensor Sketch
    # (a product of two FFT projections) amplifies the convolutions' rounding to ~1e-3; a
    # layout mistake (a wrong permutation) is off by O(1)
    tolerance = 5e-4 if stage == 1 else 3e-3
    for param_name, param in model.named_parameters():
        other = twins[param_name].grad
        assert other is not None, param_name
        error = (other - param.grad).abs().max() / param.grad.abs().max().clamp_min(1e-6)
        assert error < tolerance, (param_name, error.item())


def test_channels_last_state_dict_loads_into_a_contiguous_model():
    _, twin = _pair("lgd3d_tiny", "lgd")
    fresh = create_model("lgd3d_tiny", 5, base_width=4, memory_format="contiguous")
    fresh.load_state_dict(twin.state_dict())
    assert all(p.is_contiguous() for p in fresh.parameters())
    clips = torch.randn(*CLIPS["3d"])
    twin.eval()
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(clips), twin(clips),
                                   rtol=1e-4, atol=1e-5)


def _clip_views(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One (N, C, T, H, W) map in the four memory orders the networks produce."""
    n, c, t, h, w = x.shape
    frames = x.transpose(1, 2).reshape(n * t, c, h, w)  # LGD-2D's frame-major map
    def as_clip(f: torch.Tensor) -> torch.Tensor:
        return f.view(n, t, c, h, w).transpose(1, 2)
    return {
        "clips": x.contiguous(),
        "clips_channels_last": x.contiguous(memory_format=torch.channels_last_3d),
        "frames": as_clip(frames.contiguous()),
        "frames_channels_last": as_clip(frames.contiguous(memory_format=torch.channels_last)),
    }


@pytest.mark.parametrize("order", ["clips", "clips_channels_last", "frames",
                                   "frames_channels_last", "strided"])
def test_global_average_is_the_mean_and_keeps_the_gradient_layout(order):
    from lgdnet.models.layout import global_average

    torch.manual_seed(0)
    x = torch.randn(2, 6, 3, 4, 5, dtype=torch.float64)
    if order == "strided":  # a slice: none of the four orders
        view = torch.randn(2, 6, 3, 4, 10, dtype=torch.float64)[..., ::2]
    else:
        view = _clip_views(x)[order]
    leaf = view.detach().requires_grad_()
    pooled = global_average(leaf)
    torch.testing.assert_close(pooled, leaf.detach().mean((2, 3, 4)), rtol=1e-12, atol=1e-12)
    weight = torch.randn_like(pooled)
    (pooled * weight).sum().backward()
    expected = (weight / 60.0)[:, :, None, None, None].expand_as(leaf)  # 3 x 4 x 5 positions
    torch.testing.assert_close(leaf.grad, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", ["clips", "clips_channels_last", "frames_channels_last", "frames"])
def test_global_average_gradient_lands_in_the_map_layout(order):
    """Autograd adds P's gradient to the map's other gradient: formed in the map's own memory
    order, the add runs element by element in one layout (``x.mean`` forms it contiguous)."""
    from lgdnet.models.layout import global_average

    x = torch.randn(2, 6, 3, 4, 5)
    frames_order = order.startswith("frames")
    base = x.transpose(1, 2).reshape(6, 6, 4, 5) if frames_order else x
    fmt = torch.channels_last_3d if order == "clips_channels_last" else (
        torch.channels_last if order == "frames_channels_last" else torch.contiguous_format)
    leaf = base.contiguous(memory_format=fmt).requires_grad_()
    grads = []
    leaf.register_hook(lambda g: grads.append(g))
    view = leaf.view(2, 3, 6, 4, 5).transpose(1, 2) if frames_order else leaf
    global_average(view).sum().backward()
    if order != "clips":  # one map, written in the map's memory order
        assert grads[0].stride() == leaf.stride()
    else:  # a broadcast view: nothing written
        assert grads[0].stride()[2:] == (0, 0, 0)
