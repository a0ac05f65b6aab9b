"""Detecting actions in videos: score every proposal of every frame, then link tubes (Sec. 5.6).

For each frame t of a video that has proposals, the clip of ``num_frames`` frames
``frame_stride`` apart centred on t (t at position ``num_frames // 2``) goes through the
detector with t's proposals; near the ends of the video the clip is padded by repeating the
first or last frame (as :func:`lgdnet.data.detection_dataset.clip_indices` cuts training
clips, so the model sees the same kind of input). Frames are batched ``batch_size`` clips at
a time and each frame of a batch is decoded once. The softmax over the K + 1 outputs, with
the background column dropped, gives each proposal's K class scores; these are

* linked into tubes by :func:`lgdnet.detection.linking.link_videos` (Saha et al., BMVC 2016:
  Viterbi linking, then temporal trimming), and
* returned as frame detections, one per proposal and class (score: that class's softmax
  probability) for frame-mAP. No non-maximum suppression: proposals come already
  suppressed from their generator, and the linker needs all of them.

Boxes are returned in the coordinates of the proposals (the annotation's resolution).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lgdnet.data import transforms as T
from lgdnet.data.decoding import open_video
from lgdnet.data.detection_dataset import (
    DetectionClipSpec,
    clip_indices,
    read_clip,
    resolve_video_path,
    scale_boxes,
)
from lgdnet.errors import LgdnetError

from .linking import LinkingConfig, link_videos
from .types import FrameDetectionArrays, Tube

log = logging.getLogger(__name__)
Scored = tuple[str, list[np.ndarray], list[np.ndarray]]  # (video, boxes per frame, scores)


def _proposal_boxes(proposals: Mapping[int, np.ndarray], num_frames: int) -> list[np.ndarray]:
    empty = np.zeros((0, 4), np.float32)
    return [np.asarray(proposals.get(t, empty), np.float32).reshape(-1, 5)[:, :4]
            if t in proposals else empty for t in range(1, num_frames + 1)]


@torch.no_grad()
def score_video(
    detector: torch.nn.Module,
    video_path: str | os.PathLike,
    proposals: Mapping[int, np.ndarray],
    *,
    num_classes: int,
    spec: DetectionClipSpec | None = None,
    annotated_size: tuple[int, int] | None = None,
    batch_size: int = 16,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Class scores of every proposal of every frame of one video.

    Args:
        detector: an :class:`~lgdnet.models.detector.LGDDetector` in eval mode.
        video_path: the video file or frame folder.
        proposals: ``{frame: (n, 5) x1, y1, x2, y2, score}`` (frames 1-based).
        num_classes: K.
        spec: clip shape (``num_frames``, ``frame_stride``, ``frame_size``).
        annotated_size: ``(H, W)`` the proposals' pixels refer to (default: the video's).
        batch_size: clips per forward pass.

    Returns:
        Per frame ``1..T``: boxes ``(n_t, 4)`` and scores ``(n_t, K)`` (softmax, background
        dropped); frames without proposals have ``n_t = 0``.
    """
    spec = spec or DetectionClipSpec()
    device = next(detector.parameters()).device
    with open_video(video_path) as source:
        length = source.num_frames
        size = tuple(spec.frame_size) if spec.frame_size else (source.height, source.width)
        annotated = tuple(annotated_size or (source.height, source.width))
        boxes = _proposal_boxes(proposals, length)
        scores = [np.zeros((len(b), num_classes), np.float32) for b in boxes]
        todo = [t for t in range(length) if len(boxes[t])]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            indices = np.stack([clip_indices(t, spec.num_frames, spec.frame_stride, length)
                                for t in chunk])
            needed = np.unique(indices)  # each frame decoded and normalised once
            frames = T.normalize_rgb(read_clip(source, needed.tolist(), size))  # (3, U, H, W)
            video = frames[:, torch.from_numpy(np.searchsorted(needed, indices))]
            video = video.permute(1, 0, 2, 3, 4).contiguous()  # (B, 3, T, H, W)
            rois = torch.cat([torch.cat([torch.full((len(boxes[t]), 1), float(n)),
                                         torch.from_numpy(scale_boxes(boxes[t], annotated, size))],
                                        dim=1) for n, t in enumerate(chunk)])
            logits = detector(video.to(device), rois.to(device)).float()
            probs = torch.softmax(logits, dim=1)[:, 1:].cpu().numpy()
            offsets = np.cumsum([0] + [len(boxes[t]) for t in chunk])
            for n, t in enumerate(chunk):
                scores[t] = probs[offsets[n] : offsets[n + 1]]
    return boxes, scores


def frame_detections(scored: Sequence[Scored]) -> FrameDetectionArrays:
    """Every proposal once per class, scored by that class's probability (frame-mAP's input)."""
    names = tuple(video for video, _, _ in scored)
    parts: list[tuple[np.ndarray, ...]] = []
    for v, (_, boxes, scores) in enumerate(scored):
        for t, (b, s) in enumerate(zip(boxes, scores)):
            if not len(b):
                continue
            n, k = s.shape
            parts.append((np.full(n * k, v), np.full(n * k, t + 1), np.tile(np.arange(k), n),
                          s.reshape(-1), np.repeat(b, k, axis=0)))
    if not parts:
        return FrameDetectionArrays(names, np.zeros(0, np.int64), np.zeros(0, np.int64),
                                    np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4)))
    columns = [np.concatenate(column) for column in zip(*parts)]
    return FrameDetectionArrays(names, *columns)


def _prepare(detector: torch.nn.Module, fold: bool) -> torch.nn.Module:
    if fold:
        from lgdnet.models.fusion import fold_batchnorm

        return fold_batchnorm(detector)  # a folded copy, in eval mode: same outputs, faster
    return detector.eval()


def detect_video(
    detector: torch.nn.Module,
    video_path: str | os.PathLike,
    proposals_for_video: Mapping[int, np.ndarray],
    *,
    video: str | None = None,
    spec: DetectionClipSpec | None = None,
    linking: LinkingConfig | None = None,
    annotated_size: tuple[int, int] | None = None,
    batch_size: int = 16,
    fold: bool = True,
) -> tuple[list[Tube], FrameDetectionArrays]:
    """Tubes and frame detections of one video (see the module docstring).

    Args:
        detector: an :class:`~lgdnet.models.detector.LGDDetector`.
        video_path: the video file or frame folder.
        proposals_for_video: ``{frame: (n, 5)}`` proposals of this video.
        video: the name the tubes carry (default: the path's stem).
        spec: clip shape (:func:`lgdnet.detection.training.clip_spec_from_config`).
        linking: :class:`LinkingConfig` (defaults when None).
        annotated_size: ``(H, W)`` of the proposals' pixels (default: the video's size).
        batch_size: clips per forward pass.
        fold: fold BatchNorm into the convolutions first (a copy; same outputs).

    Returns:
        ``(tubes, frame_detections)``.

    Raises:
        VideoReadError: the video cannot be read.
    """
    name = video or os.path.splitext(os.path.basename(os.fspath(video_path)))[0]
    model = _prepare(detector, fold)
    boxes, scores = score_video(model, video_path, proposals_for_video,
                                num_classes=detector.num_classes, spec=spec,
                                annotated_size=annotated_size, batch_size=batch_size)
    scored = [(name, boxes, scores)]
    return link_videos(scored, linking), frame_detections(scored)


def detect_split(
    detector: torch.nn.Module,
    gt: Any,
    proposals: Mapping[str, Mapping[int, np.ndarray]],
    root: str | os.PathLike,
    split: int = 1,
    *,
    subset: str = "test",
    spec: DetectionClipSpec | None = None,
    linking: LinkingConfig | None = None,
    batch_size: int = 16,
    fold: bool = True,
    progress: bool = True,
) -> tuple[list[Tube], FrameDetectionArrays, list[tuple[str, str]]]:
    """Detect on every ``subset`` video of ``split``, never stopping at one bad video.

    A video that cannot be read (or scored) is skipped with a logged warning naming it; its
    name and reason are returned. Videos without proposals are scored as empty.

    Args:
        detector: an :class:`~lgdnet.models.detector.LGDDetector`.
        gt: the :class:`~lgdnet.data.detection_annotations.DetectionGroundTruth`.
        proposals: ``{video: {frame: (n, 5)}}``.
        root: folder of the videos (:func:`~lgdnet.data.detection_dataset.resolve_video_path`).
        split, subset: which videos.
        spec, linking, batch_size, fold: as :func:`detect_video`.
        progress: a tqdm bar over the videos.

    Returns:
        ``(tubes, frame_detections, skipped)``, ``skipped`` as ``(video, reason)`` pairs.
    """
    from tqdm.auto import tqdm

    model = _prepare(detector, fold)
    scored: list[Scored] = []
    skipped: list[tuple[str, str]] = []
    videos = gt.split_videos(split, subset)
    for video in tqdm(videos, desc=f"detect split {split}", unit="video", disable=not progress,
                      dynamic_ncols=True, leave=False):
        path = resolve_video_path(root, video)
        try:
            boxes, scores = score_video(model, path, proposals.get(video, {}),
                                        num_classes=detector.num_classes, spec=spec,
                                        annotated_size=gt.resolution.get(video),
                                        batch_size=batch_size)
        except (LgdnetError, OSError, ValueError, RuntimeError) as error:
            reason = getattr(error, "reason", None) or f"{type(error).__name__}: {error}"
            log.warning("skipping video %s (%s): %s", video, path, reason)
            skipped.append((video, reason))
            continue
        scored.append((video, boxes, scores))
    return link_videos(scored, linking), frame_detections(scored), skipped


def uniform_detections(
    gt: Any, proposals: Mapping[str, Mapping[int, np.ndarray]], split: int = 1, *,
    score: float | None = None, linking: LinkingConfig | None = None, subset: str = "test",
) -> tuple[list[Tube], FrameDetectionArrays]:
    """The trivial baseline: the same proposals and linker without a classifier. Every class
    gets the same score for a proposal: the proposal's own (objectness) score by default, so
    the linker and the trimming see where the actors are but nothing of what they do; or
    ``score`` for every proposal (``1/K`` gives no tube at all: below 1/2 the trimming labels
    every frame background). Linked and trimmed exactly as the detector's."""
    num_classes = len(gt.labels)
    scored = []
    for video in gt.split_videos(split, subset):
        per_frame = proposals.get(video, {})
        boxes = _proposal_boxes(per_frame, gt.nframes[video])
        scores = []
        for t, b in enumerate(boxes, start=1):
            if score is None and len(b):
                own = np.asarray(per_frame[t], np.float32).reshape(-1, 5)[:, 4]
                scores.append(np.repeat(own[:, None], num_classes, axis=1))
            else:
                scores.append(np.full((len(b), num_classes), 0.0 if score is None else score))
        scored.append((video, boxes, scores))
    return link_videos(scored, linking), frame_detections(scored)
