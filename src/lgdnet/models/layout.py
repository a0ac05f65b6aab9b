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

from typing import Literal

import torch
from torch import nn

__all__ = ["MEMORY_FORMATS", "is_channels_last", "resolve_memory_format", "to_memory_format"]

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
