"""Memory layout of the networks' activations: channels-last ("NDHWC") or contiguous ("NCDHW").

With the convolution weights stored channels-last, every convolution returns a channels-last
map and the rest of the network (BatchNorm, ReLU, the LGD block's global residual and pooling)
follows, so converting the weights is all it takes. On a CPU, oneDNN's convolutions run much
faster on such maps than on contiguous ones (``benchmarks/RESULTS.md``: `lgd3d_r50` training
steps about 1.2x, inference about 1.4x faster on a 2-core AMD EPYC); the numbers computed are the
same up to float rounding.

3D weights (5 dims) become ``torch.channels_last_3d``, 2D weights (4 dims, LGD-2D's per-frame
convolutions) ``torch.channels_last``. Checkpoints store values, not layouts: a state dict saved
from a channels-last model loads into a contiguous one and back.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

__all__ = ["MEMORY_FORMATS", "global_average", "is_channels_last", "resolve_memory_format",
           "to_memory_format"]

MemoryFormat = Literal["auto", "channels_last", "contiguous"]
MEMORY_FORMATS: tuple[str, ...] = ("auto", "channels_last", "contiguous")


def _format_for(tensor: torch.Tensor, channels_last: bool) -> torch.memory_format | None:
    if tensor.dim() == 5:
        return torch.channels_last_3d if channels_last else torch.contiguous_format
    if tensor.dim() == 4:
        return torch.channels_last if channels_last else torch.contiguous_format
    return None


def to_memory_format(model: nn.Module, memory_format: str) -> nn.Module:
    """Store the 4- and 5-dimensional parameters and buffers of ``model`` in ``memory_format``
    (``"channels_last"`` or ``"contiguous"``), in place; returns ``model``.

    The parameters stay the same objects (their ``.data`` is replaced), so an optimiser that
    already holds them keeps working.
    """
    if memory_format not in ("channels_last", "contiguous"):
        raise ValueError(
            f"unknown memory format {memory_format!r}; expected 'channels_last' or 'contiguous'")
    channels_last = memory_format == "channels_last"
    with torch.no_grad():
        for module in model.modules():
            for table in (module._parameters, module._buffers):
                for tensor in table.values():
                    if tensor is None:
                        continue
                    fmt = _format_for(tensor, channels_last)
                    if fmt is not None and not tensor.is_contiguous(memory_format=fmt):
                        tensor.data = tensor.data.contiguous(memory_format=fmt)
    return model


def is_channels_last(model: nn.Module) -> bool:
    """Whether the first convolution weight of ``model`` is stored channels-last."""
    for param in model.parameters():
        fmt = _format_for(param, True)
        if fmt is not None:
            return param.is_contiguous(memory_format=fmt) and not param.is_contiguous()
    return False


def resolve_memory_format(memory_format: str, device: torch.device | str, precision: str = "fp32") -> str:
    """The layout ``"auto"`` stands for on ``device``: channels-last on the CPU (oneDNN) and
    for bf16/fp16 on CUDA (tensor-core convolutions prefer it); contiguous for fp32 on CUDA,
    where cuDNN's fp32 3D convolutions gain nothing from it (``benchmarks/cuda``)."""
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"unknown memory format {memory_format!r}; expected one of {MEMORY_FORMATS}")
    if memory_format != "auto":
        return memory_format
    device_type = torch.device(device).type
    if device_type == "cuda" and precision == "fp32":
        return "contiguous"
    return "channels_last"


class _MeanOverContiguous(torch.autograd.Function):
    """The mean of a contiguous tensor over ``dims``, whose gradient is materialised contiguous:
    for a view of a map in its memory order, the view backward then stays a view."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dims: tuple[int, ...]):  # type: ignore[override]
        ctx.shape, ctx.dims = x.shape, dims
        ctx.count = math.prod(x.shape[d] for d in dims)
        return x.sum(dims) / ctx.count

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        for d in sorted(ctx.dims):
            grad = grad.unsqueeze(d)
        return (grad / ctx.count).expand(ctx.shape).contiguous(), None


def global_average(x: torch.Tensor) -> torch.Tensor:
    """P of Eq. (3): the average over T x H x W of a clip map ``(N, C, T, H, W)``, reduced over
    a view in the map's memory order so that its gradient reaches the map in the map's layout.

    ``x.mean((2, 3, 4))`` of a channels-last map, or of LGD-2D's frames ``(N*T, C, H, W)``
    viewed as clips, has a backward that writes a contiguous-format map, which autograd then
    adds to the map's channels-last gradient across layouts: 1.6 ms for LGD-2D's g_1 at batch
    2 on a 2-core CPU, where this form takes 0.7 ms (``benchmarks/epilogue_passes_results.md``). Contiguous clips get a
    broadcast view as gradient (nothing written), every other map one map written in its
    memory order (a broadcast view would be copied to contiguous format where LGD-2D's frame
    view is undone). Same values up to float rounding.

    Shape:
        ``(N, C, T, H, W) -> (N, C)``.
    """
    n, c, t = x.shape[:3]
    if x.is_contiguous():
        return x.reshape(n, c, -1).sum(2) / x[0, 0].numel()
    # channels-last clips, and channels-last frames seen as clips: (N, T, H, W, C) memory
    if x.is_contiguous(memory_format=torch.channels_last_3d):
        return _MeanOverContiguous.apply(x.permute(0, 2, 3, 4, 1).reshape(n, -1, c), (1,))
    frames = x.transpose(1, 2)  # contiguous frames seen as clips: (N, T, C, H, W) memory
    if frames.is_contiguous():
        return _MeanOverContiguous.apply(frames.reshape(n, t, c, -1), (1, 3))
    return x.mean((2, 3, 4))
