"""Training clips for the action detector of Sec. 5.6: key frames, their proposals, labels.

An item is one clip of ``num_frames`` frames ``frame_stride`` apart centred on a *key frame*
of a training video (frame t is at position ``num_frames // 2``; indices before the first or
past the last frame repeat the edge frame, as :mod:`lgdnet.detection.inference` pads), and the
key frame's proposals as regions of interest with their labels:

* **Labels** (Fast R-CNN, Girshick 2015): a proposal whose best IoU with a ground-truth box
  of the key frame is ``>= fg_iou`` (0.5) takes that box's class index + 1; every other
  proposal is background, 0. The key frame's ground-truth boxes are added to the proposals
  (IoU 1 with themselves), as Fast R-CNN does, so every annotated frame has positives.
* **Sampling**: at most ``rois_per_clip`` regions per clip. Positives are drawn first, up to
  ``ceil(fg_fraction * rois_per_clip)`` (Fast R-CNN: 25% of 128), then background up to the
  limit; slots that background cannot fill go to more positives. So whenever a key frame has
  positives the sample holds ``min(#positives, ceil(fg_fraction * rois_per_clip))`` of them at
  least; a frame with few proposals (the embedded data has about six) keeps them all.
* **Key frames**: the frames with a ground-truth box (``frames="annotated"``, as detectors are
  trained on J-HMDB and UCF101-24), or every frame (``frames="all"``: frames outside the
  tubes give background-only samples, which teaches the temporal trimming of untrimmed
  videos what an idle actor looks like). Frames without any box are never key frames. The
  key frames of a video are grouped ``frame_step`` at a time; item k draws its key frame
  from group k, a new one each epoch (neighbouring frames are nearly the same clip).
* **Space**: the whole frame (proposals lie anywhere) resized to ``frame_size`` (``None``:
  kept), boxes scaled from the annotation resolution to the clip's pixels; a horizontal flip
  with probability 1/2 mirrors frames and boxes. Normalised as in training classification
  (:func:`lgdnet.data.transforms.normalize_rgb`).

Randomness (key frame, sampling, flip) depends on ``(seed, epoch, index)`` only
(:func:`~lgdnet.data.sampling.sample_rng`). Videos are found by :func:`resolve_video_path`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lgdnet.data import transforms as T
from lgdnet.data.decoding import open_video
from lgdnet.data.detection_annotations import DetectionGroundTruth, Proposals
from lgdnet.data.sampling import sample_rng
from lgdnet.errors import VideoReadError

__all__ = ["DetectionClipSpec", "DetectionClipDataset", "collate_detection", "clip_indices",
           "label_proposals", "sample_rois", "gt_boxes_at", "resolve_video_path", "pairwise_iou"]

logger = logging.getLogger(__name__)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov")
_SAMPLE_ERRORS = (VideoReadError, OSError, ValueError, RuntimeError, IndexError, EOFError)


@dataclass(frozen=True)
class DetectionClipSpec:
    """How detection clips are cut and their regions sampled (see the module docstring)."""

    num_frames: int = 8
    frame_stride: int = 2
    frame_size: tuple[int, int] | None = None  # (H, W) of the whole resized frame
    horizontal_flip: bool = True
    rois_per_clip: int = 32
    fg_fraction: float = 0.25
    fg_iou: float = 0.5
    frames: str = "annotated"  # or "all"
    frame_step: int = 1

    def __post_init__(self) -> None:
        if self.frames not in ("annotated", "all"):
            raise ValueError(f"frames must be 'annotated' or 'all', got {self.frames!r}")
        if min(self.num_frames, self.frame_stride, self.rois_per_clip, self.frame_step) < 1:
            raise ValueError("num_frames, frame_stride, rois_per_clip, frame_step must be >= 1")
        if not 0.0 <= self.fg_fraction <= 1.0 or not 0.0 < self.fg_iou <= 1.0:
            raise ValueError("fg_fraction must be in [0, 1] and fg_iou in (0, 1]")


def clip_indices(centre: int, num_frames: int, stride: int, length: int) -> np.ndarray:
    """0-based frame indices of the clip centred on index ``centre``: ``centre + stride * (k -
    num_frames // 2)``, ``k = 0..num_frames-1``, clamped to ``[0, length - 1]`` (edge frames
    repeated)."""
    offsets = stride * (np.arange(num_frames) - num_frames // 2)
    return np.clip(centre + offsets, 0, max(length - 1, 0)).astype(np.int64)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``(n, 4)`` and ``(m, 4)`` boxes ``x1, y1, x2, y2`` -> ``(n, m)`` (area without +1)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    union = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
             + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - w * h)
    return w * h / np.maximum(union, 1e-9)


def label_proposals(boxes: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray,
                    fg_iou: float = 0.5) -> np.ndarray:
    """ROI labels: the best-overlapping ground truth's class + 1 if its IoU ``>= fg_iou``,
    else 0 (background).

    Shape:
        ``boxes (n, 4)``, ``gt_boxes (m, 4)``, ``gt_labels (m,)`` -> ``(n,)`` int64.
    """
    labels = np.zeros(len(boxes), np.int64)
    if len(boxes) and len(gt_boxes):
        iou = pairwise_iou(boxes, gt_boxes)
        best = iou.argmax(axis=1)
        positive = iou[np.arange(len(boxes)), best] >= fg_iou
        labels[positive] = np.asarray(gt_labels, np.int64)[best[positive]] + 1
    return labels


def sample_rois(labels: np.ndarray, rois_per_clip: int, fg_fraction: float,
                rng: np.random.Generator) -> np.ndarray:
    """Indices (sorted) of at most ``rois_per_clip`` regions: up to ``ceil(fg_fraction *
    rois_per_clip)`` positives, background up to the limit, leftover slots to positives."""
    positives = rng.permutation(np.flatnonzero(labels > 0))
    negatives = rng.permutation(np.flatnonzero(labels == 0))
    num_pos = min(len(positives), math.ceil(fg_fraction * rois_per_clip))
    num_neg = min(len(negatives), rois_per_clip - num_pos)
    num_pos = min(len(positives), rois_per_clip - num_neg)
    return np.sort(np.concatenate([positives[:num_pos], negatives[:num_neg]]))


def gt_boxes_at(gt: DetectionGroundTruth, video: str, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth boxes ``(m, 4)`` and class indices ``(m,)`` of 1-based ``frame``."""
    boxes, labels = [], []
    for label, tubes in gt.tubes.get(video, {}).items():
        for tube in tubes:
            rows = tube[tube[:, 0] == frame]
            boxes += [row[1:5] for row in rows]
            labels += [label] * len(rows)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


def resolve_video_path(root: str | os.PathLike, video: str) -> Path:
    """The file (``root/video`` + one of :data:`VIDEO_SUFFIXES`) or frame folder
    (``root/video/``) of a ground-truth video name; ``root/video.mp4`` when none exists (so the
    read error names a plausible file)."""
    base = Path(root) / video
    if base.is_dir() or base.is_file():
        return base
    for suffix in VIDEO_SUFFIXES:
        if base.with_name(base.name + suffix).is_file():
            return base.with_name(base.name + suffix)
    return base.with_name(base.name + ".mp4")


def scale_boxes(boxes: np.ndarray, source_size: tuple[int, int],
                size: tuple[int, int]) -> np.ndarray:
    """Boxes from pixels of a ``source_size`` ``(H, W)`` frame to pixels of a ``size`` one."""
    sx, sy = size[1] / source_size[1], size[0] / source_size[0]
    return (np.asarray(boxes, np.float32).reshape(-1, 4) * np.float32([sx, sy, sx, sy]))


def read_clip(source: Any, indices: Sequence[int], size: tuple[int, int]) -> torch.Tensor:
    """Decode frames resized to ``size`` (during decoding when the source can) as ``uint8``
    ``(T, H, W, 3)``."""
    try:
        frames = source.get_frames(list(indices), size=size)
    except TypeError:  # a source without resizing while decoding
        frames = source.get_frames(list(indices))
    return T.resize_frames(frames, size)


class DetectionClipDataset(Dataset):
    """Key-frame clips of one subset of one split, with labelled, sampled proposals.

    Args:
        gt: the ground truth (:func:`~lgdnet.data.detection_annotations.load_detection_gt`).
        proposals: ``{video: {frame: (n, 5)}}`` (:func:`load_proposals`).
        root: folder of the videos (see :func:`resolve_video_path`).
        split: 1-based split; subset: ``"train"`` (or ``"test"``).
        spec: :class:`DetectionClipSpec`.
        seed: base seed.
        on_error: ``"skip"`` (a video that cannot be read gives ``None``, logged once and
            recorded in :attr:`bad_files`; :func:`collate_detection` drops it) or ``"raise"``.

    Items: ``{"video": float32 (3, T, H, W), "rois": float32 (R, 4), "label": int64 (R,),
    "index": int, "video_id": str, "frame": int}``, R >= 1.
    """

    def __init__(self, gt: DetectionGroundTruth, proposals: Proposals, root: str | os.PathLike,
                 *, split: int = 1, subset: str = "train",
                 spec: DetectionClipSpec | None = None, seed: int = 0,
                 on_error: str = "skip") -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.gt, self.proposals, self.root = gt, proposals, Path(root)
        self.spec = spec or DetectionClipSpec()
        self.seed, self.epoch, self.on_error = int(seed), 0, on_error
        self.bad_files: list[tuple[str, str]] = []
        self._bad: set[str] = set()
        self.items: list[tuple[str, np.ndarray]] = []
        step = self.spec.frame_step
        for video in gt.split_videos(split, subset):
            frames = self._key_frames(video)
            self.items += [(video, frames[k : k + step]) for k in range(0, len(frames), step)]

    def _key_frames(self, video: str) -> np.ndarray:
        annotated = {int(row[0]) for tubes in self.gt.tubes.get(video, {}).values()
                     for tube in tubes for row in tube}
        with_boxes = {f for f, boxes in self.proposals.get(video, {}).items() if len(boxes)}
        if self.spec.frames == "annotated":
            frames = annotated
        else:
            frames = set(range(1, self.gt.nframes[video] + 1)) & (annotated | with_boxes)
        return np.array(sorted(frames), np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Draw other key frames, samples and flips (reproducibly) in each epoch."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        video = self.items[index][0]
        path = resolve_video_path(self.root, video)
        if video in self._bad and self.on_error == "skip":
            return None
        try:
            return self._load(index, path)
        except _SAMPLE_ERRORS as error:
            if self.on_error == "raise":
                raise
            reason = error.reason if isinstance(error, VideoReadError) else (
                f"{type(error).__name__}: {error}")
            self._bad.add(video)
            self.bad_files.append((os.fspath(path), reason))
            logger.warning("skipping video %s (%s): %s", video, path, reason)
            return None

    def _load(self, index: int, path: Path) -> dict[str, Any]:
        spec = self.spec
        video, candidates = self.items[index]
        rng = sample_rng(self.seed, self.epoch, index)
        frame = int(candidates[rng.integers(len(candidates))])
        with open_video(path, num_threads=1) as source:
            indices = clip_indices(frame - 1, spec.num_frames, spec.frame_stride,
                                   source.num_frames)
            size = tuple(spec.frame_size) if spec.frame_size else (source.height, source.width)
            frames = read_clip(source, indices, size)
            annotated_size = self.gt.resolution.get(video, (source.height, source.width))
        gt_boxes, gt_labels = gt_boxes_at(self.gt, video, frame)
        proposals = self.proposals.get(video, {}).get(frame, np.zeros((0, 5), np.float32))
        pool = np.concatenate([np.asarray(proposals, np.float32)[:, :4], gt_boxes])
        labels = label_proposals(pool, gt_boxes, gt_labels, spec.fg_iou)
        keep = sample_rois(labels, spec.rois_per_clip, spec.fg_fraction, rng)
        boxes = scale_boxes(pool[keep], annotated_size, size)
        if spec.horizontal_flip and rng.random() < 0.5:
            frames = T.flip_horizontal(frames)
            boxes = np.stack([size[1] - boxes[:, 2], boxes[:, 1], size[1] - boxes[:, 0],
                              boxes[:, 3]], axis=1)
        return {"video": T.normalize_rgb(frames), "rois": torch.from_numpy(boxes.copy()),
                "label": torch.from_numpy(labels[keep]), "index": index, "video_id": video,
                "frame": frame}


def collate_detection(items: Sequence[dict[str, Any] | None]) -> dict[str, torch.Tensor] | None:
    """Batch detection items, leaving out ``None`` (unreadable videos); ``None`` if all are.

    Returns:
        ``{"video": (N, 3, T, H, W), "rois": (K, 5) rows (n, x1, y1, x2, y2), "label": (K,),
        "index": (N,)}``.
    """
    items = [item for item in items if item is not None]
    if not items:
        return None
    rois = [torch.cat([torch.full((len(item["rois"]), 1), float(n)), item["rois"]], dim=1)
            for n, item in enumerate(items)]
    return {"video": torch.stack([item["video"] for item in items]),
            "rois": torch.cat(rois), "label": torch.cat([item["label"] for item in items]),
            "index": torch.tensor([int(item["index"]) for item in items])}
