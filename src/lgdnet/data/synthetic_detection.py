"""The embedded detection dataset: small clips with actor tubes, in the ACT layout (Sec. 5.6).

Every clip shows one or two *actors* (a filled body, disc, triangle, square or hexagon, with a
small disc for a head) and a few static *distractor* shapes on a dim, blotchy, noisy
background. Each actor performs the clip's action only during part of the clip and stands
idle (still, at its first or last pose) before and after, as people in UCF101-24 do, so
the tube must be trimmed in time. Shapes, colours and sizes come from the same distributions
in every class; the class is in the motion, visible over a few frames:

* ``jump``: hops up and down (a few hops); ``sway``: oscillates sideways in place;
* ``walk``: travels steadily sideways; ``pulse``: stays in place and grows and shrinks.

Written as :mod:`lgdnet.data.detection_annotations` reads it, the ACT layout that
``JHMDB-GT.pkl`` uses:

* ``GT.pkl``: labels, tubes (only the frames of the action), nframes, resolution and
  three train/test splits (split k tests the clips whose number is k - 1 modulo 3);
* ``videos/<class>/<class>_NNNN.mp4``, video key ``"<class>/<class>_NNNN"``: MPEG-4 Part 2
  at 25 fps, written by :func:`lgdnet.data.synthetic.write_video`;
* ``proposals.json`` (or ``.npz``): on every frame, each actor's box jittered to an IoU in
  [0.6, 0.9] with score in [0.6, 1], each distractor's box jittered (score in [0.1, 0.6])
  and one or two random boxes away from the actors (IoU < 0.3, score in [0.05, 0.4]).

Conventions: frames are numbered from 1; boxes are ``x1, y1, x2, y2`` in continuous pixel
coordinates with ``(0, 0)`` the top-left corner of the top-left pixel, area
``(x2 - x1) * (y2 - y1)``. A box is the bounding box of the pixels an actor covers at least
half (so its coordinates are integers). Clip ``number`` of class ``kind`` is drawn from
``np.random.default_rng([seed, DETECTION_CLASSES.index(kind), number])``: the same seed writes
the same files byte for byte.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lgdnet.data.detection_annotations import (
    DetectionGroundTruth,
    save_detection_gt,
    save_proposals,
)

# The classification dataset's drawing and encoding helpers: both embedded datasets look alike.
from lgdnet.data.synthetic import _colour, _coverage, _paint, _scale, _unit, write_video

DETECTION_CLASSES = ("jump", "sway", "walk", "pulse")
_BODIES = ("disc", "triangle", "square", "hexagon")
_WHITE = np.array([255.0], dtype=np.float32)


@dataclass(frozen=True)
class DetectionClip:
    """One rendered clip and its annotations.

    Shape:
        frames: uint8 ``(T, H, W, 3)`` RGB; background: float32 ``(H, W, 3)``, the scene
        without actors or noise; actor_boxes: float32 ``(A, T, 4)``, every frame, idle or
        not; distractor_boxes: float32 ``(D, 4)``.
    """

    kind: str
    frames: np.ndarray
    background: np.ndarray
    actor_boxes: np.ndarray
    intervals: list[tuple[int, int]]  # per actor, first and last frame (1-based) of the action
    distractor_boxes: np.ndarray


def _motion(kind: str, rng: np.random.Generator, num_frames: int, scale: float
            ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Offsets (T, 2) from the start position, size factors (T,) and the action's frames.

    Periodic actions last a whole number of cycles, so the idle pose after the action is the
    rest pose (feet down, centred, normal size), as before it.
    """
    length = int(rng.integers(round(0.45 * num_frames), round(0.8 * num_frames) + 1))
    start = int(rng.integers(0, num_frames - length + 1))
    tau = np.clip(np.arange(num_frames) - start, 0, length - 1).astype(np.float64)
    period = (length - 1) / max(1, round((length - 1) / rng.uniform(7, 11)))
    wave = np.sin(2 * math.pi * tau / period)
    offsets, sizes = np.zeros((num_frames, 2)), np.ones(num_frames)
    if kind == "jump":
        offsets[:, 1] = -rng.uniform(9, 15) * scale * np.abs(np.sin(math.pi * tau / period))
    elif kind == "sway":
        offsets[:, 0] = rng.choice([-1, 1]) * rng.uniform(6, 10) * scale * wave
    elif kind == "walk":
        offsets[:, 0] = rng.choice([-1, 1]) * rng.uniform(30, 55) * scale * tau / (length - 1)
    elif kind == "pulse":
        sizes = 1.0 + rng.uniform(0.25, 0.35) * wave
    else:
        choices = ", ".join(DETECTION_CLASSES)
        raise ValueError(f"unknown detection class {kind!r}; choose from {choices}")
    return offsets, sizes, (start + 1, start + length)


def _mask_boxes(alpha: np.ndarray) -> np.ndarray:
    """Bounding boxes of the pixels covered at least half (``alpha`` 0..255).

    Shape:
        alpha: ``(T, H, W)`` -> ``(T, 4)`` x1, y1, x2, y2 (zeros for an empty frame).
    """
    covered = alpha >= 127.5
    cols, rows = covered.any(axis=1), covered.any(axis=2)  # (T, W), (T, H)
    first = lambda m: m.argmax(axis=1)  # noqa: E731
    last = lambda m: m.shape[1] - m[:, ::-1].argmax(axis=1)  # noqa: E731
    boxes = np.stack([first(cols), first(rows), last(cols), last(rows)], axis=1)
    return np.where(cols.any(axis=1)[:, None], boxes, 0).astype(np.float32)


def _overlap(a: np.ndarray, b: np.ndarray, gap: float) -> bool:
    return bool(a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap)


Actor = tuple[np.ndarray, np.ndarray, float, tuple[int, int]]


def _place_actors(kind: str, rng: np.random.Generator, num_frames: int, size: tuple[int, int],
                  two_actor_prob: float) -> tuple[list[Actor], list[np.ndarray]]:
    """Centres (T, 2), size factors (T,), radius and action frames of each actor, and its
    envelope (x1, y1, x2, y2).

    Each actor's envelope (its box over the whole clip, head included) stays inside the frame
    and apart from the other's, so that masks, boxes and pixels never mix.
    """
    height, width = size
    actors, envelopes = [], []
    for _ in range(1 + int(rng.random() < two_actor_prob)):
        offsets, sizes, interval = _motion(kind, rng, num_frames, _scale(height, width))
        radius = rng.uniform(5.5, 9) * _scale(height, width)
        side, up = 1.7 * radius * sizes, 2.2 * radius * sizes  # body half-width, head top
        for _ in range(200):
            centres = np.array([rng.uniform(0, width), rng.uniform(0, height)]) + offsets
            x, y = centres[:, 0], centres[:, 1]
            envelope = np.array([(x - side).min(), (y - up).min(),
                                 (x + side).max(), (y + side).max()])
            inside = (envelope[:2] >= 2).all() and (envelope[2:] <= [width - 2, height - 2]).all()
            if inside and not any(_overlap(envelope, other, 4) for other in envelopes):
                envelopes.append(envelope)
                actors.append((centres, sizes, radius, interval))
                break
    if not actors:
        raise RuntimeError(f"could not place a {kind!r} actor in a {height}x{width} frame")
    return actors, envelopes


def _scenery(rng: np.random.Generator, size: tuple[int, int],
             envelopes: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The background with static distractors (float32 (1, H, W, 3)) and their boxes.

    As in the classification dataset: a dim colour, a gradient, faint blobs; then single
    shapes (no head) away from every actor's envelope.
    """
    height, width = size
    scale = _scale(height, width)
    gx, gy = np.meshgrid(np.arange(width, dtype=np.float32) + 0.5,
                         np.arange(height, dtype=np.float32) + 0.5)
    slope = _unit(rng.uniform(0, 2 * math.pi)) * rng.uniform(0, 30)
    gradient = (gx / width - 0.5) * slope[0] + (gy / height - 0.5) * slope[1]
    background = _colour(rng, (0.0, 0.5), (0.15, 0.45)) + gradient[..., None]
    for _ in range(rng.integers(4, 9)):
        centre, radius = rng.uniform(0, [width, height]), rng.uniform(4, 18) * scale
        blob = _coverage("disc", gx - centre[0], gy - centre[1], radius, 0.0)
        background += blob[..., None] * rng.normal(0, 18, size=3).astype(np.float32)
    background = background.astype(np.float32)[None]
    boxes = []
    for _ in range(rng.integers(2, 5)):
        shape, radius = str(rng.choice(_BODIES + ("ring", "plus"))), rng.uniform(4, 8) * scale
        angle, colour = rng.uniform(0, math.pi), _colour(rng, (0.3, 1.0), (0.5, 1.0))
        centre = np.array([[rng.uniform(10, width - 10), rng.uniform(10, height - 10)]])
        mask = np.zeros((1, height, width, 1), np.float32)
        _paint(mask, shape, centre, radius, angle, _WHITE)
        box = _mask_boxes(mask[..., 0])[0]
        if not any(_overlap(box, envelope, 3) for envelope in envelopes):
            _paint(background, shape, centre, radius, angle, colour)
            boxes.append(box)
    return background, boxes


def render_detection_clip(kind: str, rng: np.random.Generator,
                          num_frames: int | tuple[int, int] = (24, 40),
                          size: tuple[int, int] = (96, 128),
                          two_actor_prob: float = 0.3) -> DetectionClip:
    """Draw one clip of class ``kind`` with its actor boxes.

    Args:
        kind: one of :data:`DETECTION_CLASSES`.
        rng: the clip's generator (everything random is drawn from it).
        num_frames: frames, or an inclusive ``(low, high)`` range to draw from.
        size: ``(H, W)``.
        two_actor_prob: chance of a second actor doing the same action (own interval).

    Returns:
        The frames, the background, boxes of actors and distractors, action intervals.
    """
    if not isinstance(num_frames, int):
        num_frames = int(rng.integers(num_frames[0], num_frames[1] + 1))
    actors, envelopes = _place_actors(kind, rng, num_frames, size, two_actor_prob)
    background, distractor_boxes = _scenery(rng, size, envelopes)
    frames = np.repeat(background, num_frames, axis=0)
    actor_boxes = np.zeros((len(actors), num_frames, 4), np.float32)
    for index, (centres, sizes, radius, _) in enumerate(actors):
        body, angle = str(rng.choice(_BODIES)), rng.uniform(0, math.pi)
        colours = _colour(rng, (0.6, 1.0), (0.7, 1.0)), _colour(rng, (0.6, 1.0), (0.7, 1.0))
        mask = np.zeros((num_frames, *size, 1), np.float32)
        # _paint takes one radius: paint the frames of each size together (one group unless
        # the actor pulses), through copies since fancy indexing does not give views.
        for factor in np.unique(sizes):
            at = np.nonzero(sizes == factor)[0]
            heads = centres[at] - np.array([0.0, 1.55 * radius * factor])
            for target, body_colour, head_colour in ((frames, *colours), (mask, _WHITE, _WHITE)):
                group = target[at]
                _paint(group, body, centres[at], radius * factor, angle, body_colour)
                _paint(group, "disc", heads, 0.5 * radius * factor, 0.0, head_colour)
                target[at] = group
        actor_boxes[index] = _mask_boxes(mask[..., 0])
    # Sensor noise, fresh in every frame (luminance only, as in the classification dataset).
    noise = rng.standard_normal(size=(num_frames, *size, 1), dtype=np.float32)
    frames += noise * np.float32(rng.uniform(3, 6)) + np.float32(0.5)
    frames = np.clip(frames, 0, 255, out=frames).astype(np.uint8)
    return DetectionClip(kind, frames, background[0], actor_boxes, [a[3] for a in actors],
                         np.array(distractor_boxes, np.float32).reshape(-1, 4))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes broadcast against each other: ``(..., 4)`` and ``(..., 4)`` -> ``(...)``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return w * h / np.maximum(area_a + area_b - w * h, 1e-9)


def _jitter(rng: np.random.Generator, boxes: np.ndarray, iou_range: tuple[float, float],
            size: tuple[int, int]) -> np.ndarray:
    """Boxes near ``boxes`` (N, 4), inside the frame, each with an IoU in ``iou_range``."""
    wh, centre = boxes[:, 2:] - boxes[:, :2], (boxes[:, :2] + boxes[:, 2:]) / 2
    centres = centre[:, None] + rng.normal(0, 0.12, size=(len(boxes), 32, 2)) * wh[:, None]
    half = wh[:, None] / 2 * np.exp(rng.normal(0, 0.15, size=(len(boxes), 32, 2)))
    candidates = np.clip(np.concatenate([centres - half, centres + half], axis=2), 0,
                         [size[1], size[0], size[1], size[0]])
    iou = _iou(candidates, boxes[:, None])
    good = (iou >= iou_range[0]) & (iou <= iou_range[1])
    chosen = candidates[np.arange(len(boxes)), good.argmax(axis=1)]
    # Rarely none of the 32 fits: a centred box holding the middle IoU's share of the area does.
    shrink = math.sqrt(sum(iou_range) / 2)
    fallback = np.concatenate([centre - wh / 2 * shrink, centre + wh / 2 * shrink], axis=1)
    return np.where(good.any(axis=1)[:, None], chosen, fallback).astype(np.float32)


def clip_proposals(clip: DetectionClip, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Proposals of every frame of ``clip`` (see the module docstring), best score first.

    Returns:
        ``{frame: boxes}``, frames 1-based, boxes float32 ``(n, 5)`` x1, y1, x2, y2, score.
    """
    size, actors = clip.frames.shape[1:3], clip.actor_boxes  # (A, T, 4)
    num_actors, num_frames = actors.shape[:2]
    actor = _jitter(rng, actors.reshape(-1, 4), (0.6, 0.9), size).reshape(actors.shape)
    actor_scores = rng.uniform(0.6, 1.0, size=(num_actors, num_frames, 1))
    still = np.repeat(clip.distractor_boxes[:, None], num_frames, axis=1).reshape(-1, 4)
    distractor = _jitter(rng, still, (0.5, 0.9), size).reshape(-1, num_frames, 4)
    distractor_scores = rng.uniform(0.1, 0.6, size=(len(distractor), num_frames, 1))
    # One or two random boxes a frame, each the first of 50 draws that keeps off the actors.
    wh = rng.uniform(8, 30, size=(num_frames, 2, 50, 2))
    corner = rng.uniform(0, 1, size=wh.shape) * (np.array([size[1], size[0]]) - wh)
    candidates = np.concatenate([corner, corner + wh], axis=3)
    by_frame = actors.transpose(1, 0, 2)[:, None, None]  # (T, 1, 1, A, 4)
    away = _iou(candidates[..., None, :], by_frame).max(axis=3) < 0.3
    chosen = np.take_along_axis(candidates, away.argmax(axis=2)[..., None, None], axis=2)[:, :, 0]
    wanted = np.arange(2) < rng.integers(1, 3, size=(num_frames, 1))
    random_scores = rng.uniform(0.05, 0.4, size=(num_frames, 2, 1))
    use = away.any(axis=2) & wanted
    proposals = {}
    for t in range(num_frames):
        boxes = np.concatenate([np.concatenate([actor[:, t], actor_scores[:, t]], axis=1),
                                np.concatenate([distractor[:, t], distractor_scores[:, t]], axis=1),
                                np.concatenate([chosen[t], random_scores[t]], axis=1)[use[t]]])
        boxes = boxes.astype(np.float32)
        proposals[t + 1] = boxes[np.argsort(-boxes[:, 4], kind="stable")]
    return proposals


def write_detection_dataset(
    out_dir: str | os.PathLike,
    videos_per_class: int = 12,
    seed: int = 0,
    num_frames: tuple[int, int] = (24, 40),
    size: tuple[int, int] = (96, 128),
    classes: list[str] | None = None,
    two_actor_prob: float = 0.3,
    num_splits: int = 3,
    fps: int = 25,
    proposals_format: str = "json",
) -> Path:
    """Write the embedded detection dataset (layout in the module docstring).

    Args:
        out_dir: dataset folder (created).
        videos_per_class: clips per class (at least 3, so every split tests some).
        seed: every clip is a function of ``(seed, class, clip number)``.
        num_frames: inclusive range of clip lengths.
        size: ``(H, W)``, both even (4:2:0 chroma).
        classes: a subset of :data:`DETECTION_CLASSES` (default all), in label order.
        two_actor_prob: chance that a clip has a second actor.
        num_splits: train/test splits written (split k tests clips numbered k - 1 mod
            ``max(3, num_splits)``).
        fps: frame rate of the videos.
        proposals_format: ``"json"`` or ``"npz"`` (``proposals.<format>``).

    Returns:
        The path of ``GT.pkl``.
    """
    classes = list(classes) if classes is not None else list(DETECTION_CLASSES)
    if not set(classes) <= set(DETECTION_CLASSES) or not 0 < len(set(classes)) == len(classes):
        choices = ", ".join(DETECTION_CLASSES)
        raise ValueError(f"classes must be distinct names from {choices}, got {classes}")
    if size[0] % 2 or size[1] % 2 or min(size) < 48:
        raise ValueError(f"size must be even and at least 48x48, got {size}")
    folds = max(3, num_splits)  # about a third of the clips tested, as in J-HMDB's splits
    if videos_per_class < folds or num_splits < 1 or proposals_format not in ("json", "npz"):
        raise ValueError(f"need videos_per_class >= {folds}, num_splits >= 1 and "
                         f"proposals_format 'json' or 'npz'")
    out = Path(out_dir)
    tubes, nframes, resolution, proposals, folds_of = {}, {}, {}, {}, {}
    for label, kind in enumerate(classes):
        (out / "videos" / kind).mkdir(parents=True, exist_ok=True)
        for number in range(videos_per_class):
            video = f"{kind}/{kind}_{number:04d}"
            rng = np.random.default_rng([seed, DETECTION_CLASSES.index(kind), number])
            clip = render_detection_clip(kind, rng, num_frames, size, two_actor_prob)
            write_video(out / "videos" / f"{video}.mp4", clip.frames, fps)
            frames = np.arange(1, clip.frames.shape[0] + 1, dtype=np.float32)[:, None]
            # The tube is the action only: idle frames before and after are not in it.
            tubes[video] = {label: [np.concatenate([frames, boxes], axis=1)[first - 1 : last]
                                    for boxes, (first, last) in zip(clip.actor_boxes,
                                                                    clip.intervals)]}
            nframes[video], resolution[video] = clip.frames.shape[0], tuple(size)
            proposals[video] = clip_proposals(clip, rng)
            folds_of[video] = number % folds
    splits = range(num_splits)
    gt = DetectionGroundTruth(classes, tubes, nframes, resolution,
                              train_videos=[[v for v in tubes if folds_of[v] != k] for k in splits],
                              test_videos=[[v for v in tubes if folds_of[v] == k] for k in splits])
    save_detection_gt(gt, out / "GT.pkl")
    save_proposals(proposals, out / f"proposals.{proposals_format}")
    return out / "GT.pkl"
