"""Box, temporal and spatio-temporal (tube) IoU.

Box convention: ``x1, y1, x2, y2`` in pixels, **continuous** coordinates, so a box's area is
``(x2 - x1) * (y2 - y1)`` with no ``+ 1``. (The MATLAB-era code of Gkioxari & Malik, Saha et al.
and the ACT evaluation of Kalogeiton et al. 2017 count pixels inclusively, ``(x2 - x1 + 1)``;
for boxes of ~100 px the IoUs differ by the order of 1%.) IoU is 0 when the union
is empty (two zero-area boxes), so degenerate boxes never match.

Frame ranges are **inclusive** ``(first, last)`` 1-based frame numbers: ``(3, 5)`` is 3 frames.
"""

from __future__ import annotations

import numpy as np


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas ``(x2 - x1) * (y2 - y1)``.

    Shape:
        boxes ``(..., 4)`` -> ``(...)``.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Broadcasting IoU of (..., 4) against (..., 4).
    width = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    height = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(width, 0.0, None) * np.clip(height, 0.0, None)
    union = box_area(a) + box_area(b) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two sets of boxes.

    Args:
        a: ``(n, 4)`` boxes ``x1, y1, x2, y2``.
        b: ``(m, 4)`` boxes.

    Returns:
        ``(n, m)`` float64 IoU, ``[i, j]`` between ``a[i]`` and ``b[j]``.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return _iou(a[:, None, :], b[None, :, :])


def paired_box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-by-row IoU: ``a[i]`` against ``b[i]``.

    Shape:
        a ``(n, 4)``, b ``(n, 4)`` -> ``(n,)``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.shape[-1] != 4:
        raise ValueError(f"expected two (n, 4) arrays of the same shape, got {a.shape}, {b.shape}")
    return _iou(a, b)


def temporal_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """IoU of two inclusive frame ranges ``(first, last)``.

    ``temporal_iou((1, 10), (6, 15))`` = 5 shared frames / 15 frames = 1/3.
    """
    (a0, a1), (b0, b1) = a, b
    if a1 < a0 or b1 < b0:
        raise ValueError(f"frame ranges must have first <= last, got {a} and {b}")
    inter = min(a1, b1) - max(a0, b0) + 1
    if inter <= 0:
        return 0.0
    return float(inter / ((a1 - a0 + 1) + (b1 - b0 + 1) - inter))


def _tube_iou(a: np.ndarray, b: np.ndarray) -> float:
    # Both tubes already checked contiguous (types.check_tube): the frames they share are the
    # intersection of their ranges, found by slicing instead of a set intersection.
    a0, a1, b0, b1 = int(a[0, 0]), int(a[-1, 0]), int(b[0, 0]), int(b[-1, 0])
    lo, hi = max(a0, b0), min(a1, b1)
    if hi < lo:
        return 0.0
    inter = hi - lo + 1
    t_iou = inter / ((a1 - a0 + 1) + (b1 - b0 + 1) - inter)
    spatial = _iou(a[lo - a0 : hi - a0 + 1, 1:], b[lo - b0 : hi - b0 + 1, 1:])
    return float(t_iou * spatial.mean())


def _tube_iou_matrix(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    # (len(a), len(b)) tube IoUs of checked tubes, vectorised over a: for each tube g of b, the
    # rows of all a-tubes inside g's frame range are compared with g's box of the same frame.
    # temporal IoU x mean box IoU = (inter / union) x (sum of box IoUs / inter) = sum / union.
    out = np.zeros((len(a), len(b)))
    if not a or not b:
        return out
    rows = np.concatenate(a)
    frames = rows[:, 0].astype(np.int64)
    owner = np.repeat(np.arange(len(a)), [len(t) for t in a])
    starts = np.array([t[0, 0] for t in a])
    ends = np.array([t[-1, 0] for t in a])
    for j, g in enumerate(b):
        g0, g1 = int(g[0, 0]), int(g[-1, 0])
        inside = np.flatnonzero((frames >= g0) & (frames <= g1))
        ious = _iou(rows[inside, 1:], g[frames[inside] - g0, 1:])
        total = np.bincount(owner[inside], weights=ious, minlength=len(a))
        inter = np.clip(np.minimum(ends, g1) - np.maximum(starts, g0) + 1, 0, None)
        out[:, j] = total / ((ends - starts + 1) + (g1 - g0 + 1) - inter)
    return out


def tube_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Spatio-temporal IoU of two tubes (Weinzaepfel et al. 2015; Saha et al. 2016).

    The temporal IoU of the two inclusive frame ranges times the mean box IoU over the frames
    both tubes cover; 0 when they share no frame.

    Args:
        a: ``(n, 5)`` rows ``frame, x1, y1, x2, y2``, frames contiguous and increasing.
        b: ``(m, 5)``, same layout.

    Returns:
        The IoU in ``[0, 1]``.
    """
    arrays = []
    for tube in (a, b):
        tube = np.asarray(tube, dtype=np.float64)
        if tube.ndim != 2 or tube.shape[1] != 5 or tube.shape[0] == 0:
            raise ValueError(f"a tube is a non-empty (n, 5) array, got shape {tube.shape}")
        if (np.diff(tube[:, 0]) != 1).any():
            raise ValueError("tube frames must be contiguous and increasing")
        arrays.append(tube)
    return _tube_iou(arrays[0], arrays[1])
