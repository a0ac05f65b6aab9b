"""The low-rank projections W = W1 W2 of the LGD block (Sec. 3.1) as CPU kernels.

Each projection maps the global vectors g, ``(N, C)`` with N the clips of a batch, through
two weight matrices of ``C * C/16`` values. For N of a few rows and wide weights a BLAS
matrix product spends most of its time packing the weight, not multiplying:
``csrc/thin_linear.cpp`` reads each weight once, row by row. Measured side by side
(``benchmarks/bench_thin_products.py``, ``thin_products_results.md``) on an AMD EPYC it takes
0.5-0.85x the time of BLAS at C = 1024 and 2048, N = 2 and 4, but more than BLAS at C <= 512,
where the call's fixed cost dominates, and at N = 8: the kernel runs only where a factor has
at least :data:`MIN_WEIGHT_ELEMENTS` values and N is at most :data:`MAX_ROWS`. On an Intel
Xeon, where MKL runs its AVX-512 code, it takes 1.2-2.6x BLAS's time alone
(``thin_products_results_xeon.md``), and 1.0-1.2x with the weights out of cache, as a
block's convolutions leave them (``thin_products_cold_results.md``); yet inside ``lgd2d_r50``
the two take the same time within noise there (BLAS / kernel 0.997 training, 1.008 inference,
``thin_products_network_results.md``), so the kernel runs on every CPU, for its results that
do not depend on the thread count.
Forward is two ``lgdnet::thin_linear`` calls; backward two input- and two weight-gradient
products, one autograd node per projection.

The kernels take float32/float64 CPU vectors of at most :data:`MAX_ROWS` rows, projections
without bias, outside CPU autocast and outside any compiler, tracer or dispatch mode
(``torch.compile``, ``torch.export``, ``torch.jit``, ``FlopCounterMode``), which see the
plain ``nn.Linear`` pair instead. They are built with, and switched off with, the epilogue
kernel (:mod:`lgdnet.models.epilogue_kernel`: ``LGDNET_EPILOGUE_KERNEL=0``, ``disabled()``).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
from torch.utils import _python_dispatch

from lgdnet.models import epilogue_kernel

# Where the kernel beats BLAS (``benchmarks/thin_products_results.md``): at N = 8 BLAS is as
# fast, and below C = 1024 (a factor of 1024 x 64 values) the call's fixed cost dominates
MAX_ROWS = 4
MIN_WEIGHT_ELEMENTS = 1024 * 64


def _dispatch_mode_active() -> bool:
    check = getattr(_python_dispatch, "is_in_torch_dispatch_mode", None)
    if check is not None:
        return bool(check())
    return bool(_python_dispatch._get_current_dispatch_mode_stack())


def _autocast_on() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def applies(v: object, reduce: torch.Tensor, expand: torch.Tensor) -> bool:
    """Whether :func:`project` runs the kernels for the vectors ``v`` and the factors
    ``reduce`` (W2, ``(r, C_a)``) and ``expand`` (W1, ``(C_b, r)``)."""
    if not epilogue_kernel._enabled[0] or not isinstance(v, torch.Tensor):
        return False
    if max(reduce.numel(), expand.numel()) < MIN_WEIGHT_ELEMENTS:
        return False
    weight = reduce
    if v.device.type != "cpu" or v.dim() != 2 or not 0 < v.shape[0] <= MAX_ROWS:
        return False
    if v.dtype not in epilogue_kernel.DTYPES or weight.dtype != v.dtype:
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    if _dispatch_mode_active() or _autocast_on():
        return False
    return epilogue_kernel.available()


class _LowRankProduct(torch.autograd.Function):
    """``v W2^T W1^T`` (an ``nn.Linear`` pair without bias) as one autograd node."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, reduce: torch.Tensor, expand: torch.Tensor):  # type: ignore[override]
        hidden = torch.ops.lgdnet.thin_linear(v, reduce)
        ctx.save_for_backward(v, hidden, reduce, expand)
        return torch.ops.lgdnet.thin_linear(hidden, expand)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        v, hidden, reduce, expand = ctx.saved_tensors
        grad = grad.contiguous()
        need_v, need_reduce, need_expand = ctx.needs_input_grad
        grad_expand = (torch.ops.lgdnet.thin_linear_weight_grad(grad, hidden)
                       if need_expand else None)
        grad_v = grad_reduce = None
        if need_v or need_reduce:
            grad_hidden = torch.ops.lgdnet.thin_linear_input_grad(grad, expand)
            if need_v:
                grad_v = torch.ops.lgdnet.thin_linear_input_grad(grad_hidden, reduce)
            if need_reduce:
                grad_reduce = torch.ops.lgdnet.thin_linear_weight_grad(grad_hidden, v)
        return grad_v, grad_reduce, grad_expand


def project(v: torch.Tensor, reduce: torch.Tensor, expand: torch.Tensor) -> torch.Tensor:
    """``W1 W2 v`` for each row of ``v``: ``reduce`` is W2 ``(r, C_a)``, ``expand`` W1
    ``(C_b, r)``; the kernels' version of ``F.linear(F.linear(v, reduce), expand)``.

    Shape:
        ``(N, C_a) -> (N, C_b)``, N at most :data:`MAX_ROWS` (see :func:`applies`).
    """
    v, reduce, expand = v.contiguous(), reduce.contiguous(), expand.contiguous()
    if torch.is_grad_enabled() and (v.requires_grad or reduce.requires_grad
                                    or expand.requires_grad):
        return _LowRankProduct.apply(v, reduce, expand)
    return torch.ops.lgdnet.thin_linear(torch.ops.lgdnet.thin_linear(v, reduce), expand)
