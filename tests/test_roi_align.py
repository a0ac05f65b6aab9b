"""roi_align against a per-bin loop transcribed from torchvision's CPU kernel, and against
torchvision itself when it is importable."""

from __future__ import annotations

import math

import pytest
import torch

from lgdnet.models.roi_align import _torchvision_op, boxes_to_rois, roi_align


def reference_roi_align(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """One ROI, one bin, one sample at a time, as in torchvision's roi_align_kernel.cpp.

    Indexes ``input`` with Python ints, so autograd gives the kernel's backward too.
    """
    _, channels, height, width = input.shape
    ph_, pw_ = output_size
    out = []
    for roi in rois.tolist():
        b = int(roi[0])
        offset = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (v * spatial_scale - offset for v in roi[1:])
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / ph_, roi_w / pw_
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / ph_)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pw_)
        count = max(grid_h * grid_w, 1)
        bins = []
        for ph in range(ph_):
            for pw in range(pw_):
                acc = input.new_zeros(channels)
                for iy in range(grid_h):
                    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        if y < -1.0 or y > height or x < -1.0 or x > width:
                            continue
                        yy, xx = max(y, 0.0), max(x, 0.0)
                        y_low, x_low = int(yy), int(xx)
                        if y_low >= height - 1:
                            y_high = y_low = height - 1
                            yy = float(y_low)
                        else:
                            y_high = y_low + 1
                        if x_low >= width - 1:
                            x_high = x_low = width - 1
                            xx = float(x_low)
                        else:
                            x_high = x_low + 1
                        ly, lx = yy - y_low, xx - x_low
                        hy, hx = 1.0 - ly, 1.0 - lx
                        acc = acc + (
                            hy * hx * input[b, :, y_low, x_low]
                            + hy * lx * input[b, :, y_low, x_high]
                            + ly * hx * input[b, :, y_high, x_low]
                            + ly * lx * input[b, :, y_high, x_high]
                        )
                bins.append(acc / count)
        out.append(torch.stack(bins, -1).reshape(channels, ph_, pw_))
    return torch.stack(out) if out else input.new_zeros(0, channels, ph_, pw_)


# Feature map 2 x 3 x 6 x 8 at scale 1/2: image 12 x 16 pixels.
ROIS = torch.tensor(
    [
        [0, 1.0, 2.0, 11.0, 9.0],  # inside
        [1, 0.0, 0.0, 16.0, 12.0],  # the whole image
        [1, -6.0, -5.0, 5.0, 4.0],  # crosses the top-left border, samples with y, x < -1
        [0, 10.0, 7.0, 23.0, 19.0],  # crosses the bottom-right border, samples beyond H, W
        [0, 4.3, 5.1, 4.9, 5.6],  # tiny: under one feature pixel
        [1, 6.0, 6.0, 6.0, 6.0],  # empty (zero under `aligned`, 1 x 1 without)
        [0, 2.5, 3.0, 1.5, 8.0],  # x2 < x1
        [0, -30.0, -30.0, -20.0, -24.0],  # entirely outside
    ],
    dtype=torch.float64,
)
SCALE = 0.5


def feature_map(dtype: torch.dtype = torch.float64, requires_grad: bool = False) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 8, generator=generator, dtype=dtype)
    return x.requires_grad_(requires_grad)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2, 3])
@pytest.mark.parametrize("output_size", [(2, 2), (3, 4)])
def test_matches_the_per_bin_loop(aligned, sampling_ratio, output_size):
    x = feature_map()
    expected = reference_roi_align(x, ROIS, output_size, SCALE, sampling_ratio, aligned)
    got = roi_align(x, ROIS, output_size, SCALE, sampling_ratio, aligned, use_torchvision=False)
    assert got.shape == (len(ROIS), 3, *output_size)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # The cases do exercise the boundary rules: the last ROI is all zero, the border ones not.
    assert got[-1].abs().max() == 0 and got[2].abs().max() > 0 and got[3].abs().max() > 0


def test_adaptive_sampling_is_per_roi():
    """A large and a small ROI in one call: each keeps its own ceil(roi_size / bins) grid
    (a grid shared over the batch would change the small ROI's average)."""
    x = feature_map()
    rois = torch.tensor([[0, 0.0, 0.0, 16.0, 12.0], [0, 1.0, 1.0, 6.0, 4.0]], dtype=x.dtype)
    together = roi_align(x, rois, 2, SCALE, -1, True, use_torchvision=False)
    alone = roi_align(x, rois[1:], 2, SCALE, -1, True, use_torchvision=False)
    torch.testing.assert_close(together[1:], alone, rtol=0, atol=0)
    fixed = roi_align(x, rois[1:], 2, SCALE, 4, True, use_torchvision=False)
    assert not torch.allclose(alone, fixed)


def test_float32_and_integer_output_size():
    x = feature_map(torch.float32)
    got = roi_align(x, ROIS.float(), 3, SCALE, 2, use_torchvision=False)
    expected = reference_roi_align(x.double(), ROIS, (3, 3), SCALE, 2, True)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected.float(), rtol=1e-5, atol=1e-6)


def test_channels_last_input_gives_the_same_result():
    x = feature_map()
    expected = roi_align(x, ROIS, (3, 4), SCALE, 2, use_torchvision=False)
    got = roi_align(
        x.to(memory_format=torch.channels_last), ROIS, (3, 4), SCALE, 2, use_torchvision=False
    )
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_list_of_boxes_equals_the_k5_form():
    x = feature_map()
    per_image = [ROIS[ROIS[:, 0] == i, 1:] for i in range(2)]
    rois = boxes_to_rois(per_image)
    assert rois[:, 0].tolist() == [0.0] * len(per_image[0]) + [1.0] * len(per_image[1])
    got = roi_align(x, per_image, 2, SCALE, -1, use_torchvision=False)
    expected = roi_align(x, rois, 2, SCALE, -1, use_torchvision=False)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    with pytest.raises(ValueError):
        roi_align(x, [ROIS], 2)


def test_empty_boxes():
    x = feature_map()
    out = roi_align(x, torch.zeros(0, 5, dtype=x.dtype), (2, 3), use_torchvision=False)
    assert out.shape == (0, 3, 2, 3)


def test_gradcheck():
    x = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.7, 1.1, 7.3, 6.2], [1, -3.0, -2.0, 4.0, 9.5], [1, 8.0, 2.0, 12.0, 5.0]],
        dtype=torch.float64,
    )
    for ratio in (-1, 2):
        torch.autograd.gradcheck(
            lambda t, r=ratio: roi_align(t, rois, (2, 3), 0.5, r, use_torchvision=False), (x,)
        )


@pytest.mark.parametrize("aligned", [True, False])
def test_gradient_matches_the_per_bin_loop(aligned):
    x = feature_map(requires_grad=True)
    upstream = torch.randn(len(ROIS), 3, 3, 4, dtype=x.dtype)
    (grad,) = torch.autograd.grad(
        (roi_align(x, ROIS, (3, 4), SCALE, -1, aligned, use_torchvision=False) * upstream).sum(),
        x,
    )
    (expected,) = torch.autograd.grad(
        (reference_roi_align(x, ROIS, (3, 4), SCALE, -1, aligned) * upstream).sum(), x
    )
    assert grad.abs().sum() > 0
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


def test_no_gradient_to_boxes():
    x = feature_map(requires_grad=True)
    rois = ROIS.clone().requires_grad_(True)
    roi_align(x, rois, 2, SCALE, use_torchvision=False).sum().backward()
    assert rois.grad is None and x.grad is not None


@pytest.mark.skipif(_torchvision_op() is None, reason="torchvision is not importable")
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_matches_torchvision(aligned, sampling_ratio):
    """An extra check: the per-bin loop above is the reference of record."""
    from torchvision.ops import roi_align as tv_roi_align

    x = feature_map(requires_grad=True)
    ours = roi_align(x, ROIS, (3, 4), SCALE, sampling_ratio, aligned, use_torchvision=False)
    theirs = tv_roi_align(x, ROIS, (3, 4), SCALE, sampling_ratio, aligned)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    (g_theirs,) = torch.autograd.grad(theirs.sum(), x)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-12, atol=1e-12)
    auto = roi_align(x, ROIS, (3, 4), SCALE, sampling_ratio, aligned)
    torch.testing.assert_close(auto, theirs, rtol=0, atol=0)


def test_use_torchvision_true_without_torchvision_is_an_error():
    if _torchvision_op() is not None:
        pytest.skip("torchvision is importable")
    with pytest.raises(RuntimeError, match="torchvision"):
        roi_align(feature_map(), ROIS, 2, use_torchvision=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = feature_map(torch.float32)
    expected = roi_align(x, ROIS.float(), (3, 4), SCALE, -1, use_torchvision=False)
    got = roi_align(x.cuda(), ROIS.float().cuda(), (3, 4), SCALE, -1, use_torchvision=False)
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-5, atol=1e-6)


def test_nan_box_gives_zeros_and_leaves_the_others_alone():
    """As torchvision's kernels (NaN coordinates fail the in-range test)."""
    x = feature_map()
    rois = torch.cat([ROIS[:1], torch.tensor([[0, float("nan"), 1.0, 5.0, 6.0]]).double()])
    for ratio in (-1, 2):
        out = roi_align(x, rois, 2, SCALE, ratio, use_torchvision=False)
        assert out[1].abs().max() == 0
        torch.testing.assert_close(
            out[:1], roi_align(x, ROIS[:1], 2, SCALE, ratio, use_torchvision=False)
        )
