"""Tensor transforms: resize, crops, flips (RGB and flow), normalisation, flow stacking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lgdnet.data import transforms as T


def _frames(t=2, h=6, w=8, c=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, h, w, c), dtype=torch.uint8, generator=generator)


def test_normalize_rgb_values_and_layout():
    frames = torch.zeros((2, 3, 4, 3), dtype=torch.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 0, 128, 255
    frames[1] = 51
    out = T.normalize_rgb(frames)
    assert out.shape == (3, 2, 3, 4) and out.dtype == torch.float32
    mean, std = T.IMAGENET_MEAN, T.IMAGENET_STD
    for channel, value in enumerate((0, 128, 255)):
        expected = (value / 255 - mean[channel]) / std[channel]
        assert torch.allclose(out[channel, 0], torch.full((3, 4), expected), atol=1e-6)
        assert torch.allclose(out[channel, 1], torch.full((3, 4), (0.2 - mean[channel]) / std[channel]), atol=1e-6)


def test_normalize_flow_maps_codes_to_unit_range():
    codes = torch.tensor([0, 127, 128, 255], dtype=torch.uint8).view(1, 1, 4, 1).expand(1, 1, 4, 2)
    out = T.normalize_flow(codes)
    assert out.shape == (2, 1, 1, 4)
    np.testing.assert_allclose(out[0, 0, 0].numpy(), [-1.0, 127 / 127.5 - 1, 128 / 127.5 - 1, 1.0], atol=1e-6)


def test_flip_rgb_mirrors_only():
    frames = _frames()
    flipped = T.flip_horizontal(frames)
    assert torch.equal(flipped, frames[:, :, torch.arange(7, -1, -1)])


def test_flip_flow_negates_x():
    flow = _frames(c=2)
    flipped = T.flip_horizontal(flow, flow=True)
    mirrored = flow[:, :, torch.arange(7, -1, -1)]
    assert torch.equal(flipped[..., 0], 255 - mirrored[..., 0])
    assert torch.equal(flipped[..., 1], mirrored[..., 1])
    # After normalisation the flipped x is exactly the negated, mirrored x.
    before, after = T.normalize_flow(mirrored), T.normalize_flow(flipped)
    assert torch.allclose(after[0], -before[0], atol=1e-6)
    assert torch.equal(after[1], before[1])
    assert torch.equal(flow, _frames(c=2))  # the input is not modified


def test_random_crop_same_window_every_frame():
    frames = torch.arange(3 * 10 * 12).view(3, 10, 12, 1).to(torch.int64)
    rng = np.random.default_rng(0)
    windows = set()
    for _ in range(50):
        crop = T.random_crop(frames, 4, rng)
        assert crop.shape == (3, 4, 4, 1)
        top, left = divmod(int(crop[0, 0, 0, 0]), 12)
        assert torch.equal(crop, frames[:, top : top + 4, left : left + 4])
        windows.add((top, left))
    assert len(windows) > 10  # it is random
    again = T.random_crop(frames, 4, np.random.default_rng(0))
    assert torch.equal(again, T.random_crop(frames, 4, np.random.default_rng(0)))


def test_three_crops_landscape_and_portrait():
    landscape = torch.arange(4 * 10).view(1, 4, 10, 1)
    crops = T.three_crops(landscape)
    assert [c.shape for c in crops] == [(1, 4, 4, 1)] * 3
    assert [int(c[0, 0, 0, 0]) for c in crops] == [0, 3, 6]
    portrait = torch.arange(10 * 4).view(1, 10, 4, 1)
    assert [int(c[0, 0, 0, 0]) for c in T.three_crops(portrait)] == [0, 12, 24]


def test_center_crop():
    frames = torch.arange(6 * 8).view(1, 6, 8, 1)
    assert int(T.center_crop(frames, 4)[0, 0, 0, 0]) == 1 * 8 + 2


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [(240, 320, (120, 160)), (240, 560, (120, 280)), (256, 340, (120, 159)), (320, 240, (160, 120))],
)
def test_short_side_size(height, width, expected):
    assert T.short_side_size(height, width, 120) == expected


def test_resize_frames():
    frames = torch.full((2, 20, 30, 3), 77, dtype=torch.uint8)
    out = T.resize_frames(frames, (10, 16))
    assert out.shape == (2, 10, 16, 3) and out.dtype == torch.uint8
    assert torch.all(out == 77)
    assert T.resize_frames(frames, (20, 30)) is frames


def test_stack_flow_snippets_channel_order():
    segments, length = 3, 5
    flow = torch.zeros(2, segments * length, 1, 1)
    for frame in range(segments * length):
        flow[0, frame], flow[1, frame] = frame, 100 + frame
    stacked = T.stack_flow_snippets(flow, segments)
    assert stacked.shape == (2 * length, segments, 1, 1)
    for t in range(segments):
        for step in range(length):
            assert stacked[2 * step, t].item() == t * length + step  # x
            assert stacked[2 * step + 1, t].item() == 100 + t * length + step  # y
    with pytest.raises(ValueError):
        T.stack_flow_snippets(flow, 4)
