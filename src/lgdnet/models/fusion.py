"""Inference-time folding of BatchNorm into the convolution before it.

In eval mode a BatchNorm is a fixed per-channel affine map, ``y = (x - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)``, so it can be merged into the preceding convolution:
``W' = W * s`` (per output channel) and ``b' = (b - mean) * s + beta``. The folded network
computes the same function (up to float rounding) without the BatchNorm passes over every
feature map, which on a CPU are a sizeable part of inference time (``benchmarks/RESULTS.md``).

The pairs are found by name, as the library's networks (and torchvision's ResNets) write
them: a BatchNorm ``bn<X>`` follows the convolution ``conv<X>`` of the same module, and in a
``Sequential`` (the shortcut ``downsample``) a BatchNorm follows the convolution just before it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["fold_batchnorm"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _pairs(module: nn.Module) -> list[tuple[str, str]]:
    """``(conv name, norm name)`` of the direct children of ``module`` that fold together."""
    children = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        names = list(children)
        return [(a, b) for a, b in zip(names, names[1:])
                if isinstance(children[a], _CONV) and isinstance(children[b], _NORM)]
    return [(f"conv{name[2:]}", name) for name, child in children.items()
            if name.startswith("bn") and isinstance(child, _NORM)
            and isinstance(children.get(f"conv{name[2:]}"), _CONV)]


@torch.no_grad()
def _fold(conv: nn.Module, norm: nn.Module) -> None:
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError("cannot fold a BatchNorm that tracks no running statistics")
    scale = norm.running_var.add(norm.eps).rsqrt()
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    conv.weight.mul_(scale.reshape(-1, *([1] * (conv.weight.dim() - 1))))
    conv.bias = nn.Parameter(shift.to(conv.weight.dtype))


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` (or ``model`` itself with ``inplace``) in eval mode with every
    ``conv -> BatchNorm`` pair folded into the convolution; the BatchNorms become
    ``nn.Identity``. For inference only: the result has no batch statistics to train.

    Raises:
        ValueError: a BatchNorm without running statistics.
    """
    folded = model if inplace else copy.deepcopy(model)
    folded.eval()
    for module in list(folded.modules()):
        for conv_name, norm_name in _pairs(module):
            _fold(getattr(module, conv_name), getattr(module, norm_name))
            setattr(module, norm_name, nn.Identity())
    return folded
