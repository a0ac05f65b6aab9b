"""The whole diffusion of an LGD block at inference as one CPU call (Eq. 2 and 3).

After its local unit F, an LGD block makes six thin products (three low-rank projections
W = W1 W2), the epilogue (Eq. 2 and the P of Eq. 3) and an add and a ReLU (Eq. 3), each a
Python call. On 2 cores the first Python after a block's convolutions runs from a cache
they have flushed, and these calls cost more than the products: measured per block in
``lgd2d_r50`` inference at batch 2 (AMD EPYC), W^{x,g} g took about 140 us right after the
convolutions and 40-50 us later in the block. ``lgdnet::diffuse_`` (``csrc/lgd_diffusion.cpp``)
makes all of it in one call, with the same products in the same order (the thin-product
kernel where :mod:`lgdnet.models.low_rank_kernel` uses it, BLAS otherwise), so its results
equal the block's module-by-module path bit for bit. ``benchmarks/bench_diffusion.py``
measures what it saves.

It runs where nothing could see the difference: no autograd (``torch.inference_mode`` or
``torch.no_grad``), the paper's order and variant (``diffusion="lgd"``, ``order="paper"``,
no bias), the fused epilogue, float CPU tensors of one dtype, no hooks on the projections,
and no compiler, tracer, dispatch mode or autocast (they see the modules).
Switched off with the other kernels (``LGDNET_EPILOGUE_KERNEL=0``,
:func:`lgdnet.models.epilogue_kernel.disabled`).
"""

from __future__ import annotations

import torch
from torch import nn

from lgdnet.models import epilogue_kernel, low_rank_kernel

PROJECTIONS = ("global_to_local", "local_to_global", "global_to_global")


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def applies(block: nn.Module, out: object, g: object) -> bool:
    """Whether :func:`diffuse_` runs for ``block`` (an :class:`~lgdnet.models.LGDBlock`) on
    its local unit's output ``out`` and the global vector ``g``."""
    if torch.is_grad_enabled() or not isinstance(out, torch.Tensor) or not isinstance(g, torch.Tensor):
        return False
    if block.diffusion != "lgd" or block.order != "paper" or block.bias or block.epilogue == "plain":
        return False
    if g.dim() != 2 or g.dtype != out.dtype or g.device != out.device:
        return False
    for name in PROJECTIONS:
        projection = getattr(block, name)
        if _hooked(projection) or _hooked(projection.reduce) or _hooked(projection.expand):
            return False
        if projection.reduce.weight.dtype != out.dtype:
            return False
    if low_rank_kernel._dispatch_mode_active() or low_rank_kernel._autocast_on():
        return False
    return epilogue_kernel.applies(out, g)


def diffuse_(block: nn.Module, out: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Eq. (2) on ``out`` in place, ``x_l = ReLU(out + US(W^{x,g} g))``, and Eq. (3)'s
    ``g_l = ReLU(W^{g,x} P(x_l) + W^{g,g} g)``, returned; ``block`` holds the W.

    Shape:
        ``out``: the block's map (``"clips"`` or ``"frames"``), ``g``: ``(N, C_in)`` ->
        ``(N, C_out)``.
    """
    weights = []
    for name in PROJECTIONS:
        projection = getattr(block, name)
        weights += [projection.reduce.weight, projection.expand.weight]
    return torch.ops.lgdnet.diffuse_(out, g, *weights, low_rank_kernel.MAX_ROWS,
                                     low_rank_kernel.MIN_WEIGHT_ELEMENTS)
