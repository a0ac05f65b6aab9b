"""RoIAlign (He et al., Mask R-CNN) on plain torch operators, with torchvision's semantics.

Used by the action-detection head of Sec. 5.6 (:class:`~lgdnet.models.roi_head.ROIActionHead`)
to pool proposals from the local map x_L. When ``torchvision`` is importable its compiled
``roi_align`` operator is used; otherwise :func:`roi_align` computes the same quantity, defined
as in torchvision's CPU and CUDA kernels:

* A ROI ``(b, x1, y1, x2, y2)`` in input-image pixels maps to feature coordinates
  ``x1 * spatial_scale - o`` etc., with ``o = 0.5`` when ``aligned`` (pixel centres) and ``0``
  otherwise; without ``aligned`` its width and height are raised to at least 1.
* The ROI is split into ``PH x PW`` bins; bin ``(p, q)`` averages ``gh * gw`` bilinear samples
  at ``y = y1' + p * bin_h + (i + 0.5) * bin_h / gh`` (``i < gh``; likewise x), where
  ``gh = gw = sampling_ratio`` when it is positive, else, per ROI,
  ``gh = ceil(roi_h / PH)`` and ``gw = ceil(roi_w / PW)``. A bin with no samples (an empty
  ROI under ``aligned``) is 0.
* A sample with ``y < -1`` or ``y > H`` (or ``x < -1`` or ``x > W``) contributes 0 (it still
  counts in the average); otherwise its coordinates are clamped to ``[0, H - 1]`` and
  ``[0, W - 1]`` and the four neighbours are interpolated.
* No gradient flows to the boxes, only to ``input``.

Bilinear sampling on a grid of sample points is separable, and so are the boundary rule and
the average, so bin ``(p, q)`` of ROI k is exactly ``sum_hw A_y[k, p, h] A_x[k, q, w]
input[b_k, :, h, w]`` with small ``(PH, H)`` and ``(PW, W)`` interpolation matrices. The
implementation forms their ``(PH * PW, H * W)`` Kronecker product per ROI and applies it with
one batched matrix product (``K * C * PH * PW * H * W`` multiply-adds: cheap on the 7 x 7 or
14 x 14 maps of x_L; a large map is better cropped first). Results equal torchvision's up to
the order of floating-point sums (same sample coordinates, same formulas, same dtype).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch


def boxes_to_rois(boxes: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The ``(K, 5)`` ROI form ``(batch_index, x1, y1, x2, y2)`` of ``boxes``.

    Args:
        boxes: a ``(K, 5)`` tensor (returned as is), or one ``(K_i, 4)`` tensor of
            ``(x1, y1, x2, y2)`` per image of the batch, image i getting batch index i.

    Shape:
        ``(K, 5)`` or ``[(K_0, 4), (K_1, 4), ...]`` -> ``(sum K_i, 5)``.
    """
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(
                f"boxes must be (K, 5) or a list of (K_i, 4); got {tuple(boxes.shape)}"
            )
        return boxes
    boxes = list(boxes)
    for b in boxes:
        if not isinstance(b, torch.Tensor) or b.dim() != 2 or b.shape[1] != 4:
            shape = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
            raise ValueError(f"each entry of a list of boxes must be (K_i, 4); got {shape}")
    if not boxes:
        return torch.zeros(0, 5)
    ids = [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(ids), torch.cat(boxes)], dim=1)


@functools.lru_cache(maxsize=1)
def _torchvision_op() -> Callable[..., torch.Tensor] | None:
    """torchvision's compiled ``roi_align`` operator, or None when it cannot be loaded."""
    try:
        import torchvision  # noqa: F401  (registers torch.ops.torchvision)

        return torch.ops.torchvision.roi_align
    except Exception:  # not installed, or built for another torch: import raises many kinds
        return None


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _axis_weights(
    start: torch.Tensor,
    bin_size: torch.Tensor,
    grid: torch.Tensor,
    num_bins: int,
    max_grid: int,
    size: int,
) -> torch.Tensor:
    """Interpolation-and-average matrix of one axis: ``(K, num_bins, size)``.

    Row ``(k, p)`` holds, for each feature index, the summed bilinear weights of the
    ``grid[k]`` samples of bin p divided by ``grid[k]``, with torchvision's boundary rules.
    """
    dtype = start.dtype
    bins = torch.arange(num_bins, device=start.device, dtype=dtype)[None, :, None]
    samples = torch.arange(max_grid, device=start.device, dtype=dtype)[None, None, :]
    start, bin_size, grid = start[:, None, None], bin_size[:, None, None], grid[:, None, None]
    # ROIs with no samples (grid <= 0) are masked below; divide by 1 to keep values finite.
    safe_grid = grid.clamp(min=1)
    # The kernels' expression, term for term: y1' + p * bin + (i + 0.5) * bin / grid.
    coord = start + bins * bin_size + (samples + 0.5) * bin_size / safe_grid  # (K, P, G)
    used = (samples < grid) & (coord >= -1) & (coord <= size)
    coord = coord.clamp(min=0)
    low = coord.floor()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(coord), coord - low)
    # where, not a product with the mask, so that NaN boxes give 0 as in the kernels.
    zero = torch.zeros_like(coord)
    w_low = torch.where(used, (1 - frac) / safe_grid, zero)
    w_high = torch.where(used, frac / safe_grid, zero)
    # One-hot rather than scatter_add_: deterministic on CUDA, and G stays small except for
    # ROIs far larger than the map under adaptive sampling.
    index = torch.arange(size, device=start.device, dtype=dtype)
    weights = (index == low[..., None]) * w_low[..., None]
    weights = weights + (index == high[..., None]) * w_high[..., None]
    return weights.sum(2)


def roi_align(
    input: torch.Tensor,
    boxes: torch.Tensor | Sequence[torch.Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
    use_torchvision: bool | None = None,
) -> torch.Tensor:
    """RoIAlign with the semantics of ``torchvision.ops.roi_align`` (module docstring).

    Args:
        input: feature map, any memory format (contiguous or channels-last).
        boxes: ``(K, 5)`` rows ``(batch_index, x1, y1, x2, y2)`` in input-image pixels, or a
            list of ``(K_i, 4)`` boxes per image.
        output_size: ``PH`` (square) or ``(PH, PW)``.
        spatial_scale: feature-map pixels per input pixel (1/16 for stride 16).
        sampling_ratio: samples per bin along each axis; ``<= 0``: ``ceil(roi_size / bins)``
            per ROI and axis (the adaptive rule needs the largest such count on the host, one
            synchronisation on CUDA).
        aligned: shift boxes by -0.5 pixel so that pixel centres sit at integer coordinates.
            Note that torchvision's default is ``False``.
        use_torchvision: ``None``: torchvision's operator when importable (except on CUDA
            under ``torch.use_deterministic_algorithms``, where its backward is refused);
            ``True``: require it; ``False``: the plain-torch path.

    Shape:
        ``input: (N, C, H, W)``, boxes ``(K, 5)`` -> ``(K, C, PH, PW)``, contiguous.
    """
    if input.dim() != 4:
        raise ValueError(f"input must be (N, C, H, W); got {tuple(input.shape)}")
    rois = boxes_to_rois(boxes)
    ph, pw = _pair(output_size)
    op = _torchvision_op() if use_torchvision is not False else None
    if use_torchvision and op is None:
        raise RuntimeError("use_torchvision=True but torchvision's roi_align cannot be loaded")
    if use_torchvision is None and input.is_cuda and torch.are_deterministic_algorithms_enabled():
        op = None
    if op is not None:
        rois = rois.to(device=input.device, dtype=input.dtype)
        return op(input, rois, spatial_scale, ph, pw, sampling_ratio, aligned)

    # Coordinates in the input's dtype as the kernels do (at least float32 for half inputs).
    dtype = torch.promote_types(input.dtype, torch.float32)
    rois = rois.detach().to(device=input.device, dtype=dtype)
    _, c, h, w = input.shape
    batch = rois[:, 0].long()  # the kernels' int cast: truncation
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, i] * spatial_scale - offset for i in range(1, 5))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        # torchvision: "force malformed ROIs to be 1x1"
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / ph, roi_w / pw
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full_like(bin_h, sampling_ratio)
        max_h = max_w = sampling_ratio
    else:
        grid_h, grid_w = bin_h.ceil().nan_to_num(0.0), bin_w.ceil().nan_to_num(0.0)
        max_h = max(int(grid_h.max()), 1) if len(rois) else 1
        max_w = max(int(grid_w.max()), 1) if len(rois) else 1
    weight_y = _axis_weights(y1, bin_h, grid_h, ph, max_h, h)  # (K, PH, H)
    weight_x = _axis_weights(x1, bin_w, grid_w, pw, max_w, w)  # (K, PW, W)
    # One (PH*PW, H*W) matrix per ROI: a single bmm beats two separable products whose
    # permutes copy the gathered features (3x faster at K=64, C=2048, 7x7, CPU).
    kron = (weight_y[:, :, None, :, None] * weight_x[:, None, :, None, :]).to(input.dtype)
    kron = kron.reshape(len(rois), ph * pw, h * w)
    # index_select rather than input[batch]: its backward (index_add_) is the faster one.
    # flatten(2) is a view for contiguous and channels-last inputs alike.
    features = input.flatten(2).index_select(0, batch)  # (K, C, H*W)
    return torch.matmul(features, kron.transpose(1, 2)).view(len(rois), c, ph, pw)
