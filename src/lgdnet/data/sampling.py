"""Which frames a training clip or a test view takes (Sec. 4.1, 4.2, 5.2).

Two schemes:

- ``"clip"`` (LGD-3D, Sec. 4.2): ``num_frames`` consecutive frames (every ``frame_stride``-th)
  starting at a random position in training; at test time ``num_test_views`` clips (15 in
  the paper) placed uniformly from the first frame to the last.
- ``"segments"`` (LGD-2D, Sec. 4.1, after TSN): the video is split into ``num_frames`` (T)
  equal segments; training takes one random frame in each, testing takes ``num_test_views``
  (10 in the paper) frame tuples, view ``v`` taking the point ``(v + 0.5) / V`` of the way
  through every segment.

Videos shorter than a clip are **looped** (``pad="loop"``: index ``i`` reads frame
``i mod n``, so motion continues across the wrap) or padded with their last frame
(``pad="repeat_last"``).

Randomness comes from a ``numpy.random.Generator`` seeded from ``(seed, epoch, index)``
alone (:func:`sample_rng`), so a sample is the same whatever worker, process or machine
draws it, and each epoch draws differently.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from lgdnet.errors import ConfigError

__all__ = [
    "SamplingSpec",
    "sample_rng",
    "sample_train_indices",
    "sample_test_indices",
    "expand_snippets",
    "segment_edges",
]

Scheme = Literal["clip", "segments"]
Pad = Literal["loop", "repeat_last"]


@dataclass(frozen=True)
class SamplingSpec:
    """How frames are sampled and sized, for training and for testing.

    Args:
        scheme: ``"clip"`` (LGD-3D: consecutive frames) or ``"segments"`` (LGD-2D: one frame
            per segment).
        num_frames: frames per clip (3D: 16, or 128 for the long variant) or segments T (2D).
        frame_stride: step between the frames of a clip (``"clip"`` only).
        num_test_views: clips (3D: 15) or frame tuples (2D: 10) per video at test time.
        train_resize: ``(height, width)`` frames are resized to before the random crop.
        crop_size: side of the square training crop.
        test_short_side: test frames are resized so that their shorter side is this.
        test_crops: 1 (the whole frame, fully convolutional inference) or 3 (three squares
            of side ``test_short_side`` along the longer side).
        flow_stack: consecutive optical-flow frames per segment (flow modality, 2D).
        pad: how a video shorter than a clip is extended, ``"loop"`` or ``"repeat_last"``.
        horizontal_flip: random horizontal flips in training (Sec. 5.2). Turn it off for
            classes that a mirror image turns into one another (e.g. clockwise and
            counter-clockwise motion).
    """

    scheme: Scheme
    num_frames: int
    frame_stride: int = 1
    num_test_views: int = 1
    train_resize: tuple[int, int] = (120, 160)
    crop_size: int = 112
    test_short_side: int = 120
    test_crops: int = 1
    flow_stack: int = 5
    pad: Pad = "loop"
    horizontal_flip: bool = True

    def __post_init__(self) -> None:
        if self.scheme not in ("clip", "segments"):
            raise ConfigError(f"scheme must be 'clip' or 'segments', got {self.scheme!r}")
        if self.pad not in ("loop", "repeat_last"):
            raise ConfigError(f"pad must be 'loop' or 'repeat_last', got {self.pad!r}")
        if self.test_crops not in (1, 3):
            raise ConfigError(f"test_crops must be 1 or 3, got {self.test_crops}")
        for name in ("num_frames", "frame_stride", "num_test_views", "crop_size",
                     "test_short_side", "flow_stack"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        object.__setattr__(self, "train_resize", tuple(int(v) for v in self.train_resize))
        if len(self.train_resize) != 2:
            raise ConfigError(f"train_resize must be (height, width), got {self.train_resize}")
        if self.crop_size > min(self.train_resize):
            raise ConfigError(
                f"crop_size {self.crop_size} exceeds train_resize {self.train_resize}"
            )

    @classmethod
    def for_3d(cls, **overrides: Any) -> SamplingSpec:
        """LGD-3D (Sec. 4.2, 5.2): 16 consecutive frames, 120x160 -> random 112x112 crop;
        test on 15 uniformly spaced clips with the shorter side 120, whole frame."""
        values: dict[str, Any] = dict(
            scheme="clip", num_frames=16, frame_stride=1, num_test_views=15,
            train_resize=(120, 160), crop_size=112, test_short_side=120, test_crops=1,
        )
        return cls(**{**values, **overrides})

    @classmethod
    def for_2d(cls, **overrides: Any) -> SamplingSpec:
        """LGD-2D (Sec. 4.1, 5.2): T=3 segments, 240x320 -> random 224x224 crop; test on 10
        uniformly sampled frame triples with the shorter side 240, whole frame."""
        values: dict[str, Any] = dict(
            scheme="segments", num_frames=3, frame_stride=1, num_test_views=10,
            train_resize=(240, 320), crop_size=224, test_short_side=240, test_crops=1,
        )
        return cls(**{**values, **overrides})

    def replace(self, **changes: Any) -> SamplingSpec:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @property
    def clip_span(self) -> int:
        """Frames a ``"clip"`` covers from its first to its last frame."""
        return (self.num_frames - 1) * self.frame_stride + 1


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one sample: a function of ``(seed, epoch, index)`` only.

    Using the sample index rather than the worker's state makes results identical for any
    number of data-loader workers and any sharding by ``DistributedSampler``.
    """
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def _pad(indices: np.ndarray, num_frames: int, pad: str) -> np.ndarray:
    """Map indices past the end of a short video back into it (loop or repeat the last)."""
    if pad == "loop":
        return indices % num_frames
    return np.minimum(indices, num_frames - 1)


def segment_edges(num_frames: int, num_segments: int) -> np.ndarray:
    """Float boundaries of ``num_segments`` equal segments of ``[0, num_frames)``."""
    return np.linspace(0.0, float(num_frames), num_segments + 1)


def sample_train_indices(
    spec: SamplingSpec, num_frames: int, rng: np.random.Generator
) -> np.ndarray:
    """Frame indices of one training sample.

    Args:
        spec: the sampling scheme.
        num_frames: frames in the video (or start positions available, see
            :func:`expand_snippets`).
        rng: the sample's generator (:func:`sample_rng`).

    Returns:
        ``int64`` indices in ``[0, num_frames)``.

    Shape:
        ``(spec.num_frames,)``.
    """
    num_frames = max(int(num_frames), 1)
    if spec.scheme == "clip":
        # Sec. 4.2 / 5.2: consecutive frames at a random position.
        offsets = np.arange(spec.num_frames, dtype=np.int64) * spec.frame_stride
        room = num_frames - spec.clip_span
        start = int(rng.integers(0, room + 1)) if room > 0 else 0
        return _pad(start + offsets, num_frames, spec.pad)
    # Sec. 4.1 (TSN): one random frame in each of T equal segments.
    edges = segment_edges(num_frames, spec.num_frames)
    low = np.floor(edges[:-1]).astype(np.int64)
    high = np.maximum(np.floor(edges[1:]).astype(np.int64), low + 1)  # >= 1 frame each
    return np.minimum(rng.integers(low, high), num_frames - 1)


def sample_test_indices(spec: SamplingSpec, num_frames: int) -> np.ndarray:
    """Frame indices of the test views of one video (deterministic).

    ``"clip"``: ``num_test_views`` clips whose starts are spread evenly from the first frame
    to the last possible start (Sec. 5.2: 15 uniformly sampled 16-frame clips).
    ``"segments"``: view ``v`` takes the point ``(v + 0.5) / V`` of every segment (Sec. 5.2:
    10 uniformly sampled triples).

    Returns:
        ``int64`` indices in ``[0, num_frames)``.

    Shape:
        ``(spec.num_test_views, spec.num_frames)``.
    """
    num_frames = max(int(num_frames), 1)
    views = spec.num_test_views
    if spec.scheme == "clip":
        offsets = np.arange(spec.num_frames, dtype=np.int64) * spec.frame_stride
        last_start = max(num_frames - spec.clip_span, 0)
        starts = np.rint(np.linspace(0, last_start, views)).astype(np.int64)
        return _pad(starts[:, None] + offsets[None, :], num_frames, spec.pad)
    edges = segment_edges(num_frames, spec.num_frames)
    fractions = (np.arange(views) + 0.5) / views
    points = edges[None, :-1] + fractions[:, None] * np.diff(edges)[None, :]
    return np.minimum(np.floor(points).astype(np.int64), num_frames - 1)


def expand_snippets(starts: np.ndarray, length: int, num_frames: int, pad: str) -> np.ndarray:
    """Turn snippet starts into ``length`` consecutive indices each (stacked optical flow).

    Args:
        starts: snippet start indices, any shape ``S``.
        length: frames per snippet (``spec.flow_stack``).
        num_frames: frames in the video.
        pad: ``"loop"`` or ``"repeat_last"`` for snippets running past the end.

    Returns:
        Indices of shape ``S + (length,)``.
    """
    indices = np.asarray(starts, dtype=np.int64)[..., None] + np.arange(length, dtype=np.int64)
    return _pad(indices, max(int(num_frames), 1), pad)
