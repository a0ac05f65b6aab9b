"""Frame-mAP and video-mAP of spatio-temporal action detection (Sec. 5.6, Table 7).

The protocol of Saha et al. (BMVC 2016) and Kalogeiton et al. (ICCV 2017), on which Table 7's
J-HMDB and UCF101-24 ("UCF101D") numbers are reported:

- per class, detections (boxes for frame-mAP, tubes for video-mAP) are ranked by score,
  highest first, ties kept in input order (a stable sort, so results never depend on the
  platform);
- each is matched to the **not yet matched** ground truth of its class in the same video (and
  frame) with the highest IoU (the first one in input order on an IoU tie); it is a true
  positive when that IoU is ``>= iou_threshold``, otherwise a false positive and the ground
  truth stays free. Duplicates of a matched ground truth are therefore false positives;
- AP is the VOC all-point interpolated area under the precision/recall curve (:func:`voc_ap`);
  the mean runs over the classes that have ground truth (others are NaN and left out).

Note: the ACT evaluation code (Kalogeiton et al.) integrates the raw curve with the trapezoid
rule instead of the VOC interpolation, so its numbers can differ slightly from these.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .boxes import _iou, _tube_iou_matrix
from .types import (
    FrameDetection,
    FrameDetectionArrays,
    GroundTruthTubes,
    Tube,
    check_ground_truth,
    check_label,
)

JHMDB_THRESHOLDS = (0.2, 0.5)  # Table 7, J-HMDB (0.5 is the standard one)
UCF101_24_THRESHOLDS = (0.05, 0.1, 0.2, 0.3)  # Table 7, UCF101D (0.2 is the standard one)


@dataclass(frozen=True)
class DetectionAP:
    """Mean and per-class average precision at one IoU threshold.

    Attributes:
        mean_ap: mean of the per-class APs over classes with ground truth (NaN if none has).
        per_class: class index -> AP (NaN for a class without ground truth).
        num_ground_truth: class index -> number of ground-truth boxes (frame) or tubes (video).
        iou_threshold: the threshold used.
    """

    mean_ap: float
    per_class: dict[int, float]
    num_ground_truth: dict[int, int]
    iou_threshold: float

    def as_dict(self) -> dict:
        """Plain-dict form, for results files."""
        return {"mean_ap": self.mean_ap, "iou_threshold": self.iou_threshold,
                "per_class": dict(self.per_class), "num_ground_truth": dict(self.num_ground_truth)}


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point interpolated average precision (the VOC 2010+ devkit's ``VOCap``).

    The curve is closed with recall 0 and 1 (precision 0 there), precision is made monotone
    from the right (``p(r) = max_{r' >= r} p(r')``) and summed over the steps of recall.

    Args:
        recall: ``(n,)`` recall after each ranked detection (non-decreasing).
        precision: ``(n,)`` precision after each ranked detection.

    Returns:
        AP in ``[0, 1]`` (0 for empty inputs).
    """
    recall = np.asarray(recall, dtype=np.float64).reshape(-1)
    precision = np.asarray(precision, dtype=np.float64).reshape(-1)
    if recall.shape != precision.shape:
        raise ValueError(f"recall and precision differ in length: {recall.size} vs {precision.size}")
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _ap(true_positive: np.ndarray, num_gt: int) -> float:
    # true_positive: flags of one class's detections in rank order.
    if num_gt == 0:
        return float("nan")
    tp = np.cumsum(true_positive, dtype=np.float64)
    fp = np.cumsum(~true_positive, dtype=np.float64)
    return voc_ap(tp / num_gt, tp / np.maximum(tp + fp, 1.0))


def _rank(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    # Class by class, score descending, input order on ties: a stable (radix) sort of the small
    # integer labels, then a stable sort of each class's scores (faster than np.lexsort).
    by_label = np.argsort(labels.astype(np.int16 if labels.max(initial=0) < 2**15 else np.int64),
                          kind="stable")
    bounds = np.flatnonzero(np.diff(labels[by_label])) + 1
    for segment in np.split(by_label, bounds):
        segment[:] = segment[np.argsort(-scores[segment], kind="stable")]
    return by_label


def _check_threshold(iou_threshold: float) -> float:
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    return float(iou_threshold)


def _summary(per_class: dict[int, float], num_gt: dict[int, int], threshold: float) -> DetectionAP:
    valid = [ap for ap in per_class.values() if not np.isnan(ap)]
    mean = float(np.mean(valid)) if valid else float("nan")
    return DetectionAP(mean, per_class, num_gt, threshold)


def _lookup(keys: np.ndarray, queries: np.ndarray, size: int) -> np.ndarray:
    # Index of each query in the sorted unique ``keys``, -1 when absent; every query < size.
    if size <= max(4 * len(queries), 1 << 22):
        # Keys dense enough for a table: O(1) per detection instead of a binary search.
        table = np.full(size, -1, dtype=np.int64)
        table[keys[keys < size]] = np.flatnonzero(keys < size)
        return table[queries]
    where = np.searchsorted(keys, queries)
    found = where < len(keys)
    found[found] = keys[where[found]] == queries[found]
    return np.where(found, where, -1)


def _match_in_turns(
    boxes: np.ndarray, ranked: np.ndarray, group: np.ndarray, padded: np.ndarray,
    free: np.ndarray, threshold: float,
) -> np.ndarray:
    # Greedy matching of the detections in rank order (boxes[ranked], each with its ground-
    # truth group or -1) against the padded ground truth (G, width, 4); ``free`` (G, width) is
    # updated. Returns the true-positive flags in rank order. Matching only depends
    # on the order inside a group, so all detections with the same turn in their group (the
    # k-th of it, in rank order) are matched at once: as many array steps as the most
    # detections of one frame and class, instead of one Python step per detection.
    with_gt = np.flatnonzero(group >= 0)
    by_group = with_gt[np.argsort(group[with_gt], kind="stable")]
    per_group = np.bincount(group[by_group], minlength=len(padded))
    turn = np.arange(len(by_group)) - np.repeat(np.cumsum(per_group) - per_group, per_group)
    by_turn = by_group[np.argsort(turn, kind="stable")]
    turn_ends = np.cumsum(np.bincount(turn))
    true_positive = np.zeros(len(group), dtype=bool)
    for lo, hi in zip(np.r_[0, turn_ends[:-1]], turn_ends):
        pos = by_turn[lo:hi]
        g = group[pos]
        iou = np.where(free[g], _iou(boxes[ranked[pos]][:, None, :], padded[g]), -1.0)
        best = iou.argmax(axis=1)  # the first on a tie: input order of the ground truth
        hit = iou[np.arange(len(pos)), best] >= threshold
        true_positive[pos[hit]] = True
        free[g[hit], best[hit]] = False
    return true_positive


def frame_map(
    gt: GroundTruthTubes,
    detections: FrameDetectionArrays | Iterable[FrameDetection],
    iou_threshold: float = 0.5,
    *,
    num_classes: int | None = None,
) -> DetectionAP:
    """Frame-mAP: AP of per-frame boxes against every ground-truth box of every frame.

    The ground-truth boxes are the rows of the ground-truth tubes (one per tube and frame); a
    detection in a frame without ground truth of its class is a false positive.

    Args:
        gt: per video, per label index, a list of ``(n, 5)`` tubes (rows ``frame, x1, y1, x2,
            y2``, 1-based frames).
        detections: :class:`FrameDetectionArrays` or any iterable of :class:`FrameDetection`.
        iou_threshold: box IoU for a true positive (the usual 0.5, as in Kalogeiton et al.).
        num_classes: when given, labels must be ``< num_classes`` and every class is reported;
            otherwise the classes seen in ``gt`` and ``detections`` are.

    Returns:
        :class:`DetectionAP`.

    Raises:
        DetectionDataError: a bad box, frame, label or score (the message names the video).
    """
    threshold = _check_threshold(iou_threshold)
    gt = check_ground_truth(gt, num_classes)
    if not isinstance(detections, FrameDetectionArrays):
        detections = FrameDetectionArrays.from_detections(detections)
    detections.check_labels(num_classes)

    # Ground-truth rows, and one integer code per video shared with the detections.
    codes = {name: i for i, name in enumerate(detections.video_names)}
    rows = [(codes.setdefault(video, len(codes)), label, tube)
            for video, per_label in gt.items() for label, tubes in per_label.items()
            for tube in tubes]
    gt_video = np.concatenate([np.full(len(t), v) for v, _, t in rows] or [[]]).astype(np.int64)
    gt_label = np.concatenate([np.full(len(t), c) for _, c, t in rows] or [[]]).astype(np.int64)
    gt_rows = np.concatenate([t for _, _, t in rows] or [np.zeros((0, 5))])
    gt_frame, gt_box = gt_rows[:, 0].astype(np.int64), gt_rows[:, 1:]

    labels = detections.labels
    if num_classes is None:
        classes = sorted(set(np.unique(gt_label).tolist()) | set(np.unique(labels).tolist()))
    else:
        classes = list(range(num_classes))
    n_labels = max(classes, default=-1) + 1
    n_frames = int(max(gt_frame.max(initial=0), detections.frames.max(initial=0))) + 1
    # One key per (video, frame, label): matching never crosses a key.
    gt_key = (gt_video * n_frames + gt_frame) * n_labels + gt_label
    det_key = (detections.video_index * n_frames + detections.frames) * n_labels + labels

    # Ground truth grouped by key and padded to (groups, most boxes in a group, 4).
    keys, gt_group, counts = np.unique(gt_key, return_inverse=True, return_counts=True)
    width = int(counts.max(initial=1))
    order = np.argsort(gt_group, kind="stable")
    slot = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    padded = np.zeros((len(keys), width, 4))
    padded[gt_group[order], slot] = gt_box[order]
    free = np.arange(width)[None, :] < counts[:, None]  # real and not yet matched

    ranked = _rank(labels, detections.scores)
    group = _lookup(keys, det_key[ranked], n_labels * n_frames * len(detections.video_names))
    true_positive = _match_in_turns(detections.boxes, ranked, group, padded, free, threshold)

    sorted_labels = labels[ranked]
    bounds = np.searchsorted(sorted_labels, [classes, np.add(classes, 1)])
    num_gt = {c: int(n) for c, n in zip(classes, np.bincount(gt_label, minlength=n_labels)[classes])}
    per_class = {c: _ap(true_positive[lo:hi], num_gt[c]) for c, lo, hi in zip(classes, *bounds)}
    return _summary(per_class, num_gt, threshold)


def _video_iou_tables(
    gt: dict[str, dict[int, list[np.ndarray]]], tubes: Sequence[Tube], classes: list[int]
) -> dict[int, list[tuple[str, list[float]]]]:
    # Per class, in rank order: (video, IoU of the tube with each GT tube of its video/class).
    # Computed once, one matrix per (video, class), and shared by every threshold.
    scores = np.asarray([t.score for t in tubes], dtype=np.float64)
    labels = np.asarray([t.label for t in tubes], dtype=np.int64)
    tables: dict[int, list[tuple[str, list[float]]]] = {}
    for c in classes:
        members = np.flatnonzero(labels == c)
        ranked = members[np.argsort(-scores[members], kind="stable")].tolist()
        by_video: dict[str, list[int]] = {}
        for rank, i in enumerate(ranked):
            by_video.setdefault(tubes[i].video, []).append(rank)
        rows: list[tuple[str, list[float]]] = [("", [])] * len(ranked)
        for video, ranks in by_video.items():
            matrix = _tube_iou_matrix([tubes[ranked[r]].boxes for r in ranks],
                                      gt.get(video, {}).get(c, []))
            for r, row in zip(ranks, matrix.tolist()):
                rows[r] = (video, row)
        tables[c] = rows
    return tables


def video_map_at(
    gt_tubes: GroundTruthTubes,
    tubes: Sequence[Tube],
    thresholds: Sequence[float] = UCF101_24_THRESHOLDS,
    *,
    num_classes: int | None = None,
) -> dict[float, DetectionAP]:
    """Video-mAP at several spatio-temporal IoU thresholds (the columns of Table 7).

    Tube IoUs are computed once and reused for every threshold.

    Args:
        gt_tubes: per video, per label index, a list of ``(n, 5)`` ground-truth tubes.
        tubes: predicted tubes (:class:`Tube`).
        thresholds: e.g. :data:`JHMDB_THRESHOLDS` or :data:`UCF101_24_THRESHOLDS`.
        num_classes: as in :func:`frame_map`.

    Returns:
        threshold -> :class:`DetectionAP`, in the order given.
    """
    thresholds = [_check_threshold(t) for t in thresholds]
    gt = check_ground_truth(gt_tubes, num_classes)
    tubes = list(tubes)
    for tube in tubes:
        if not isinstance(tube, Tube):
            raise TypeError(f"expected Tube objects, got {type(tube).__name__}")
        check_label(tube.video, tube.label, num_classes, "tube label")
    if num_classes is None:
        classes = sorted({c for per in gt.values() for c in per} | {t.label for t in tubes})
    else:
        classes = list(range(num_classes))
    num_gt = {c: sum(len(per.get(c, ())) for per in gt.values()) for c in classes}
    tables = _video_iou_tables(gt, tubes, classes)

    results = {}
    for threshold in thresholds:
        per_class = {}
        for c in classes:
            # Plain lists: a video has one or two ground-truth tubes, too few for numpy.
            free = {video: [True] * len(per[c]) for video, per in gt.items() if c in per}
            flags = np.zeros(len(tables[c]), dtype=bool)
            for k, (video, ious) in enumerate(tables[c]):
                best, best_iou = -1, -1.0
                for j, iou in enumerate(ious):
                    if iou > best_iou and free[video][j]:  # first one on a tie
                        best, best_iou = j, iou
                if best >= 0 and best_iou >= threshold:
                    flags[k] = True
                    free[video][best] = False
            per_class[c] = _ap(flags, num_gt[c])
        results[threshold] = _summary(per_class, num_gt, threshold)
    return results


def video_map(
    gt_tubes: GroundTruthTubes,
    tubes: Sequence[Tube],
    iou_threshold: float,
    *,
    num_classes: int | None = None,
) -> DetectionAP:
    """Video-mAP at one spatio-temporal IoU threshold ``delta`` (Saha et al. 2016, Table 7).

    A tube is a true positive when its best free ground-truth tube of the same class and video
    has :func:`~lgdnet.detection.boxes.tube_iou` ``>= iou_threshold``.

    Args:
        gt_tubes: per video, per label index, a list of ``(n, 5)`` ground-truth tubes (rows
            ``frame, x1, y1, x2, y2``, 1-based contiguous frames).
        tubes: predicted tubes.
        iou_threshold: ``delta``; J-HMDB uses 0.2 and 0.5, UCF101-24 0.05, 0.1, 0.2 and 0.3.
        num_classes: as in :func:`frame_map`.

    Returns:
        :class:`DetectionAP`.
    """
    return video_map_at(gt_tubes, tubes, [iou_threshold], num_classes=num_classes)[
        float(iou_threshold)
    ]
