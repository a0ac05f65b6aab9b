"""The Local and Global Diffusion block (Sec. 3.1, Eq. 1-3) and its variants (Sec. 5.3, Eq. 8-9).

One :class:`LGDBlock` wraps any *local unit* F, the residual unit before its final ReLU
(branch plus shortcut), registered as its child ``local_unit``. LGD-3D plugs in a P3D-A
bottleneck on clip maps ``(N, C, T, H, W)``; LGD-2D a 2D bottleneck on frame-major maps
``(N*T, C, H, W)`` (``layout="frames"``). The diffusion below is the only place Eq. (2),
(3), (8) and (9) are written.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from lgdnet.models import diffusion_kernel, epilogue_kernel, low_rank_kernel
from lgdnet.models.layout import global_average

# an FX leaf here: it branches on the map's strides, which symbolic tracing cannot see
torch.fx.wrap("global_average")

Diffusion = Literal["lgd", "v1", "v2", "none"]
DIFFUSIONS: tuple[str, ...] = ("lgd", "v1", "v2", "none")
LAYOUTS: tuple[str, ...] = ("clips", "frames")
EPILOGUES: tuple[str, ...] = ("fused", "plain", "compiled")
ORDERS: tuple[str, ...] = ("paper", "authors")


def low_rank(out_channels: int, rank_ratio: int) -> int:
    """Rank C_hat = C_out / rank_ratio of the projections (Sec. 3.1: C/16), at least 1."""
    return max(1, out_channels // rank_ratio)


def lgd_extra_parameters(
    in_channels: int, out_channels: int, diffusion: str = "lgd", rank_ratio: int = 16
) -> int:
    """Closed form of the parameters an LGD block adds to its local unit.

    With r = C_out / rank_ratio, each low-rank projection W = W1 W2 (C_a -> C_b) costs
    r (C_a + C_b): W^{x,g} (C_in -> C_out), W^{g,g} (C_in -> C_out), W^{g,x} (C_out -> C_out).
    For C_in = C_out = C and r = C/16 this is 3 * 2C * C/16 = 3/8 C^2, the paper's figure.
    ``"v1"`` keeps only W^{x,g}; ``"none"`` adds nothing.
    """
    if diffusion not in DIFFUSIONS:
        raise ValueError(f"unknown diffusion {diffusion!r}; expected one of {DIFFUSIONS}")
    rank = low_rank(out_channels, rank_ratio)
    global_to_local = rank * (in_channels + out_channels)
    if diffusion == "none":
        return 0
    if diffusion == "v1":
        return global_to_local
    return (
        global_to_local + rank * (out_channels + out_channels) + rank * (in_channels + out_channels)
    )


class LowRankLinear(nn.Module):
    """A projection W = W1 W2 of rank r (Sec. 3.1): ``reduce`` is W2, ``expand`` W1.

    The paper's projections have no bias; the authors' public code gives both factors one
    (``bias=True``, used by ``create_model(init_scheme="authors")``). Without bias, CPU
    vectors of a few rows and wide factors (C >= 1024) go through
    :mod:`lgdnet.models.low_rank_kernel` (the same products, faster than BLAS there); anything
    else through the two ``nn.Linear``.

    Args:
        in_features: C_a, the size of the input vector.
        out_features: C_b, the size of the output vector.
        rank: r, the inner dimension C_hat.
        bias: add a bias to both factors.

    Shape:
        ``(N, C_a) -> (N, C_b)``.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = False) -> None:
        super().__init__()
        self.reduce = nn.Linear(in_features, rank, bias=bias)
        self.expand = nn.Linear(rank, out_features, bias=bias)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if self.reduce.bias is None and low_rank_kernel.applies(v, self.reduce.weight,
                                                                   self.expand.weight):
            return low_rank_kernel.project(v, self.reduce.weight, self.expand.weight)
        return self.expand(self.reduce(v))


def as_clips(x: torch.Tensor, batch: int, layout: str) -> tuple[torch.Tensor, tuple, tuple]:
    """``(view, vector_shape, dims)``: a map with one leading clip dimension, the shape an
    ``(N, C)`` vector takes to broadcast over its positions, and the positions' dimensions.

    For ``"clips"`` the map itself ``(N, C, T, H, W)``, positions ``(2, 3, 4)``; for
    ``"frames"`` the frame-major ``(N*T, C, H, W)`` map viewed as ``(N, T, C, H, W)``
    (splitting the first dimension is a view in any memory layout), positions ``(1, 3, 4)``.
    """
    if layout == "frames":
        return x.view(batch, -1, *x.shape[1:]), (batch, 1, -1, 1, 1), (1, 3, 4)
    return x, (batch, -1, 1, 1, 1), (2, 3, 4)


def pool(x: torch.Tensor, batch: int, layout: str) -> torch.Tensor:
    """P: a block's map (in the block's ``layout``) averaged over its positions, ``(N, C)``
    (:func:`lgdnet.models.layout.global_average`)."""
    if layout == "frames":
        x = x.view(batch, -1, *x.shape[1:]).transpose(1, 2)
    return global_average(x)


def spread(v: torch.Tensor, shape: tuple) -> torch.Tensor:
    """US: an ``(N, C)`` vector as a view that broadcasts over positions.

    Made contiguous first: a transposed vector (``mm`` outputs and gradients can be) has
    stride 1 along N, and an element-wise kernel broadcasting it walks the map with N
    innermost, 25x slower on a ``channels_last_3d`` map.
    """
    return v.contiguous().view(shape)


def add_relu_(x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``x = ReLU(x + other)`` in place, in one pass over ``x`` where PyTorch has the fused
    kernel (``aten::_add_relu_``, which the TorchScript fuser uses) and in two otherwise.
    Not differentiable: used on tensors autograd does not track. Compilers and exporters
    (``torch.compile``, ``torch.export``, ONNX) see the two standard ops, which they fuse
    themselves or can translate."""
    if (_ADD_RELU is not None and x.device.type == "cpu" and x.dtype == other.dtype
            and x.dtype in (torch.float32, torch.float64)  # the kernel's types
            and not torch.compiler.is_compiling()):
        return _ADD_RELU(x, other)
    return x.add_(other).relu_()


_ADD_RELU = getattr(torch.ops.aten, "_add_relu_", None)


class _ResidualReLUPool(torch.autograd.Function):
    """``y = ReLU(out + US(r))`` (Eq. 2) and ``P(y)`` (Eq. 3) as one autograd node.

    ``out`` (the local unit's fresh output) is overwritten, so forward allocates nothing
    beyond the pooled vector. Backward forms ``(dL/dy + US(dL/dP) / M) * [y > 0]`` in one
    buffer and ``dL/dr`` as its sum over positions. Where :mod:`lgdnet.models.epilogue_kernel`
    applies (float32/float64 CPU maps) each direction is one pass over the map; otherwise
    forward makes two (add+ReLU, pool) where autograd makes three, and backward three (add,
    ReLU mask in place, sum). Not twice
    differentiable. The gradient buffer takes the layout of ``y`` (the network's activations)
    whatever layout ``dL/dy`` arrives in. ``bench_lgd_block.py`` times it against the plain
    formula and against ``torch.compile`` of it.
    """

    @staticmethod
    def forward(ctx, out: torch.Tensor, residual: torch.Tensor, layout: str):  # type: ignore[override]
        ctx.kernel = epilogue_kernel.applies(out, residual)
        ctx.mark_dirty(out)
        ctx.layout = layout
        if ctx.kernel:  # one pass: add, ReLU and pool
            pooled = epilogue_kernel.add_relu_pool_(out, residual, residual.numel() / out.numel())
            ctx.save_for_backward(out)
            return out, pooled
        clips, shape, dims = as_clips(out, residual.shape[0], layout)
        add_relu_(clips, spread(residual, shape))
        ctx.save_for_backward(out)
        return out, clips.mean(dims)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor, grad_pooled: torch.Tensor):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        scaled = (grad_pooled / (y.numel() // grad_pooled.numel())).to(grad_y.dtype)
        if ctx.kernel and grad_y.dtype == y.dtype:  # one pass: add, mask and reduce
            grad, grad_residual = epilogue_kernel.add_relu_pool_backward(grad_y, y, scaled)
            return grad, grad_residual, None
        grad = torch.empty_like(y, dtype=grad_y.dtype)  # y's layout
        n = grad_pooled.shape[0]
        clips, shape, dims = as_clips(grad, n, ctx.layout)
        grad_y_clips, _, _ = as_clips(grad_y, n, ctx.layout)
        torch.add(grad_y_clips, spread(scaled, shape), out=clips)
        torch.ops.aten.threshold_backward.grad_input(grad, y, 0, grad_input=grad)
        return grad, clips.sum(dims), None


def _plain_epilogue(
    out: torch.Tensor, residual: torch.Tensor, layout: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (2) and P of Eq. (3) as written, out of place: what ``torch.compile`` fuses."""
    clips, shape, dims = as_clips(out, residual.shape[0], layout)
    y = F.relu(clips + spread(residual, shape))
    return y.view(out.shape), y.sum(dims) / (y.shape[dims[0]] * y.shape[3] * y.shape[4])


_COMPILED: list = []


def compiled_epilogue(
    out: torch.Tensor, residual: torch.Tensor, layout: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain epilogue through ``torch.compile`` (inductor: C++ on the CPU, Triton on CUDA),
    compiled once per process and per shape (``dynamic=False``); the block's
    ``epilogue="compiled"`` (``run.compile: epilogue``)."""
    if not _COMPILED:
        _COMPILED.append(torch.compile(_plain_epilogue, dynamic=False))
    return _COMPILED[0](out, residual, layout)


@torch.fx.wrap
def residual_relu_pool(
    out: torch.Tensor, residual: torch.Tensor, layout: str = "clips", fused: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (2) ``x_l = ReLU(out + US(residual))`` and P(x_l) of Eq. (3), in place on ``out``.

    ``fused`` uses :class:`_ResidualReLUPool` when autograd tracks ``out`` or ``residual`` (a
    frozen local unit's output does not require grad, W^{x,g}'s vector does) and no compiler
    or exporter is tracing (they see, and fuse, the plain formula); otherwise the plain
    formula runs, in place. A leaf for ``torch.fx`` (``torch.fx.wrap``), so symbolic tracing records
    one call.

    Shape:
        ``out``: ``(N, C, T, H, W)`` (``"clips"``) or ``(N*T, C, H, W)`` (``"frames"``);
        ``residual``: ``(N, C)`` -> ``out``'s shape and ``(N, C)``.
    """
    tracked = torch.is_grad_enabled() and (out.requires_grad or residual.requires_grad)
    if fused and tracked and not torch.compiler.is_compiling():
        return _ResidualReLUPool.apply(out, residual, layout)
    if fused and not tracked and epilogue_kernel.applies(out, residual):
        return out, epilogue_kernel.add_relu_pool_(out, residual, residual.numel() / out.numel())
    clips, shape, dims = as_clips(out, residual.shape[0], layout)
    if tracked:
        clips = F.relu(clips + spread(residual, shape))
        out = clips.view(out.shape)
    else:
        add_relu_(clips, spread(residual, shape))
    # P as ``sum / M``: the backward of ``sum`` is an expand (a view), ``mean``'s writes one
    # more full-size tensor
    return out, clips.sum(dims) / (clips.shape[dims[0]] * clips.shape[3] * clips.shape[4])


class LGDBlock(nn.Module):
    """One LGD block B({x_{l-1}, g_{l-1}}) -> {x_l, g_l} around a local unit F (Eq. 1).

    Variants (one argument, Sec. 5.3):

    * ``"lgd"``: Eq. (2) ``x_l = ReLU(F(x_{l-1}) + US(W^{x,g} g_{l-1}))`` and
      Eq. (3) ``g_l = ReLU(W^{g,x} P(x_l) + W^{g,g} g_{l-1})``.
    * ``"v1"``: Eq. (2) and Eq. (8) ``g_l = P(x_l)`` (no W^{g,x}, W^{g,g}).
    * ``"v2"``: Eq. (9) ``x_l = ReLU(F(x_{l-1}) * US(sigmoid(W^{x,g} g_{l-1})))`` with Eq. (3).
      Note that with W^{x,g} = 0 (ImageNet initialisation) the gate starts at sigmoid(0) = 0.5,
      so unlike ``"lgd"`` the pre-trained features are halved at the start, not preserved.
    * ``"none"``: ``x_l = ReLU(F(x_{l-1}))``, the plain residual unit; ``g`` passes through
      untouched (the network takes P(x_L) as its global vector).

    ``order="authors"`` (``"lgd"`` and ``"v2"`` only) is the order of the authors' public
    LGD-P3D code: the new global vector is computed first, from the block's *input*,
    ``g_l = ReLU(W^{g,x} P(x_{l-1}) + W^{g,g} g_{l-1})``, and the local path receives the new
    one, ``x_l = ReLU(F(x_{l-1}) + US(W^{x,g} g_l))`` (``"v2"``: the gate of ``g_l``). So
    W^{g,x} maps C_in -> C_out and W^{x,g} C_out -> C_out; the block's last local map x_L
    never reaches g_L (the network's P(x_L) goes to the local classifier only).

    P is the global average over T x H x W. Each W is low rank, ``W = W1 W2`` with rank
    ``C_out // rank_ratio``. Where the block changes channels (the first block of a stage) the
    projections map between the sizes: W^{x,g}: C_in -> C_out, W^{g,g}: C_in -> C_out,
    W^{g,x}: C_out -> C_out, so ``g_l`` always has the channels of ``x_l``.

    Args:
        local_unit: F, returns branch + shortcut before the final ReLU, a fresh tensor.
        in_channels: C_in of ``x_{l-1}`` and ``g_{l-1}``.
        out_channels: C_out of ``x_l`` and ``g_l``.
        diffusion: ``"lgd" | "v1" | "v2" | "none"``.
        rank_ratio: C / C_hat (16 in the paper).
        layout: ``"clips"``, maps ``(N, C, T, H, W)``; or ``"frames"``, LGD-2D's frame-major
            maps ``(N*T, C, H, W)``, where P averages over the T frames of each clip (the
            clip count N is that of ``g``).
        epilogue: ``"fused"`` (Eq. 2 and P of Eq. 3 as one autograd node in training, see
            :func:`residual_relu_pool`), ``"plain"`` (autograd of the formula as written) or
            ``"compiled"`` (the formula through ``torch.compile`` in training,
            :func:`compiled_epilogue`; inference runs the fused path).
        order: ``"paper"`` (Eq. 2 then Eq. 3) or ``"authors"`` (see above).
        bias: give the projections W biases (the authors' code; the paper has none).

    Shape:
        ``x: (N, C_in, T, H, W), g: (N, C_in) -> x: (N, C_out, T', H', W'), g: (N, C_out)``
        (``"frames"``: ``(N*T, C, H, W)`` maps); with ``"none"`` the block takes and returns
        ``g`` unchanged (usually ``None``).
    """

    def __init__(
        self,
        local_unit: nn.Module,
        in_channels: int,
        out_channels: int,
        diffusion: str = "lgd",
        rank_ratio: int = 16,
        layout: str = "clips",
        epilogue: str = "fused",
        order: str = "paper",
        bias: bool = False,
    ) -> None:
        super().__init__()
        if diffusion not in DIFFUSIONS:
            raise ValueError(f"unknown diffusion {diffusion!r}; expected one of {DIFFUSIONS}")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
        if epilogue not in EPILOGUES:
            raise ValueError(f"unknown epilogue {epilogue!r}; expected one of {EPILOGUES}")
        if order not in ORDERS or (order == "authors" and diffusion not in ("lgd", "v2")):
            raise ValueError(f"order must be one of {ORDERS} ('authors' only with diffusion "
                             f"'lgd' or 'v2'), got {order!r} with {diffusion!r}")
        self.local_unit = local_unit
        self.diffusion = diffusion
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.layout = layout
        self.epilogue = epilogue
        self.order = order
        self.rank_ratio = rank_ratio
        self.bias = bias
        rank = low_rank(out_channels, rank_ratio)
        # the authors' order reads P(x_{l-1}) (C_in) and broadcasts g_l (C_out)
        first, second = (in_channels, out_channels) if order == "paper" else (out_channels, in_channels)
        if diffusion != "none":
            self.global_to_local = LowRankLinear(first, out_channels, rank, bias)  # W^{x,g}
        if diffusion in ("lgd", "v2"):
            self.local_to_global = LowRankLinear(second, out_channels, rank, bias)  # W^{g,x}
            self.global_to_global = LowRankLinear(in_channels, out_channels, rank, bias)  # W^{g,g}

    def forward(
        self, x: torch.Tensor, g: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.local_unit(x)  # F(x_{l-1}) = branch + shortcut
        if self.diffusion == "none":
            return F.relu(out, inplace=True), g
        if g is None:
            raise ValueError("an LGD block needs the global vector g_{l-1}")
        if diffusion_kernel.applies(self, out, g):  # inference: Eq. (2) and (3) in one call
            return out, diffusion_kernel.diffuse_(self, out, g)
        if diffusion_kernel.applies_in_training(self, out, g):  # the same, one autograd node
            return diffusion_kernel.diffuse(self, out, g)
        if self.order == "authors":  # g_l from the block's input, then x_l from g_l
            pooled = pool(x, g.shape[0], self.layout)  # P(x_{l-1})
            g = F.relu(self.local_to_global(pooled) + self.global_to_global(g))
            if self.diffusion == "v2":
                clips, shape, _ = as_clips(out, g.shape[0], self.layout)
                gate = torch.sigmoid(self.global_to_local(g))
                return F.relu(clips * spread(gate, shape)).view(out.shape), g  # Eq. (9), g_l
            out, _ = self._epilogue(out, self.global_to_local(g))  # Eq. (2) with g_l
            return out, g
        if self.diffusion == "v2":
            clips, shape, _ = as_clips(out, g.shape[0], self.layout)
            gate = torch.sigmoid(self.global_to_local(g))
            out = F.relu(clips * spread(gate, shape)).view(out.shape)  # Eq. (9)
            pooled = pool(out, g.shape[0], self.layout)  # P(x_l)
        else:
            out, pooled = self._epilogue(out, self.global_to_local(g))  # Eq. (2) and P(x_l)
        if self.diffusion == "v1":
            return out, pooled  # Eq. (8)
        g = F.relu(self.local_to_global(pooled) + self.global_to_global(g))  # Eq. (3)
        return out, g

    def _epilogue(self, out: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if (self.epilogue == "compiled" and torch.is_grad_enabled() and out.requires_grad
                and not torch.compiler.is_compiling()):
            return compiled_epilogue(out, residual, self.layout)
        return residual_relu_pool(out, residual, self.layout, self.epilogue != "plain")


class LGDStage(nn.Sequential):
    """A stack of LGD blocks (one ``res`` stage of Table 1) threading the pair (x, g)."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, g: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        for block in self:
            x, g = block(x, g)
        return x, g
