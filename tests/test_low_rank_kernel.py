"""The low-rank projections' CPU kernels (``lgdnet.models.low_rank_kernel``): the numbers of
the two ``nn.Linear`` forward and backward, and the plain path wherever they do not apply."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lgdnet.models import epilogue_kernel, low_rank_kernel
from lgdnet.models.lgd_block import LGDBlock, LowRankLinear
from lgdnet.models.units import P3DBottleneck

# (C_a, C_b, rank): lengths that are not multiples of the 16 lanes or the 256-column blocks;
# (300, 1000, 17) sums dL/dx of W1 in two row blocks, (600, 40, 3) that of W2 in column blocks
SIZES = [(37, 53, 5), (256, 512, 32), (300, 1000, 17), (600, 40, 3)]


@pytest.fixture(autouse=True)
def kernel_for_small_weights(monkeypatch, request):
    """The tests' factors are small; the kernel is made to take them unless a test asks for
    the library's size threshold (``@pytest.mark.size_threshold``)."""
    if "size_threshold" not in request.keywords:
        monkeypatch.setattr(low_rank_kernel, "MIN_WEIGHT_ELEMENTS", 0)


def plain_and_kernel(module: LowRankLinear, v: torch.Tensor):
    """Output and gradients (v, W2, W1) of the module with and without the kernels."""
    results = []
    grad = torch.randn(v.shape[0], module.expand.out_features, dtype=v.dtype,
                       generator=torch.Generator().manual_seed(1))
    for kernel in (False, True):
        x = v.detach().clone().requires_grad_(True)
        module.zero_grad(set_to_none=True)
        if kernel:
            assert low_rank_kernel.applies(x, module.reduce.weight, module.expand.weight)
            y = module(x)
            assert "LowRankProduct" in type(y.grad_fn).__name__
        else:
            with epilogue_kernel.disabled():
                y = module(x)
        y.backward(grad)
        results.append((y.detach(), x.grad, module.reduce.weight.grad, module.expand.weight.grad))
    return results


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [1, 2, 3, low_rank_kernel.MAX_ROWS])
@pytest.mark.parametrize("size", SIZES)
def test_forward_and_gradients_match_the_linear_pair(size, rows, dtype):
    torch.manual_seed(0)
    module = LowRankLinear(*size).to(dtype)
    v = torch.randn(rows, size[0], dtype=dtype)
    plain, kernel = plain_and_kernel(module, v)
    tolerance = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {}  # sums of 1000
    for expected, actual in zip(plain, kernel):
        torch.testing.assert_close(actual, expected, **tolerance)


def test_the_result_does_not_depend_on_the_thread_count():
    torch.manual_seed(0)
    module = LowRankLinear(1200, 2000, 40)
    v = torch.randn(3, 1200)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            _, *grads = plain_and_kernel(module, v)[1]
            results.append([module(v).detach(), *grads])
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*results):
        assert torch.equal(one, two)


def test_gradcheck_in_double():
    torch.manual_seed(0)
    v = torch.randn(3, 21, dtype=torch.float64, requires_grad=True)
    reduce = torch.randn(4, 21, dtype=torch.float64, requires_grad=True)
    expand = torch.randn(19, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(low_rank_kernel.project, (v, reduce, expand))


def test_frozen_weights_get_no_gradient_and_inputs_still_do():
    module = LowRankLinear(64, 64, 4)
    module.requires_grad_(False)
    v = torch.randn(2, 64, requires_grad=True)
    module(v).sum().backward()
    assert module.reduce.weight.grad is None and module.expand.weight.grad is None
    expected = module.expand.weight.sum(0) @ module.reduce.weight
    torch.testing.assert_close(v.grad, expected.expand(2, -1))


def test_inference_calls_the_kernel_without_autograd():
    module = LowRankLinear(64, 32, 4)
    v = torch.randn(2, 64)
    with torch.inference_mode():
        y = module(v)
    assert y.grad_fn is None
    torch.testing.assert_close(y, v @ module.reduce.weight.T @ module.expand.weight.T)


def test_transposed_and_sliced_inputs_are_read_right():
    module = LowRankLinear(16, 24, 4)
    v = torch.randn(16, 3).T  # non-contiguous rows
    torch.testing.assert_close(module(v), module.expand(module.reduce(v)))


@pytest.mark.parametrize("why", ["rows", "bias", "flop_counter", "autocast", "disabled", "half"])
def test_the_linear_pair_runs_where_the_kernel_does_not_apply(why):
    _check_fallback(why)


@pytest.mark.size_threshold
def test_narrow_factors_keep_the_linear_pair_where_blas_is_faster():
    _check_fallback("narrow")
    wide = LowRankLinear(1024, 1024, 64)
    v = torch.randn(2, 1024, requires_grad=True)
    assert "LowRankProduct" in type(wide(v).grad_fn).__name__


def _check_fallback(why):
    module = LowRankLinear(32, 32, 4, bias=why == "bias")
    rows = low_rank_kernel.MAX_ROWS + 1 if why == "rows" else 2
    v = torch.randn(rows, 32, requires_grad=True)
    if why == "half":
        module, v = module.bfloat16(), v.detach().bfloat16().requires_grad_(True)
    if why == "flop_counter":
        with FlopCounterMode(display=False) as counter:
            y = module(v)
        assert counter.get_total_flops() == 2 * rows * (32 * 4 + 4 * 32)
    elif why == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(v)
        assert y.dtype == torch.bfloat16
    elif why == "disabled":
        with epilogue_kernel.disabled():
            y = module(v)
    else:
        y = module(v)
    assert type(y.grad_fn).__name__ in ("MmBackward0", "AddmmBackward0")


def test_a_traced_projection_records_the_linear_pair():
    module = LowRankLinear(16, 16, 2)
    traced = torch.fx.symbolic_trace(module)
    calls = [node.target for node in traced.graph.nodes if node.op == "call_module"]
    assert calls == ["reduce", "expand"]
    v = torch.randn(2, 16)
    torch.testing.assert_close(traced(v), module(v))


def test_an_lgd_block_trains_the_same_with_the_kernels():
    torch.manual_seed(0)
    block = LGDBlock(P3DBottleneck(16, 4, 16), 16, 16, rank_ratio=4).double()
    for p in block.parameters():  # the zero-initialised W^{x,g} would hide its path
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 16, 3, 5, 5, dtype=torch.float64)
    g = torch.randn(2, 16, dtype=torch.float64)
    grads = []
    for kernel in (True, False):
        block.zero_grad(set_to_none=True)
        if kernel:
            out, g_out = block(x, g)
        else:
            with epilogue_kernel.disabled():
                out, g_out = block(x, g)
        (out.sum() + g_out.square().sum()).backward()
        grads.append([p.grad.clone() for p in block.parameters()])
    for with_kernel, without in zip(*grads):
        torch.testing.assert_close(with_kernel, without)
