"""The LGD block: Eq. (2), (3), (8), (9), gradients, parameter counts, module plumbing."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lgdnet.models import (
    FrameBottleneck,
    LGDBlock,
    P3DBottleneck,
    count_parameters,
    create_model,
    lgd_extra_parameters,
    to_memory_format,
)
from lgdnet.models.init import init_scratch
from lgdnet.models.lgd_block import _ResidualReLUPool, add_relu_
from lgdnet.models.units import to_clip, to_frames

VARIANTS = ("lgd", "v1", "v2", "none")


def make_block(
    diffusion: str, c_in: int = 4, width: int = 2, rank_ratio: int = 4, unit_type=P3DBottleneck,
    epilogue: str = "fused",
) -> LGDBlock:
    torch.manual_seed(0)
    unit = unit_type(c_in, width, stride=1)
    layout = "frames" if unit_type is FrameBottleneck else "clips"
    block = LGDBlock(unit, c_in, width * 4, diffusion, rank_ratio, layout=layout,
                     epilogue=epilogue)
    init_scratch(block)
    return block


def block_input(block: LGDBlock, x: torch.Tensor) -> torch.Tensor:
    """A clip map in the block's layout: frame-major ``(N*T, C, H, W)`` for ``"frames"``."""
    return to_frames(x) if block.layout == "frames" else x


def as_clip_map(block: LGDBlock, y: torch.Tensor, n: int) -> torch.Tensor:
    return to_clip(y, n) if block.layout == "frames" else y


def project(lowrank: nn.Module, v: torch.Tensor) -> torch.Tensor:
    """W v with W = W1 W2 written out by hand."""
    w = lowrank.expand.weight @ lowrank.reduce.weight
    return v @ w.T


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("epilogue", ["fused", "plain"])
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("unit_type", [P3DBottleneck, FrameBottleneck])
@pytest.mark.parametrize("diffusion", VARIANTS)
def test_block_matches_the_equations(diffusion, unit_type, memory_format, epilogue, grad):
    """Every code path (fused node in training, in place without autograd, plain formula)
    computes Eq. (2)-(3), (8), (9) as written, in either map layout."""
    block = make_block(diffusion, unit_type=unit_type, epilogue=epilogue).eval()
    to_memory_format(block, memory_format)
    x = block_input(block, torch.randn(2, 4, 3, 5, 5))
    g = torch.randn(2, 4)
    with torch.no_grad():
        f = as_clip_map(block, block.local_unit(x), 2)  # F(x_{l-1}), branch + shortcut
        if diffusion == "none":
            x_ref, g_ref = F.relu(f), g
        elif diffusion == "v2":
            gate = torch.sigmoid(project(block.global_to_local, g))
            x_ref = F.relu(f * gate[:, :, None, None, None])  # Eq. (9)
        else:
            x_ref = F.relu(f + project(block.global_to_local, g)[:, :, None, None, None])  # Eq. (2)
        if diffusion == "v1":
            g_ref = x_ref.mean((2, 3, 4))  # Eq. (8)
        elif diffusion in ("lgd", "v2"):
            pooled = x_ref.mean((2, 3, 4))
            g_ref = F.relu(
                project(block.local_to_global, pooled) + project(block.global_to_global, g)
            )  # Eq. (3)
    with torch.set_grad_enabled(grad):
        x_out, g_out = block(x.requires_grad_(grad).clone() if grad else x, g)
    torch.testing.assert_close(as_clip_map(block, x_out, 2), x_ref)
    assert x_out.dim() == x.dim()  # in the block's layout
    if diffusion == "none":
        assert g_out is g
    else:
        torch.testing.assert_close(g_out, g_ref)


@pytest.mark.parametrize("epilogue", ["fused", "plain"])
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("unit_type", [P3DBottleneck, FrameBottleneck])
@pytest.mark.parametrize("diffusion", VARIANTS)
def test_gradcheck_float64_block(diffusion, unit_type, memory_format, epilogue):
    """gradcheck through the in-place additions, w.r.t. inputs and the projection weights."""
    block = make_block(diffusion, c_in=4, width=2, unit_type=unit_type, epilogue=epilogue)
    block = block.double()
    to_memory_format(block, memory_format)
    params = {n: p.detach() for n, p in block.named_parameters()}
    proj_names = [n for n in params if n.startswith(("global_to", "local_to"))]
    x = block_input(block, torch.randn(2, 4, 2, 2, 2, dtype=torch.float64))
    x.requires_grad_(True)
    g = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    weights = [params[n].clone().requires_grad_(True) for n in proj_names]

    def run(x, g, *ws):
        override = dict(zip(proj_names, ws))
        out, g_out = functional_call(block, {**params, **override}, (x, g))
        return (out, g_out) if g_out is not g else (out,)

    assert torch.autograd.gradcheck(run, (x, g, *weights), eps=1e-6, atol=1e-5, fast_mode=True)
    assert len(proj_names) == {"lgd": 6, "v2": 6, "v1": 2, "none": 0}[diffusion]


def closed_form(c_in: int, c_out: int, diffusion: str, rank_ratio: int = 16) -> int:
    """Extra parameters written out independently of the library: r(C_a + C_b) per W."""
    r = c_out // rank_ratio
    per_w = {"xg": r * (c_in + c_out), "gx": r * (c_out + c_out), "gg": r * (c_in + c_out)}
    return {"none": 0, "v1": per_w["xg"], "lgd": sum(per_w.values()), "v2": sum(per_w.values())}[
        diffusion
    ]


def test_paper_closed_form_three_eighths_c_squared():
    for c in (256, 512, 1024, 2048):
        assert closed_form(c, c, "lgd") == 3 * c * c // 8
        assert lgd_extra_parameters(c, c, "lgd") == 3 * c * c // 8


@pytest.mark.parametrize("diffusion", ["lgd", "v1", "v2"])
@pytest.mark.parametrize("kind", ["3d", "2d"])
def test_extra_parameters_per_block_tiny(diffusion, kind):
    name = {"3d": ("lgd3d_tiny", "p3d_tiny"), "2d": ("lgd2d_tiny", "tsn_tiny")}[kind]
    lgd = create_model(name[0], num_classes=3, diffusion=diffusion, base_width=16)
    plain = create_model(name[1], num_classes=3, base_width=16)
    blocks = [m for m in lgd.modules() if isinstance(m, LGDBlock)]
    plain_blocks = [m for m in plain.modules() if isinstance(m, LGDBlock)]
    assert len(blocks) == len(plain_blocks) == 4
    for block, reference in zip(blocks, plain_blocks):
        extra = count_parameters(block) - count_parameters(reference)
        assert extra == closed_form(block.in_channels, block.out_channels, diffusion)
        assert extra == lgd_extra_parameters(block.in_channels, block.out_channels, diffusion)
    assert count_parameters(lgd) - count_parameters(plain) == sum(
        closed_form(b.in_channels, b.out_channels, diffusion) for b in blocks
    )


def test_extra_parameters_resnet50_total():
    """Whole LGD-3D R-50 vs P3D R-50, counted on the meta device (no memory)."""
    with torch.device("meta"):
        lgd = create_model("lgd3d_r50", num_classes=10)
        plain = create_model("p3d_r50", num_classes=10)
    expected = 0
    c_in = 64
    for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        for _ in range(blocks):
            expected += closed_form(c_in, 4 * width, "lgd")
            c_in = 4 * width
    assert count_parameters(lgd) - count_parameters(plain) == expected


def test_module_swaps_reach_the_local_unit():
    """Tools that replace submodules (e.g. SyncBatchNorm conversion) must affect forward."""
    block = make_block("lgd").eval()
    x, g = torch.randn(1, 4, 2, 3, 3), torch.randn(1, 4)
    calls = []

    class Spy(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, v):
            calls.append(v.shape)
            return self.inner(v)

    block.local_unit.bn1 = Spy(block.local_unit.bn1)
    block(x, g)
    assert len(calls) == 1
    assert "local_unit.bn1.inner.weight" in dict(block.named_parameters())


def test_the_local_unit_is_an_ordinary_child():
    """``modules()`` yields the units, so an ``isinstance`` initialisation reaches them, and
    ``train()``/``eval()`` need no override."""
    model = create_model("lgd3d_tiny", num_classes=3)
    units = [m for m in model.modules() if isinstance(m, P3DBottleneck)]
    assert len(units) == 4 and all(isinstance(b.local_unit, P3DBottleneck)
                                   for b in model.modules() if isinstance(b, LGDBlock))
    for unit in units:
        nn.init.zeros_(unit.bn3.weight)  # the zero-init-residual trick, as users write it
    assert all(float(b.local_unit.bn3.weight.detach().abs().sum()) == 0
               for b in model.modules() if isinstance(b, LGDBlock))
    model.eval()
    assert not any(m.training for m in model.modules())
    assert "layer1.0.local_unit.conv1.weight" in model.state_dict()


def test_deepcopy_and_train_flag():
    block = make_block("lgd")
    clone = copy.deepcopy(block)
    x, g = torch.randn(2, 4, 2, 3, 3), torch.randn(2, 4)
    clone.eval()
    block.eval()
    assert not clone.local_unit.training and not clone.local_unit.bn1.training
    torch.testing.assert_close(clone(x, g)[0], block(x, g)[0])
    with torch.no_grad():
        clone.local_unit.conv1.weight.add_(1.0)  # the copy's unit must use the copy's layers
    assert not torch.allclose(clone(x, g)[0], block(x, g)[0])
    torch.testing.assert_close(block(x, g)[0], make_block("lgd").eval()(x, g)[0])


class ClipFrameBottleneck(FrameBottleneck):
    """The same 2D bottleneck taking and returning clip maps (N, C, T, H, W) (a fresh tensor,
    as the block's contract asks)."""

    def forward(self, x):
        return to_clip(super().forward(to_frames(x)), x.shape[0]).contiguous()


@pytest.mark.parametrize("diffusion", VARIANTS)
def test_frames_layout_equals_the_clip_layout(diffusion):
    """LGD-2D's frame-major blocks compute what a clip-layout block around the same per-frame
    unit computes: P averages over each clip's T frames, not over the N*T batch."""
    frames_block = make_block(diffusion, unit_type=FrameBottleneck).train()
    clips_block = LGDBlock(ClipFrameBottleneck(4, 2), 4, 8, diffusion, 4, layout="clips")
    clips_block.load_state_dict(frames_block.state_dict())
    clips_block.train()
    x, g = torch.randn(2, 4, 3, 5, 5), torch.randn(2, 4)
    y_frames, g_frames = frames_block(to_frames(x).requires_grad_(), g)
    y_clips, g_clips = clips_block(x.clone().requires_grad_(), g)
    torch.testing.assert_close(to_clip(y_frames, 2), y_clips)
    if diffusion != "none":
        torch.testing.assert_close(g_frames, g_clips)


@pytest.mark.parametrize("frame_major", [False, True])
def test_fused_node_with_transposed_vectors_and_channels_last_maps(frame_major):
    """The fused Eq. (2)-(3) node against plain autograd, fed the layouts a network hands it:
    a channels-last map, a transposed (N, C) residual (an ``mm`` result) and a transposed
    incoming gradient of the pooled vector."""
    torch.manual_seed(0)
    n, c, t, h = 2, 8, 3, 4
    if frame_major:
        pre = torch.randn(n * t, c, h, h).contiguous(memory_format=torch.channels_last)
    else:
        pre = torch.randn(n, c, t, h, h).contiguous(memory_format=torch.channels_last_3d)
    residual = torch.randn(c, n).t().requires_grad_()  # stride 1 along N
    grad_pooled = torch.randn(c, n).t()
    grad_y = torch.randn(pre.shape)

    def as_clip(y):
        return to_clip(y, n) if frame_major else y

    out = pre.clone().requires_grad_()
    y, pooled = _ResidualReLUPool.apply(out.clone(), residual,
                                        "frames" if frame_major else "clips")
    torch.autograd.backward([y, pooled], [grad_y, grad_pooled])
    got = out.grad, residual.grad
    out.grad = residual.grad = None
    y_ref = torch.relu(as_clip(out) + residual[:, :, None, None, None])
    torch.autograd.backward([y_ref, y_ref.mean((2, 3, 4))], [as_clip(grad_y), grad_pooled])
    torch.testing.assert_close(as_clip(y.detach()), y_ref.detach())
    torch.testing.assert_close(pooled, y_ref.mean((2, 3, 4)))
    torch.testing.assert_close(got[0], out.grad)
    torch.testing.assert_close(got[1], residual.grad)
    assert got[0].is_contiguous(memory_format=torch.channels_last if frame_major
                                else torch.channels_last_3d)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("other_dtype", [torch.float32, torch.bfloat16])
def test_add_relu_in_place_for_every_dtype_pair(dtype, other_dtype):
    """The fused kernel where it applies, the two-op form elsewhere: the same values, in place."""
    x = torch.randn(2, 4, 3, 5, 5, dtype=dtype).contiguous(memory_format=torch.channels_last_3d)
    other = torch.randn(4, 2, dtype=other_dtype).t()[:, :, None, None, None]
    expected = torch.relu(x.double() + other.double()).to(dtype)
    result = add_relu_(x, other)
    assert result.data_ptr() == x.data_ptr() and result.dtype == dtype
    torch.testing.assert_close(result, expected)
