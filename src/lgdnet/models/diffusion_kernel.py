"""The whole diffusion of an LGD block (Eq. 2 and 3) as one CPU call, or one autograd node.

After its local unit F, an LGD block makes six thin products (three low-rank projections
W = W1 W2), the epilogue (Eq. 2 and the P of Eq. 3) and an add and a ReLU (Eq. 3), each a
Python call. On 2 cores the first Python after a block's convolutions runs from a cache
they have flushed, and these calls cost more than the products: measured per block in
``lgd2d_r50`` inference at batch 2 (AMD EPYC), W^{x,g} g took about 140 us right after the
convolutions and 40-50 us later in the block. At inference ``lgdnet::diffuse_``
(``csrc/lgd_diffusion.cpp``) makes all of it in one call, with the same products in the same
order (the thin-product kernel where :mod:`lgdnet.models.low_rank_kernel` uses it, BLAS
otherwise), so its results equal the block's module-by-module path bit for bit.
``benchmarks/bench_diffusion.py`` measures what it saves.

In training :func:`diffuse` makes the same forward as one autograd node (:class:`_Diffusion`,
``lgdnet::diffuse_train_``) in place of the module path's eight or so (three projections,
the epilogue, the add and the ReLU of Eq. 3, each with its backward), and its backward forms
every gradient of the block's diffusion, the map's and g's and the six factors', in one call
(``lgdnet::diffuse_backward``): the same products, so the gradients equal the module path's
up to the order of float sums in BLAS. Not twice differentiable (a second order through it
raises), as the fused epilogue is not.

Both run where nothing could see the difference: the paper's order and variant
(``diffusion="lgd"``, ``order="paper"``, no bias), the fused epilogue, float CPU tensors of
one dtype, no hooks on the projections, and no compiler, tracer, dispatch mode, functorch
transform or autocast (they see the modules). Switched off with the other kernels
(``LGDNET_EPILOGUE_KERNEL=0``, :func:`lgdnet.models.epilogue_kernel.disabled`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from lgdnet.models import epilogue_kernel, low_rank_kernel

PROJECTIONS = ("global_to_local", "local_to_global", "global_to_global")


def _transformed() -> bool:
    check = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(check()) if check is not None else False


def applies(block: nn.Module, out: object, g: object) -> bool:
    """Whether :func:`diffuse_` runs for ``block`` (an :class:`~lgdnet.models.LGDBlock`) on
    its local unit's output ``out`` and the global vector ``g``: at inference."""
    return not torch.is_grad_enabled() and _eligible(block, out, g)


def applies_in_training(block: nn.Module, out: object, g: object) -> bool:
    """Whether :func:`diffuse` runs: autograd records and the block's conditions hold."""
    return (torch.is_grad_enabled() and block.epilogue == "fused" and _eligible(block, out, g)
            and not _transformed())


def _eligible(block: nn.Module, out: object, g: object) -> bool:
    if not isinstance(out, torch.Tensor) or not isinstance(g, torch.Tensor):
        return False
    if block.diffusion != "lgd" or block.order != "paper" or block.bias or block.epilogue == "plain":
        return False
    if g.dim() != 2 or g.dtype != out.dtype or g.device != out.device:
        return False
    modules, weights = _parts(block)
    if any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
           for m in modules) or any(w.dtype != out.dtype for w in weights):
        return False  # a hook must see its module run; the products take one dtype
    if low_rank_kernel._dispatch_mode_active() or low_rank_kernel._autocast_on():
        return False
    return epilogue_kernel.applies(out, g)


def _parts(block: nn.Module) -> tuple[list[nn.Module], list[torch.Tensor]]:
    """The nine modules of the block's projections (whose hooks must see them run) and their
    six weights ``[W2^{x,g}, W1^{x,g}, W2^{g,x}, W1^{g,x}, W2^{g,g}, W1^{g,g}]``.

    Read from the modules' own dictionaries, as they are now: ``nn.Module.__getattr__`` costs
    about 2 us a name, and looking up the 25 names one by one made a block's checks and call
    cost 33 us of Python, 10 us this way (2-core Intel Xeon,
    ``python benchmarks/bench_block_calls.py``): 16 blocks a forward, 0.2-0.4% of
    ``lgd2d_r50``'s inference at batch 2."""
    modules: list[nn.Module] = []
    weights: list[torch.Tensor] = []
    for name in PROJECTIONS:
        projection = block._modules[name]
        reduce, expand = projection._modules["reduce"], projection._modules["expand"]
        modules += (projection, reduce, expand)
        weights += (reduce._parameters["weight"], expand._parameters["weight"])
    return modules, weights


def diffuse_(block: nn.Module, out: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Eq. (2) on ``out`` in place, ``x_l = ReLU(out + US(W^{x,g} g))``, and Eq. (3)'s
    ``g_l = ReLU(W^{g,x} P(x_l) + W^{g,g} g)``, returned; ``block`` holds the W.

    Shape:
        ``out``: the block's map (``"clips"`` or ``"frames"``), ``g``: ``(N, C_in)`` ->
        ``(N, C_out)``.
    """
    return torch.ops.lgdnet.diffuse_(out, g, *_weights(block), low_rank_kernel.MAX_ROWS,
                                     low_rank_kernel.MIN_WEIGHT_ELEMENTS)


def _weights(block: nn.Module) -> list[torch.Tensor]:
    return _parts(block)[1]


class _Diffusion(torch.autograd.Function):
    """Eq. (2) on the local unit's output in place and Eq. (3)'s g_l, as one autograd node.

    Forward (``lgdnet::diffuse_train_``): ``h = W2^{x,g} g``, ``x_l = ReLU(out + US(W1^{x,g}
    h))`` and ``P(x_l)`` (the one-pass epilogue), ``g_l = ReLU(W^{g,x} P(x_l) + W^{g,g} g)``,
    keeping P(x_l) and the three hidden vectors. Backward (``lgdnet::diffuse_backward``), with
    ``d = dL/dg_l * [g_l > 0]``: the factors of W^{g,x} from d, ``dL/dP`` through W^{g,x}, the
    epilogue's backward (``dL/dout`` and ``dL/dr``, r = W^{x,g} g, in one pass), the factors of
    W^{x,g} from ``dL/dr``, those of W^{g,g} from d, and ``dL/dg`` through W^{x,g} and W^{g,g};
    only the gradients autograd asks for.
    """

    @staticmethod
    def forward(ctx, out, g, *weights):  # type: ignore[override]
        g_new, pooled, *hidden = torch.ops.lgdnet.diffuse_train_(
            out, g, *weights, low_rank_kernel.MAX_ROWS, low_rank_kernel.MIN_WEIGHT_ELEMENTS)
        ctx.mark_dirty(out)
        ctx.save_for_backward(out, g, pooled, *hidden, g_new, *weights)
        return out, g_new

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, grad_g_new):  # type: ignore[override]
        needs = sum(1 << i for i, need in enumerate(ctx.needs_input_grad) if need)
        grads = torch.ops.lgdnet.diffuse_backward(
            grad_y, grad_g_new, *ctx.saved_tensors, needs, low_rank_kernel.MAX_ROWS,
            low_rank_kernel.MIN_WEIGHT_ELEMENTS)
        return tuple(grad if need else None for grad, need in zip(grads, ctx.needs_input_grad))


def diffuse(block: nn.Module, out: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (2) on ``out`` in place and Eq. (3)'s ``g_l``, as :func:`diffuse_` computes them,
    recorded as one autograd node (:class:`_Diffusion`); returns ``(x_l, g_l)``.

    Shape:
        ``out``: the block's map (``"clips"`` or ``"frames"``), ``g``: ``(N, C_in)`` ->
        ``out``'s shape and ``(N, C_out)``.
    """
    weights = [w.contiguous() for w in _weights(block)]
    return _Diffusion.apply(out, g.contiguous(), *weights)
