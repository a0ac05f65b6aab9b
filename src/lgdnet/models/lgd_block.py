"""The Local and Global Diffusion block (Sec. 3.1, Eq. 1-3) and its variants (Sec. 5.3, Eq. 8-9).

One :class:`LGDBlock` wraps any *local unit* F, the residual unit before its final ReLU
(branch plus shortcut), with the contract ``(N, C_in, T, H, W) -> (N, C_out, T', H', W')``.
LGD-3D plugs in a P3D-A bottleneck, LGD-2D a 2D bottleneck applied to every frame; the
diffusion code below is the only place Eq. (2), (3), (8) and (9) are written.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Diffusion = Literal["lgd", "v1", "v2", "none"]
DIFFUSIONS: tuple[str, ...] = ("lgd", "v1", "v2", "none")


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
    """A bias-free projection W = W1 W2 of rank r (Sec. 3.1): ``reduce`` is W2, ``expand`` W1.

    Args:
        in_features: C_a, the size of the input vector.
        out_features: C_b, the size of the output vector.
        rank: r, the inner dimension C_hat.

    Shape:
        ``(N, C_a) -> (N, C_b)``.
    """

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.reduce = nn.Linear(in_features, rank, bias=False)
        self.expand = nn.Linear(rank, out_features, bias=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.expand(self.reduce(v))


def spread(v: torch.Tensor) -> torch.Tensor:
    """US: an ``(N, C)`` vector as an ``(N, C, 1, 1, 1)`` view that broadcasts over positions.

    Made contiguous first: a transposed vector (``mm`` outputs and gradients can be) has
    stride 1 along N, and an element-wise kernel broadcasting it walks the map with N
    innermost, 25x slower on a ``channels_last_3d`` map.
    """
    return v.contiguous()[:, :, None, None, None]


def global_average(x: torch.Tensor) -> torch.Tensor:
    """P: the average over T x H x W, ``(N, C, T, H, W) -> (N, C)``.

    Written as ``sum / M`` rather than ``mean``: the backward of ``sum`` is an expand (a view),
    while ``mean``'s divides the expanded gradient and so writes one more full-size tensor in
    every block of the training step.
    """
    return x.sum((2, 3, 4)) / x[0, 0].numel()


def add_relu_(x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``x = ReLU(x + other)`` in place, in one pass over ``x`` where PyTorch has the fused
    kernel (``aten::_add_relu_``, which the TorchScript fuser uses) and in two otherwise."""
    if (_ADD_RELU is not None and x.device.type == "cpu" and x.dtype == other.dtype
            and x.dtype in (torch.float32, torch.float64)):  # the kernel's types
        return _ADD_RELU(x, other)
    return x.add_(other).relu_()


_ADD_RELU = getattr(torch.ops.aten, "_add_relu_", None)


def _clip_view(frames: torch.Tensor, batch: int) -> torch.Tensor:
    """``(N*T, C, H, W) -> (N, T, C, H, W)``, a view of frame-major maps."""
    return frames.view(batch, frames.shape[0] // batch, *frames.shape[1:])


def frame_major_base(out: torch.Tensor) -> torch.Tensor | None:
    """The fresh ``(N*T, C, H, W)`` tensor of which ``out`` is exactly the ``(N, C, T, H, W)``
    view (``view(N, T, C, H, W).transpose(1, 2)``, how LGD-2D's units return per-frame maps),
    or ``None`` when ``out`` is anything else."""
    base = out._base
    if base is None or base.dim() != 4 or out.dim() != 5:
        return None
    n, _, t = out.shape[:3]
    if base.shape[0] != n * t:
        return None
    candidate = _clip_view(base, n).transpose(1, 2)
    same = (candidate.shape == out.shape and candidate.stride() == out.stride()
            and candidate.storage_offset() == out.storage_offset())
    return base if same else None


class _ResidualReLUPool(torch.autograd.Function):
    """``y = ReLU(out + US(r))`` (Eq. 2) and ``P(y)`` (Eq. 3) as one autograd node.

    ``out`` (the local unit's fresh output) is overwritten, so forward allocates nothing
    beyond the pooled vector. Backward forms ``(dL/dy + US(dL/dP) / M) * [y > 0]`` in one
    buffer (the ReLU mask is applied in place) and ``dL/dr`` as its sum over positions. This
    is where the diffusion's cost in a training step goes (benchmarks/RESULTS.md), and the
    fusion halves the passes over the full-size map. Not twice differentiable.

    ``out`` is either a clip map ``(N, C, T, H, W)`` or, with ``frame_major``, LGD-2D's
    per-frame maps ``(N*T, C, H, W)`` (a clip view of those may not be modified in place by a
    two-output Function; their base may). Memory layout: the (N, C) vectors are broadcast
    contiguous (see :func:`spread`); the gradient buffer takes the layout of ``y`` (that of
    the network's activations) whatever layout ``dL/dy`` arrives in.
    """

    @staticmethod
    def _views(t: torch.Tensor, v: torch.Tensor, frame_major: bool):
        """``t`` as clips, ``v`` broadcast over its positions, and the positions' dims."""
        if frame_major:
            return _clip_view(t, v.shape[0]), v.contiguous()[:, None, :, None, None], (1, 3, 4)
        return t, spread(v), (2, 3, 4)

    @staticmethod
    def forward(ctx, out: torch.Tensor, residual: torch.Tensor, frame_major: bool = False):  # type: ignore[override]
        clips, broadcast, dims = _ResidualReLUPool._views(out, residual, frame_major)
        add_relu_(clips, broadcast)
        ctx.mark_dirty(out)
        ctx.save_for_backward(out)
        ctx.frame_major = frame_major
        return out, clips.mean(dims)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor, grad_pooled: torch.Tensor):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        grad = torch.empty_like(y, dtype=grad_y.dtype)  # y's layout
        spread_pooled = (grad_pooled / (y.numel() // grad_pooled.numel())).to(grad_y.dtype)
        clips, broadcast, dims = _ResidualReLUPool._views(grad, spread_pooled, ctx.frame_major)
        grad_y_clips = _clip_view(grad_y.reshape(grad.shape), clips.shape[0]) if ctx.frame_major else grad_y
        torch.add(grad_y_clips, broadcast, out=clips)
        torch.ops.aten.threshold_backward.grad_input(grad, y, 0, grad_input=grad)
        return grad, clips.sum(dims), None


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

    P is the global average over T x H x W. Each W is low rank, ``W = W1 W2`` with rank
    ``C_out // rank_ratio``. Where the block changes channels (the first block of a stage) the
    projections map between the sizes: W^{x,g}: C_in -> C_out, W^{g,g}: C_in -> C_out,
    W^{g,x}: C_out -> C_out, so ``g_l`` always has the channels of ``x_l``.

    Parameter names stay torchvision's: the unit's layers are registered directly on the block
    (``layer1.0.conv1``, not ``layer1.0.local_unit.conv1``) so a 2D ResNet checkpoint maps by
    name. To keep module-swapping tools (SyncBatchNorm conversion, quantisation) working, the
    unit and the block share one table of submodules, parameters and buffers.

    Args:
        local_unit: F, returns branch + shortcut before the final ReLU.
        in_channels: C_in of ``x_{l-1}`` and ``g_{l-1}``.
        out_channels: C_out of ``x_l`` and ``g_l``.
        diffusion: ``"lgd" | "v1" | "v2" | "none"``.
        rank_ratio: C / C_hat (16 in the paper).

    Shape:
        ``x: (N, C_in, T, H, W), g: (N, C_in) -> x: (N, C_out, T', H', W'), g: (N, C_out)``;
        with ``"none"`` the block takes and returns ``g`` unchanged (usually ``None``).
    """

    def __init__(
        self,
        local_unit: nn.Module,
        in_channels: int,
        out_channels: int,
        diffusion: str = "lgd",
        rank_ratio: int = 16,
    ) -> None:
        super().__init__()
        if diffusion not in DIFFUSIONS:
            raise ValueError(f"unknown diffusion {diffusion!r}; expected one of {DIFFUSIONS}")
        # Share the unit's tables (see the class docstring): its layers become the block's.
        for table in ("_parameters", "_buffers", "_non_persistent_buffers_set", "_modules"):
            self.__dict__[table] = local_unit.__dict__[table]
        self.__dict__["local_unit"] = local_unit  # deliberately not a registered child
        self.diffusion = diffusion
        self.in_channels = in_channels
        self.out_channels = out_channels
        rank = low_rank(out_channels, rank_ratio)
        for name in ("global_to_local", "local_to_global", "global_to_global"):
            if name in self._modules:
                raise ValueError(f"the local unit already has a submodule named {name!r}")
        if diffusion != "none":
            self.global_to_local = LowRankLinear(in_channels, out_channels, rank)  # W^{x,g}
        if diffusion in ("lgd", "v2"):
            self.local_to_global = LowRankLinear(out_channels, out_channels, rank)  # W^{g,x}
            self.global_to_global = LowRankLinear(in_channels, out_channels, rank)  # W^{g,g}

    def train(self, mode: bool = True) -> LGDBlock:
        super().train(mode)
        self.local_unit.training = mode
        return self

    def forward(
        self, x: torch.Tensor, g: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.local_unit(x)  # F(x_{l-1}) = branch + shortcut, a fresh tensor
        # LGD-2D's units return a clip view of frame-major maps: in-place work goes to those
        # maps themselves (in place on the view, autograd would copy the whole gradient)
        frames = frame_major_base(out)
        if self.diffusion == "none":
            if frames is not None:
                return _clip_view(F.relu(frames, inplace=True), out.shape[0]).transpose(1, 2), g
            return F.relu(out, inplace=True), g
        if g is None:
            raise ValueError("an LGD block needs the global vector g_{l-1}")
        if self.diffusion == "v2":
            gate = torch.sigmoid(self.global_to_local(g))
            out = F.relu(out * spread(gate), inplace=True)  # Eq. (9)
            pooled = global_average(out)  # P(x_l)
        elif out._base is None:
            # Eq. (2) with P(x_l) of Eq. (3) fused into one node (see _ResidualReLUPool)
            out, pooled = _ResidualReLUPool.apply(out, self.global_to_local(g))
        elif frames is not None:
            # the same on LGD-2D's frame-major maps
            frames, pooled = _ResidualReLUPool.apply(frames, self.global_to_local(g), True)
            out = _clip_view(frames, out.shape[0]).transpose(1, 2)
        else:
            # any other view: unfused
            out += spread(self.global_to_local(g))  # Eq. (2): US broadcasts
            out = F.relu(out, inplace=True)
            pooled = global_average(out)  # P(x_l)
        if self.diffusion == "v1":
            return out, pooled  # Eq. (8)
        g = F.relu(self.local_to_global(pooled) + self.global_to_global(g))  # Eq. (3)
        return out, g


class LGDStage(nn.Sequential):
    """A stack of LGD blocks (one ``res`` stage of Table 1) threading the pair (x, g)."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, g: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        for block in self:
            x, g = block(x, g)
        return x, g
