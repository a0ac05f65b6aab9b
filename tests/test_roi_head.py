"""ROIActionHead (Sec. 5.6): shapes, the background column, pooling values, gradients."""

from __future__ import annotations

import pytest
import torch

from lgdnet.models.roi_head import ROIActionHead

STRIDE = 16  # x_L of LGD-3D: 112 x 112 frames -> 7 x 7 (Table 1)


def test_shapes_at_the_paper_sizes():
    """16 x 112 x 112 clips -> x_L 2048 x 4 x 7 x 7, a few key-frame boxes per clip."""
    head = ROIActionHead(2048, num_classes=21).eval()
    local = torch.randn(2, 2048, 4, 7, 7)
    boxes = torch.tensor(
        [[0, 10.0, 5.0, 80.0, 110.0], [1, 0.0, 0.0, 112.0, 112.0], [1, 50.0, 40.0, 70.0, 60.0]]
    )
    assert head(local, boxes).shape == (3, 22)
    assert head.roi_features(local, boxes).shape == (3, 2048)
    per_clip = [boxes[:1, 1:], boxes[1:, 1:]]
    torch.testing.assert_close(head(local, per_clip), head(local, boxes), rtol=0, atol=0)


@pytest.mark.parametrize("roi_size, sampling_ratio", [(7, 2), (2, -1), (1, 1)])
def test_tiny_shapes(roi_size, sampling_ratio):
    head = ROIActionHead(5, 3, roi_size=roi_size, sampling_ratio=sampling_ratio)
    local = torch.randn(3, 5, 2, 4, 6)
    boxes = torch.tensor([[2, 3.0, 4.0, 60.0, 50.0], [0, 0.0, 0.0, 8.0, 8.0]])
    assert head(local, boxes).shape == (2, 4)
    assert head(local, torch.zeros(0, 5)).shape == (0, 4)


def test_background_is_column_zero_and_reset_classifier():
    head = ROIActionHead(8, num_classes=24)
    assert head.num_classes == 24 and head.classifier.out_features == 25
    head.reset_classifier(21)
    assert head.num_classes == 21 and head.classifier.in_features == 8
    # Training with labels c + 1 (0 for background) is what the convention means: a bias on
    # column 0 only makes every box background.
    with torch.no_grad():
        head.classifier.weight.zero_()
        head.classifier.bias.zero_()
        head.classifier.bias[0] = 1.0
    local = torch.randn(1, 8, 2, 3, 3)
    logits = head(local, torch.tensor([[0, 0.0, 0.0, 40.0, 40.0]]))
    assert logits.argmax(1).tolist() == [0]


def test_use_global_widens_the_classifier_and_uses_g():
    torch.manual_seed(0)
    local, global_ = torch.randn(2, 6, 2, 4, 4), torch.randn(2, 6)
    boxes = torch.tensor([[1, 0.0, 0.0, 64.0, 64.0], [0, 8.0, 8.0, 40.0, 56.0]])
    head = ROIActionHead(6, 4, use_global=True).eval()
    assert head.in_features == 12 and head.classifier.in_features == 12
    features = head.roi_features(local, boxes, global_)
    # Each box gets the global vector of its own clip.
    torch.testing.assert_close(features[:, 6:], global_[[1, 0]], rtol=0, atol=0)
    assert not torch.allclose(head(local, boxes, global_), head(local, boxes, global_ + 1))
    with pytest.raises(ValueError, match="global"):
        head(local, boxes)

    local_only = ROIActionHead(6, 4).eval()
    assert local_only.classifier.in_features == 6
    torch.testing.assert_close(
        local_only(local, boxes, global_), local_only(local, boxes, global_ + 1), rtol=0, atol=0
    )


def test_a_hot_position_is_found_by_max_pooling():
    """x_L is zero except cell (h0, w0) = (3, 2), which holds v_t at time t. A 3 x 3-cell box
    centred on it, pooled to 3 x 3 bins with one sample per bin, samples the cell centres
    (aligned: feature coordinate = pixel / 16 - 0.5), so its feature is mean_t v_t. Moved by
    half a cell (8 pixels) in x, the nearest samples fall half a cell away: half the value.
    A box two cells away sees nothing."""
    c, h0, w0 = 3, 3, 2
    local = torch.zeros(1, c, 4, 7, 7)
    values = torch.tensor([[1.0, 2.0, 3.0, 6.0], [-4.0, 0.0, 0.0, 0.0], [8.0, 8.0, 8.0, 8.0]])
    local[0, :, :, h0, w0] = values
    head = ROIActionHead(c, 2, roi_size=3, sampling_ratio=1)
    x1, y1 = STRIDE * (w0 - 1), STRIDE * (h0 - 1)
    boxes = torch.tensor(
        [
            [0, x1, y1, x1 + 3 * STRIDE, y1 + 3 * STRIDE],
            [0, x1 + 8, y1, x1 + 8 + 3 * STRIDE, y1 + 3 * STRIDE],
            [0, x1 + 3 * STRIDE, y1, x1 + 6 * STRIDE, y1 + 3 * STRIDE],
        ],
        dtype=torch.float32,
    )
    features = head.roi_features(local, boxes)
    # Channel 1 is negative at the hot cell: the max is then a zero neighbour.
    expected = torch.tensor([[3.0, 0.0, 8.0], [1.5, 0.0, 4.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(features, expected)


def test_gradients_reach_parameters_and_inputs():
    head = ROIActionHead(4, 3, use_global=True, dropout=0.5).train()
    local = torch.randn(2, 4, 2, 5, 5, requires_grad=True)
    global_ = torch.randn(2, 4, requires_grad=True)
    boxes = torch.tensor([[0, 4.0, 4.0, 70.0, 60.0], [1, 20.0, 10.0, 50.0, 75.0]])
    head(local, boxes, global_).logsumexp(1).sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert local.grad[0].abs().sum() > 0 and local.grad[1].abs().sum() > 0
    assert global_.grad.abs().sum() > 0
    # A box reads its own clip only: with boxes on clip 0 alone, clip 1 gets no gradient.
    local.grad = None
    head(local, boxes[:1], global_).sum().backward()
    assert local.grad[0].abs().sum() > 0 and local.grad[1].abs().sum() == 0
