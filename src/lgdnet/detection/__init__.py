"""Spatio-temporal action detection: tubes, linking and the frame-/video-mAP metrics (Sec. 5.6).

Pure numpy. Frames are 1-based, boxes ``x1, y1, x2, y2`` in continuous pixel coordinates.
"""

from __future__ import annotations

from .boxes import box_area, box_iou, paired_box_iou, temporal_iou, tube_iou
from .linking import LinkingConfig, link_paths, link_video, link_videos, trim_paths
from .metrics import (
    JHMDB_THRESHOLDS,
    UCF101_24_THRESHOLDS,
    DetectionAP,
    frame_map,
    video_map,
    video_map_at,
    voc_ap,
)
from .types import FrameDetection, FrameDetectionArrays, GroundTruthTubes, Tube

__all__ = [
    "JHMDB_THRESHOLDS",
    "UCF101_24_THRESHOLDS",
    "DetectionAP",
    "FrameDetection",
    "FrameDetectionArrays",
    "GroundTruthTubes",
    "LinkingConfig",
    "Tube",
    "box_area",
    "box_iou",
    "frame_map",
    "link_paths",
    "link_video",
    "link_videos",
    "paired_box_iou",
    "temporal_iou",
    "trim_paths",
    "tube_iou",
    "video_map",
    "video_map_at",
    "voc_ap",
]
