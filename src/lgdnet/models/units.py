"""Local units F (Sec. 4): the residual units that an :class:`~lgdnet.models.lgd_block.LGDBlock`
wraps. Each returns branch + shortcut *before* the final ReLU (the block adds the global
residual and applies the ReLU, Eq. 2).

* :class:`P3DBottleneck`: LGD-3D (Sec. 4.2, Table 1), the P3D-A bottleneck
  1x1x1 -> 1x3x3 -> 3x1x1 -> 1x1x1.
* :class:`FrameBottleneck`: LGD-2D (Sec. 4.1), torchvision's 2D ResNet bottleneck applied to
  every frame independently, on frame-major maps ``(N*T, C, H, W)`` (the block's
  ``layout="frames"``).

Layer names follow torchvision's ``Bottleneck`` (``conv1``, ``bn1``, ``conv2``, ``bn2``,
``conv3``, ``bn3``, ``downsample.0``, ``downsample.1``) so 2D checkpoints map by name; the
temporal convolution of P3D-A is ``conv2_t``/``bn2_t`` (no 2D counterpart). As in torchvision
v1.5, the spatial stride sits on the 3x3 convolution.
"""

from __future__ import annotations

import torch
from torch import nn

EXPANSION = 4  # bottleneck output channels = 4 x width (ResNet-50/101)


def to_frames(x: torch.Tensor) -> torch.Tensor:
    """Fold time into the batch: ``(N, C, T, H, W) -> (N*T, C, H, W)`` (a copy unless ``x``
    is a :func:`to_clip` view)."""
    n, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(n * t, c, h, w)


def to_clip(frames: torch.Tensor, batch: int) -> torch.Tensor:
    """Unfold ``(N*T, C, H, W) -> (N, C, T, H, W)`` as a view of the frame-major tensor."""
    nt, c, h, w = frames.shape
    return frames.view(batch, nt // batch, c, h, w).transpose(1, 2)


class P3DBottleneck(nn.Module):
    """P3D-A bottleneck (Table 1): 1x1x1 -> 1x3x3 (spatial stride) -> 3x1x1 -> 1x1x1.

    Args:
        in_channels: channels of the input map.
        width: channels inside the bottleneck; the output has ``4 * width``.
        stride: spatial stride of the 1x3x3 convolution (and of the shortcut).

    Shape:
        ``(N, C_in, T, H, W) -> (N, 4*width, T, H/stride, W/stride)``.
    """

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv3d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = nn.Conv3d(
            width, width, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False
        )
        self.bn2 = nn.BatchNorm3d(width)
        self.conv2_t = nn.Conv3d(width, width, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn2_t = nn.BatchNorm3d(width)
        self.conv3 = nn.Conv3d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=(1, stride, stride), bias=False),
                nn.BatchNorm3d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.relu(self.bn2_t(self.conv2_t(out)))
        out = self.bn3(self.conv3(out))
        out += shortcut  # the block adds the global term and applies the final ReLU
        return out


class FrameBottleneck(nn.Module):
    """torchvision's 2D ResNet ``Bottleneck`` (v1.5) on every frame (LGD-2D, Sec. 4.1).

    Args:
        in_channels: channels of the input map.
        width: channels inside the bottleneck; the output has ``4 * width``.
        stride: spatial stride of the 3x3 convolution (and of the shortcut).

    Shape:
        ``(N*T, C_in, H, W) -> (N*T, 4*width, H/stride, W/stride)``: frames of all clips in
        one batch, so time never needs folding between units.
    """

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        shortcut = frames if self.downsample is None else self.downsample(frames)
        out = self.relu(self.bn1(self.conv1(frames)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += shortcut  # the block adds the global term and applies the final ReLU
        return out
