"""The one-pass CPU kernel of the LGD epilogue (``lgdnet.models.epilogue_kernel``): the same
numbers as the formula in every layout, in the block, and a clear fallback without it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from lgdnet.models import diffusion_kernel, epilogue_kernel
from lgdnet.models.lgd_block import LGDBlock
from lgdnet.models.units import FrameBottleneck, P3DBottleneck


def test_the_kernel_builds_where_a_compiler_is():
    # the project's machines and CI have g++ and ninja (a dependency): no silent fallback here
    assert epilogue_kernel.available(), epilogue_kernel.reason()

# (map shape, memory format, clips N): every (N, A, C, B) reading of the kernel, with plane
# sizes that are not multiples of its 32 lanes and channels-last maps of more than 256 rows
CASES = {
    "clips": ((3, 8, 5, 7, 9), torch.contiguous_format, 3),
    "clips_cl": ((3, 8, 5, 7, 9), torch.channels_last_3d, 3),
    "frames": ((6, 8, 7, 9), torch.contiguous_format, 2),
    "frames_cl": ((6, 8, 11, 13), torch.channels_last, 2),
    "long_rows_cl": ((2, 16, 4, 10, 10), torch.channels_last_3d, 2),
    # channels not a multiple of 8: the scalar loop, not the 8-wide one
    "odd_channels_cl": ((4, 12, 5, 7), torch.channels_last, 2),
    # a multiple of 8, not of 16: the 8-wide row loop where the 16-wide one (AVX-512) exists
    "rows_of_24_cl": ((4, 24, 5, 7), torch.channels_last, 2),
    # with AVX-512: a full chunk of 256 channels and a 16-channel tail, over 630 rows
    "wide_rows_cl": ((6, 272, 15, 14), torch.channels_last, 2),
    # 8 planes of 1600 per (n, c): the float lanes fold into double once midway
    "long_frames": ((16, 3, 40, 40), torch.contiguous_format, 2),
    # planes shorter than one 8-wide vector: only the masked part
    "tiny_planes": ((6, 16, 1, 3), torch.contiguous_format, 2),
    # one plane of 9216 values per (n, c): two runs, each summed in double
    "long_planes": ((2, 3, 4, 48, 48), torch.contiguous_format, 2),
    # maps over 16 MiB, whose float backward streams its stores: rows of 64 channels, and
    # planes of 4331 values (their starts fall on every alignment)
    "large_frames_cl": ((16, 64, 64, 65), torch.channels_last, 2),
    "large_frames": ((16, 64, 61, 71), torch.contiguous_format, 2),
}


def reference_view(x: torch.Tensor, n: int) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, ...]]:
    """The map as (N, ..., C, ...) with the vector's broadcast shape and the pooled dims."""
    if x.dim() == 4:  # frames (N*T, C, H, W)
        return x.reshape(n, -1, *x.shape[1:]), (n, 1, -1, 1, 1), (1, 3, 4)
    return x, (n, -1, 1, 1, 1), (2, 3, 4)


def make(case: str, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    shape, fmt, n = CASES[case]
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=dtype).contiguous(memory_format=fmt)
    r = torch.randn(n, shape[1], generator=generator, dtype=dtype)
    return x, r


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_forward_is_relu_of_the_sum_and_its_mean(case, dtype):
    x, r = make(case, dtype)
    view, shape, dims = reference_view(x, r.shape[0])
    expected = torch.relu(view + r.view(shape))
    y = x.clone()
    pooled = epilogue_kernel.add_relu_pool_(y, r, r.numel() / y.numel())
    torch.testing.assert_close(reference_view(y, r.shape[0])[0], expected, rtol=0, atol=0)
    torch.testing.assert_close(pooled, expected.mean(dims))
    assert y.stride() == x.stride()  # in place, in the map's layout


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_backward_is_the_masked_sum_and_its_reduction(case, dtype):
    x, r = make(case, dtype)
    y = torch.relu(x)
    n = r.shape[0]
    generator = torch.Generator().manual_seed(1)
    # contiguous: converted to y's layout if not
    grad_y = torch.randn(x.shape, dtype=dtype, generator=generator)
    grad_pooled = torch.randn(r.shape, dtype=dtype, generator=generator)
    grad, grad_r = epilogue_kernel.add_relu_pool_backward(grad_y, y, grad_pooled)
    view, shape, dims = reference_view(y, n)
    expected = (reference_view(grad_y, n)[0] + grad_pooled.view(shape)) * (view > 0)
    torch.testing.assert_close(reference_view(grad, n)[0], expected, rtol=0, atol=0)
    # sums of up to 33k values: against a float64 reference (a float32 one is off by ~1e-5)
    torch.testing.assert_close(grad_r, expected.double().sum(dims).to(dtype),
                               rtol=1e-6, atol=2e-5 if dtype == torch.float32 else 1e-10)
    assert grad.stride() == y.stride()


@pytest.mark.parametrize("positions, channels, fmt", [
    (5, 3, torch.contiguous_format),  # scalar loop
    (40, 8, torch.contiguous_format),  # 8-wide plane loop, then its scalar tail
    (6, 16, torch.channels_last_3d),  # 16-wide row loop (AVX-512), else the 8-wide one
    (6, 24, torch.channels_last_3d),  # 8-wide row loop
    (3, 272, torch.channels_last_3d),  # 16-wide: a chunk of 256 channels, then a tail
])
def test_nan_passes_the_relu_as_in_torch(positions, channels, fmt):
    x = torch.randn(1, channels, 1, 1, positions)
    x[0, ::2, 0, 0, ::3] = float("nan")
    x = x.contiguous(memory_format=fmt)
    y = x.clone()
    epilogue_kernel.add_relu_pool_(y, torch.zeros(1, channels), 1.0)
    assert y.isnan().sum() == x.isnan().sum() > 0
    torch.testing.assert_close(y, torch.relu(x), equal_nan=True)


def test_two_threads_add_every_row_once():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:  # 3 clips whose channels-last rows split across threads mid-clip
        x = torch.randn(3, 64, 4, 30, 30).contiguous(memory_format=torch.channels_last_3d)
        r = torch.randn(3, 64)
        y = x.clone()
        pooled = epilogue_kernel.add_relu_pool_(y, r, 1.0)
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(pooled, torch.relu(x + r.view(3, 64, 1, 1, 1)).sum((2, 3, 4)))


# the block's diffusion as one node (lgdnet::diffuse_train_ runs the kernel inside) or the
# module path, whose epilogue node calls the kernel's ops
OPS = {"node": {"lgdnet::diffuse_train_", "lgdnet::diffuse_backward"},
       "modules": {"lgdnet::add_relu_pool_", "lgdnet::add_relu_pool_backward"}}


@pytest.mark.parametrize("path", list(OPS))
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, "channels_last"])
@pytest.mark.parametrize("unit_type", [P3DBottleneck, FrameBottleneck])
def test_the_block_runs_the_kernel_and_matches_the_eager_epilogue(unit_type, memory_format, path,
                                                                  monkeypatch):
    if path == "modules":
        monkeypatch.setattr(diffusion_kernel, "applies_in_training", lambda *args: False)
    torch.manual_seed(0)
    block = LGDBlock(unit_type(8, 2), 8, 8, "lgd", 4,
                     layout="frames" if unit_type is FrameBottleneck else "clips")
    x = torch.randn(2, 8, 4, 6, 6)
    if unit_type is FrameBottleneck:
        x = x.transpose(1, 2).reshape(8, 8, 6, 6)
    if memory_format == "channels_last":
        fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        block = block.to(memory_format=fmt)
        x = x.contiguous(memory_format=fmt)
    g = torch.randn(2, 8)

    def step() -> tuple[torch.Tensor, ...]:
        block.zero_grad(set_to_none=True)
        inputs = x.clone().requires_grad_(True)
        y, g_out = block(inputs, g)
        (y.square().mean() + g_out.square().mean()).backward()
        return y.detach(), g_out.detach(), inputs.grad, block.global_to_local.expand.weight.grad

    with torch.profiler.profile() as profile:
        fused = step()
    names = {event.name for event in profile.events()}
    assert OPS[path] <= names
    with epilogue_kernel.disabled(), torch.profiler.profile() as profile:
        eager = step()
    assert not any(event.name.startswith("lgdnet::") for event in profile.events())
    for a, b in zip(fused, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("diffusion, op", [("lgd", "lgdnet::diffuse_"),  # the kernel inside
                                           ("v1", "lgdnet::add_relu_pool_")])
def test_inference_runs_the_kernel(diffusion, op):
    torch.manual_seed(0)
    block = LGDBlock(P3DBottleneck(8, 2), 8, 8, diffusion, 4).eval()
    x, g = torch.randn(2, 8, 4, 6, 6), torch.randn(2, 8)
    with torch.inference_mode(), torch.profiler.profile() as profile:
        y, g_out = block(x, g)
    assert op in {event.name for event in profile.events()}
    with torch.inference_mode(), epilogue_kernel.disabled():
        y_eager, g_eager = block(x, g)
    torch.testing.assert_close(y, y_eager)
    torch.testing.assert_close(g_out, g_eager)


def test_switched_off_by_the_environment_and_the_block_still_runs():
    code = ("import torch; from lgdnet.models import epilogue_kernel as k, create_model; "
            "m = create_model('lgd3d_tiny', 3); y = m(torch.randn(1, 3, 8, 32, 32)); "
            "y.sum().backward(); print(k.available(), k.reason(), tuple(y.shape))")
    env = {**os.environ, "LGDNET_EPILOGUE_KERNEL": "0"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "LGDNET_EPILOGUE_KERNEL=0", "(1,", "3)"]


def test_a_failed_build_is_reported_once_and_the_eager_epilogue_runs(monkeypatch, caplog):
    def broken() -> None:
        raise RuntimeError("Error building extension\nlgd_epilogue.cpp:3:1: error: no compiler\n")

    monkeypatch.setattr(epilogue_kernel, "_state", {})
    monkeypatch.setattr(epilogue_kernel, "_load", broken)
    with caplog.at_level(logging.WARNING, logger="lgdnet.models"):
        assert not epilogue_kernel.available()
        assert not epilogue_kernel.available()
    assert epilogue_kernel.reason() == "lgd_epilogue.cpp:3:1: error: no compiler"
    warnings = [r for r in caplog.records if "epilogue kernel unavailable" in r.getMessage()]
    assert len(warnings) == 1
    block = LGDBlock(P3DBottleneck(8, 2), 8, 8, "lgd", 4)
    x = torch.randn(1, 8, 2, 4, 4, requires_grad=True)
    y, g = block(x, torch.randn(1, 8))
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
