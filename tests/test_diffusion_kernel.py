"""The whole diffusion of a block at inference as one call (``lgdnet.models.diffusion_kernel``):
the numbers of the module-by-module path bit for bit, the paper's formula, and the modules
wherever anything could see the difference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import lgdnet
from lgdnet.models import diffusion_kernel, epilogue_kernel, low_rank_kernel
from lgdnet.models.lgd_block import LGDBlock
from lgdnet.models.units import FrameBottleneck, P3DBottleneck


@pytest.fixture
def calls(monkeypatch):
    """How many blocks took the one-call path."""
    count = [0]
    original = diffusion_kernel.diffuse_

    def counted(*args):
        count[0] += 1
        return original(*args)

    monkeypatch.setattr(diffusion_kernel, "diffuse_", counted)
    return count


def make_block(layout: str, memory_format: str, channels: int = 32, clips: int = 2,
               dtype: torch.dtype = torch.float32, **options):
    torch.manual_seed(0)
    unit = (FrameBottleneck if layout == "frames" else P3DBottleneck)(channels, channels // 4)
    block = LGDBlock(unit, channels, channels, rank_ratio=4, layout=layout, **options)
    for param in block.parameters():  # W^{x,g} starts at 0 in the networks; not here
        if param.dim() == 2:
            param.data.normal_(0, 0.1)
    x = torch.randn(clips, channels, 3, 5, 6)
    if layout == "frames":
        x = x.transpose(1, 2).reshape(clips * 3, channels, 5, 6)
    if memory_format == "channels_last":
        fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        block, x = block.to(memory_format=fmt), x.contiguous(memory_format=fmt)
    block, x = block.to(dtype).eval(), x.to(dtype)
    return block, x, torch.randn(clips, channels, dtype=dtype)


def module_path(block, x, g):
    with torch.inference_mode(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(diffusion_kernel, "applies", lambda *args: False)
        return block(x, g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("products", ["thin", "blas"])
@pytest.mark.parametrize("clips", [2, low_rank_kernel.MAX_ROWS + 4])
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("layout", ["clips", "frames"])
def test_equals_the_module_path_bit_for_bit(layout, memory_format, clips, products, dtype, calls,
                                            monkeypatch):
    if products == "thin":  # the tests' factors are small: let the thin-product kernel take them
        monkeypatch.setattr(low_rank_kernel, "MIN_WEIGHT_ELEMENTS", 0)
    block, x, g = make_block(layout, memory_format, clips=clips, dtype=dtype)
    expected_x, expected_g = module_path(block, x.clone(), g)
    with torch.inference_mode():
        y, g_out = block(x.clone(), g)
    assert calls[0] == 1
    assert torch.equal(y, expected_x) and torch.equal(g_out, expected_g)
    assert y.stride() == expected_x.stride()


@pytest.mark.parametrize("layout", ["clips", "frames"])
def test_is_eq_2_and_3(layout):
    block, x, g = make_block(layout, "channels_last")
    with torch.no_grad():
        out = block.local_unit(x)
        clips = out.view(2, -1, *out.shape[1:]) if layout == "frames" else out
        shape, dims = ((2, 1, -1, 1, 1), (1, 3, 4)) if layout == "frames" else ((2, -1, 1, 1, 1), (2, 3, 4))
        x_l = F.relu(clips + block.global_to_local(g).view(shape))  # Eq. (2)
        g_l = F.relu(block.local_to_global(x_l.mean(dims)) + block.global_to_global(g))  # Eq. (3)
        y, g_out = block(x, g)
    torch.testing.assert_close(y, x_l.view(out.shape))
    torch.testing.assert_close(g_out, g_l)


@pytest.mark.parametrize("why", ["grad", "hook", "factor_hook", "bias", "authors", "v1", "v2",
                                 "plain", "flop_counter", "disabled", "half"])
def test_the_modules_run_where_the_call_does_not_apply(why, calls):
    options = {"bias": why == "bias", "order": "authors" if why == "authors" else "paper",
               "diffusion": why if why in ("v1", "v2") else "lgd",
               "epilogue": "plain" if why == "plain" else "fused"}
    block, x, g = make_block("clips", "contiguous", **options)
    if why == "half":
        block, x, g = block.bfloat16(), x.bfloat16(), g.bfloat16()
    seen = []
    if why == "hook":
        block.local_to_global.register_forward_hook(lambda module, args, out: seen.append(out))
    if why == "factor_hook":  # a hook on one factor W1 of W^{x,g} must see it run too
        block.global_to_local.expand.register_forward_hook(lambda module, args, out: seen.append(out))
    if why == "grad":
        y, _ = block(x, g)
        assert y.requires_grad
    elif why == "flop_counter":
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            block(x, g)
        unit = FlopCounterMode(display=False)
        with torch.inference_mode(), unit:
            block.local_unit(x)
        # the six products of the three projections, (2, 32) through rank 8
        assert counter.get_total_flops() - unit.get_total_flops() == 6 * 2 * 2 * 32 * 8
    elif why == "disabled":
        with torch.inference_mode(), epilogue_kernel.disabled():
            block(x, g)
    else:
        with torch.inference_mode():
            block(x, g)
    assert calls[0] == 0
    assert len(seen) == (1 if why in ("hook", "factor_hook") else 0)


@pytest.mark.parametrize("name", ["lgd2d_tiny", "lgd3d_tiny"])
def test_a_network_in_eval_gives_the_module_path_logits(name, calls):
    torch.manual_seed(0)
    model = lgdnet.create_model(name, num_classes=5).eval()
    for param in model.parameters():
        if param.dim() == 2:
            param.data.normal_(0, 0.05)
    lgdnet.models.to_memory_format(model, "channels_last")
    t, h, w = model.default_input_size
    clips = torch.randn(2, model.in_channels, t, h, w)
    with torch.inference_mode(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(diffusion_kernel, "applies", lambda *args: False)
        expected = model(clips)
    blocks = sum(isinstance(m, LGDBlock) and m.diffusion == "lgd" for m in model.modules())
    with torch.no_grad():
        logits = model(clips)
    assert calls[0] == blocks > 0
    assert torch.equal(logits, expected)
