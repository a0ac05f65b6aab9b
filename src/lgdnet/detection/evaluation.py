"""Frame-mAP and video-mAP of a detector on one split's test videos (Sec. 5.6, Table 7).

:func:`evaluate_detections` is what ``lgdnet eval-detection`` reports: the matching and AP of
:mod:`lgdnet.detection.metrics`, run on the ground truth of the split's test videos only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from lgdnet.errors import ConfigError, DetectionDataError

from .metrics import JHMDB_THRESHOLDS, UCF101_24_THRESHOLDS, frame_map, video_map_at
from .types import FrameDetection, FrameDetectionArrays, Tube

if TYPE_CHECKING:  # only attributes of the data layer's ground truth are read
    from lgdnet.data.detection_annotations import DetectionGroundTruth

logger = logging.getLogger(__name__)

FRAME_IOU = 0.5  # frame-mAP@0.5, as Kalogeiton et al. (ICCV 2017) and later work report it


def default_thresholds(gt: DetectionGroundTruth) -> tuple[float, ...]:
    """Table 7's video-mAP thresholds for the dataset ``gt`` is.

    J-HMDB is the dataset with 3 splits (0.2 and 0.5); UCF101-24 has one (0.05, 0.1, 0.2, 0.3).
    """
    return JHMDB_THRESHOLDS if gt.num_splits == 3 else UCF101_24_THRESHOLDS


def threshold_key(threshold: float) -> str:
    """The results-dict key of an IoU threshold: ``0.05`` -> ``"0.05"``, ``0.5`` -> ``"0.5"``."""
    return f"{threshold:g}"


def plural(count: int, noun: str) -> str:
    """``"1 tube"``, ``"2 tubes"``: counts in messages."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _check_thresholds(thresholds: Iterable[float]) -> tuple[float, ...]:
    checked: list[float] = []
    for value in thresholds:
        value = float(value)
        if not 0.0 < value <= 1.0:
            raise ConfigError(f"IoU threshold {value:g} is outside (0, 1]")
        if value not in checked:  # a repeated threshold would repeat a column
            checked.append(value)
    if not checked:
        raise ConfigError("no IoU threshold given")
    return tuple(checked)


def _test_frames(frames: FrameDetectionArrays, test: set[str]) -> FrameDetectionArrays:
    # The rows on test videos, with the videos list unchanged (indices stay valid).
    on_test = np.array([name in test for name in frames.video_names] + [False])
    keep = on_test[frames.video_index]
    if keep.all():
        return frames
    return FrameDetectionArrays(frames.video_names, frames.video_index[keep], frames.frames[keep],
                                frames.labels[keep], frames.scores[keep], frames.boxes[keep])


def evaluate_detections(
    gt: DetectionGroundTruth,
    tubes: Sequence[Tube],
    frames: FrameDetectionArrays | Iterable[FrameDetection],
    split: int,
    thresholds: Sequence[float] | None = None,
) -> dict:
    """Frame-mAP@0.5 and video-mAP of detections on the test videos of one split.

    Ground truth is restricted to the split's test videos, and detections on any other video
    are ignored (a warning gives their count): a J-HMDB video is a test video of one split
    and a training video of the others, so one detections file can serve all three splits.
    Classes without a ground-truth tube among the test videos are left out of the means and
    of ``per_class`` (their AP is undefined); detections of such a class change nothing.

    Args:
        gt: the ground truth (:func:`lgdnet.data.detection_annotations.load_detection_gt`).
        tubes: predicted tubes (video-mAP).
        frames: per-frame detections (frame-mAP), as columns or objects.
        split: 1-based split number.
        thresholds: video-mAP IoU thresholds; None for :func:`default_thresholds`.

    Returns:
        ``{"frame_mAP": {"0.5": m}, "video_mAP": {"0.2": m, ...}, "per_class": {name:
        {"frame_AP": {"0.5": ap}, "video_AP": {...}, "num_gt_tubes": n, "num_gt_boxes": b}},
        "num_test_videos": n, "split": split, "thresholds": [...], "num_tubes": n,
        "num_frame_detections": n, "ignored": {"tubes": n, "frames": n}}``; every AP and mean
        in ``[0, 1]`` (an empty kind of detections scores 0).

    Raises:
        DetectionAnnotationError: the split does not exist in ``gt``.
        DetectionDataError: no test video has ground truth, or a label ``>= len(gt.labels)``.
        ConfigError: a threshold outside ``(0, 1]``.
    """
    test_videos = gt.split_videos(split, "test")
    thresholds = _check_thresholds(default_thresholds(gt) if thresholds is None else thresholds)
    test = set(test_videos)
    gt_tubes = {video: gt.tubes.get(video, {}) for video in test_videos}
    if not isinstance(frames, FrameDetectionArrays):
        frames = FrameDetectionArrays.from_detections(frames)
    tubes = list(tubes)
    kept_tubes = [tube for tube in tubes if tube.video in test]
    kept_frames = _test_frames(frames, test)
    ignored = {"tubes": len(tubes) - len(kept_tubes), "frames": len(frames) - len(kept_frames)}
    if ignored["tubes"] or ignored["frames"]:
        logger.warning("%s and %s are on videos outside the test videos of split %d; ignored",
                       plural(ignored["tubes"], "tube"),
                       plural(ignored["frames"], "frame detection"), split)
    for kind, count in (("tubes", len(kept_tubes)), ("frame detections", len(kept_frames))):
        if not count:
            logger.warning("no %s on the test videos of split %d: their mAP is 0", kind, split)

    num_classes = len(gt.labels)
    frame_ap = frame_map(gt_tubes, kept_frames, FRAME_IOU, num_classes=num_classes)
    video_ap = video_map_at(gt_tubes, kept_tubes, thresholds, num_classes=num_classes)
    num_gt_tubes = video_ap[thresholds[0]].num_ground_truth
    classes = [c for c in range(num_classes) if num_gt_tubes[c] > 0]
    if not classes:
        raise DetectionDataError(f"split {split}: none of its {len(test)} test videos has "
                                 "a ground-truth tube", gt.source)

    def mean(per_class: dict[int, float]) -> float:
        # Over the classes with ground truth, where no AP is NaN.
        return float(np.mean([per_class[c] for c in classes]))

    frame_key = threshold_key(FRAME_IOU)
    per_class = {
        gt.labels[c]: {
            "frame_AP": {frame_key: frame_ap.per_class[c]},
            "video_AP": {threshold_key(t): video_ap[t].per_class[c] for t in thresholds},
            "num_gt_tubes": num_gt_tubes[c],
            "num_gt_boxes": frame_ap.num_ground_truth[c],
        }
        for c in classes
    }
    return {
        "frame_mAP": {frame_key: mean(frame_ap.per_class)},
        "video_mAP": {threshold_key(t): mean(video_ap[t].per_class) for t in thresholds},
        "per_class": per_class,
        "num_test_videos": len(test),
        "split": split,
        "thresholds": list(thresholds),
        "num_tubes": len(kept_tubes),
        "num_frame_detections": len(kept_frames),
        "ignored": ignored,
    }
