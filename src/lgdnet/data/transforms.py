"""Spatial transforms on frame tensors (Sec. 5.2), without torchvision.

Frames stay ``uint8`` ``(T, H, W, C)`` through resizing, cropping and flipping (cheap, and
a quarter of the memory of float32); normalisation comes last and produces the float32
``(C, T, H, W)`` layout the models take.

Training (Sec. 5.2): resize to 120x160 (3D) or 240x320 (2D), preferably while decoding
(``VideoSource.get_frames(size=...)``); random square crop 112 or 224, the same for every
frame of a sample; random horizontal flip. Testing: resize the shorter side to 120 or 240
and keep the whole frame (fully convolutional inference), or take three squares along the
longer side.

Optical flow arrives as ``uint8`` ``(T, H, W, 2)`` where ``v = (clip(f, -b, b) + b) / (2b)
* 255`` (rounded), so 127.5 is zero flow. Flipping a flow field mirrors the image *and*
negates its horizontal component: ``x' = 255 - x`` on the ``uint8`` code, which is exact
negation around 127.5. Flow is normalised to ``[-1, 1]`` with ``v / 127.5 - 1`` rather than
with ImageNet statistics.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "short_side_size",
    "resize_frames",
    "crop_frames",
    "random_crop",
    "center_crop",
    "three_crops",
    "flip_horizontal",
    "normalize_rgb",
    "normalize_flow",
    "stack_flow_snippets",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(height, width)`` scaled so that the shorter side is ``short_side`` (aspect kept)."""
    if height <= width:
        return short_side, max(1, int(round(width * short_side / height)))
    return max(1, int(round(height * short_side / width))), short_side


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased) resize of ``uint8`` frames; a no-op at the right size.

    Prefer resizing while decoding (``get_frames(size=...)``): this is the fallback for
    sources that cannot.

    Shape:
        ``(T, H, W, C)`` -> ``(T, size[0], size[1], C)``, ``uint8``.
    """
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def crop_frames(frames: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """The same rectangle of every frame. Shape: ``(T, H, W, C)`` -> ``(T, height, width, C)``."""
    if top < 0 or left < 0 or top + height > frames.shape[1] or left + width > frames.shape[2]:
        raise ValueError(
            f"crop {height}x{width} at ({top}, {left}) leaves frames of {tuple(frames.shape[1:3])}"
        )
    return frames[:, top : top + height, left : left + width]


def random_crop(frames: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """A random ``size`` x ``size`` square, the same for every frame (Sec. 5.2).

    Shape:
        ``(T, H, W, C)`` -> ``(T, size, size, C)``.
    """
    height, width = frames.shape[1], frames.shape[2]
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    return crop_frames(frames, top, left, size, size)


def center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` square. Shape: ``(T, H, W, C)`` -> ``(T, size, size, C)``."""
    height, width = frames.shape[1], frames.shape[2]
    return crop_frames(frames, (height - size) // 2, (width - size) // 2, size, size)


def three_crops(frames: torch.Tensor) -> list[torch.Tensor]:
    """Three squares of side min(H, W) along the longer side: left, centre, right (or top,
    centre, bottom for portrait frames).

    Shape:
        ``(T, H, W, C)`` -> three ``(T, S, S, C)`` with ``S = min(H, W)``.
    """
    height, width = frames.shape[1], frames.shape[2]
    side = min(height, width)
    if width >= height:
        lefts = (0, (width - side) // 2, width - side)
        return [crop_frames(frames, 0, left, side, side) for left in lefts]
    tops = (0, (height - side) // 2, height - side)
    return [crop_frames(frames, top, 0, side, side) for top in tops]


def flip_horizontal(frames: torch.Tensor, flow: bool = False) -> torch.Tensor:
    """Mirror frames left-right; for ``uint8`` flow also negate the x component.

    Shape:
        ``(T, H, W, C)`` -> same; flow has ``C = 2`` (x, y).
    """
    flipped = frames.flip(2)
    if flow:
        # A mirrored field moves the other way: f_x -> -f_x, i.e. code v -> 255 - v.
        flipped = flipped.clone()
        flipped[..., 0] = 255 - flipped[..., 0]
    return flipped


def normalize_rgb(
    frames: torch.Tensor,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """``uint8`` RGB frames to float32 channels-first, ImageNet-normalised.

    Shape:
        ``(T, H, W, 3)`` ``uint8`` -> ``(3, T, H, W)`` ``float32``.
    """
    # Transpose while still uint8 (a quarter of the bytes), then one fused pass over
    # contiguous memory: (v / 255 - mean) / std = v * scale + shift.
    x = frames.permute(3, 0, 1, 2).contiguous().float()
    std_t = torch.tensor(std, dtype=torch.float32)
    scale = (1.0 / (255.0 * std_t)).view(-1, 1, 1, 1)
    shift = (-torch.tensor(mean, dtype=torch.float32) / std_t).view(-1, 1, 1, 1)
    return x.mul_(scale).add_(shift)


def normalize_flow(frames: torch.Tensor) -> torch.Tensor:
    """``uint8`` flow codes to float32 in ``[-1, 1]`` (``v / 127.5 - 1``), channels first.

    Shape:
        ``(T, H, W, 2)`` ``uint8`` -> ``(2, T, H, W)`` ``float32``.
    """
    return frames.permute(3, 0, 1, 2).contiguous().float().div_(127.5).sub_(1.0)


def stack_flow_snippets(flow: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Stack each segment's consecutive flow frames along channels (TSN's flow input).

    The channels of segment ``t`` are ``(x_0, y_0, x_1, y_1, ..., x_{L-1}, y_{L-1})`` of its
    ``L`` consecutive flow frames.

    Shape:
        ``(2, T * L, H, W)`` (frames grouped by segment) -> ``(2 L, T, H, W)``.
    """
    channels, frames, height, width = flow.shape
    length = frames // num_segments
    if channels != 2 or length * num_segments != frames:
        raise ValueError(f"cannot stack flow of shape {tuple(flow.shape)} into {num_segments} segments")
    x = flow.reshape(2, num_segments, length, height, width).permute(2, 0, 1, 3, 4)
    return x.reshape(2 * length, num_segments, height, width).contiguous()
