"""Frame detections, tubes and ground-truth tubes shared by the linker and the metrics.

Conventions (the UCF101-24 / J-HMDB protocol of Saha et al. 2016 and Kalogeiton et al. 2017):

- frames are numbered from **1** (the first frame of a video is frame 1);
- a box is ``x1, y1, x2, y2`` in pixels, continuous coordinates (see :mod:`.boxes`);
- a tube is a ``(n, 5)`` float array of rows ``frame, x1, y1, x2, y2``, one row per frame, the
  frames contiguous and increasing (``f, f + 1, ..., f + n - 1``);
- labels are class indices ``0 .. K-1`` (background excluded).

Every check raises :class:`lgdnet.errors.DetectionDataError` with the video in the message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lgdnet.errors import DetectionDataError

# Per video, per label index, the ground-truth tubes of that class, each a (n, 5) array.
GroundTruthTubes = Mapping[str, Mapping[int, Sequence[np.ndarray]]]


def check_boxes(video: str, boxes: np.ndarray, what: str = "box", number_rows: bool = True) -> None:
    """Raise unless every row of ``boxes`` (``(n, 4)``) is finite with x2 >= x1 and y2 >= y1.

    The message names the video, ``what`` and (with ``number_rows``) the bad row's index.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DetectionDataError(f"video {video!r}: {what} array must be (n, 4), got {boxes.shape}")
    bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        where = f"{what} {row}" if number_rows else what
        raise DetectionDataError(
            f"video {video!r}: {where} is {boxes[row].tolist()}, need finite x1 <= x2 and y1 <= y2"
        )


def check_tube(video: str, boxes: np.ndarray, what: str = "tube") -> np.ndarray:
    """Validate a tube array (``(n, 5)``, n >= 1, contiguous increasing frames >= 1).

    Returns:
        The tube as a float64 array (a copy only when the input was not already one).
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 5 or boxes.shape[0] == 0:
        raise DetectionDataError(
            f"video {video!r}: {what} must be a non-empty (n, 5) array of frame, x1, y1, x2, y2; "
            f"got shape {boxes.shape}"
        )
    frames = boxes[:, 0]
    if not np.isfinite(frames[0]) or frames[0] < 1 or frames[0] != np.round(frames[0]):
        raise DetectionDataError(f"video {video!r}: {what} starts at frame {frames[0]}, "
                                 "need an integer >= 1 (frames are 1-based)")
    steps = np.diff(frames)
    if (steps != 1).any():
        at = int(np.flatnonzero(steps != 1)[0])
        raise DetectionDataError(
            f"video {video!r}: {what} frames must be contiguous and increasing, got frame "
            f"{frames[at + 1]:g} after frame {frames[at]:g}"
        )
    check_boxes(video, boxes[:, 1:], f"{what} box")
    return boxes


def check_label(video: str, label: int, num_classes: int | None, what: str = "label") -> int:
    """Raise unless ``label`` is an integer in ``[0, num_classes)`` (``[0, inf)`` when None)."""
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise DetectionDataError(f"video {video!r}: {what} {label!r} is not an integer")
    if label < 0 or (num_classes is not None and label >= num_classes):
        limit = "" if num_classes is None else f" < {num_classes}"
        raise DetectionDataError(f"video {video!r}: {what} {label} is out of range (need 0 <= "
                                 f"label{limit})")
    return int(label)


def check_score(video: str, score: float, what: str = "score") -> float:
    """Raise when ``score`` is NaN (it could not be ranked); return it as a float."""
    if np.isnan(score):
        raise DetectionDataError(f"video {video!r}: {what} is NaN")
    return float(score)


@dataclass(frozen=True, eq=False)
class FrameDetection:
    """One detected box of one class in one frame (the input of frame-mAP).

    Args:
        video: video name.
        frame: 1-based frame number.
        label: class index.
        score: detection score (higher is more confident).
        box: ``(4,)`` ``x1, y1, x2, y2`` in pixels.
    """

    video: str
    frame: int
    label: int
    score: float
    box: np.ndarray

    def __post_init__(self) -> None:
        box = np.asarray(self.box, dtype=np.float64).reshape(-1)
        if box.shape != (4,):
            raise DetectionDataError(f"video {self.video!r}: a box needs 4 numbers, got {box.size}")
        check_boxes(self.video, box[None], f"box at frame {self.frame}", number_rows=False)
        if int(self.frame) != self.frame or self.frame < 1:
            raise DetectionDataError(f"video {self.video!r}: frame {self.frame} is not a 1-based "
                                     "frame number")
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "frame", int(self.frame))
        object.__setattr__(self, "label", check_label(self.video, self.label, None))
        object.__setattr__(self, "score", check_score(self.video, self.score))


@dataclass(frozen=True, eq=False)
class Tube:
    """A predicted action tube (the input of video-mAP, the output of the linker).

    Args:
        video: video name.
        label: class index.
        score: tube score (higher is more confident).
        boxes: ``(n, 5)`` float rows ``frame, x1, y1, x2, y2``, frames contiguous, 1-based.
    """

    video: str
    label: int
    score: float
    boxes: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes", check_tube(self.video, self.boxes))
        object.__setattr__(self, "label", check_label(self.video, self.label, None))
        object.__setattr__(self, "score", check_score(self.video, self.score, "tube score"))

    @property
    def start(self) -> int:
        """First frame (1-based, inclusive)."""
        return int(self.boxes[0, 0])

    @property
    def end(self) -> int:
        """Last frame (1-based, inclusive)."""
        return int(self.boxes[-1, 0])


@dataclass(frozen=True, eq=False)
class FrameDetectionArrays:
    """Many frame detections as columns: the form :func:`.frame_map` works on.

    A test set scored for every class is tens of millions of detections; one Python object each
    would not fit, so videos are stored once (``video_names``) and referred to by index.

    Args:
        video_names: the videos, each once.
        video_index: ``(N,)`` index into ``video_names`` of every detection.
        frames: ``(N,)`` 1-based frame numbers.
        labels: ``(N,)`` class indices.
        scores: ``(N,)`` scores.
        boxes: ``(N, 4)`` ``x1, y1, x2, y2`` in pixels.
    """

    video_names: tuple[str, ...]
    video_index: np.ndarray
    frames: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    def __post_init__(self) -> None:
        names = tuple(str(v) for v in self.video_names)
        index = np.asarray(self.video_index, dtype=np.int64).reshape(-1)
        frames = np.asarray(self.frames).reshape(-1)
        labels = np.asarray(self.labels).reshape(-1)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        n = index.shape[0]
        if not frames.shape[0] == labels.shape[0] == scores.shape[0] == boxes.shape[0] == n:
            raise ValueError("video_index, frames, labels, scores and boxes must have one row "
                             "per detection")
        if n and (index.min() < 0 or index.max() >= len(names)):
            raise ValueError("video_index out of range of video_names")
        for column, values in (("frame", frames), ("label", labels)):
            if n and not np.issubdtype(values.dtype, np.integer):
                bad = ~np.isfinite(values) | (values != np.round(values))
                if bad.any():
                    row = int(np.argmax(bad))
                    raise DetectionDataError(f"video {names[index[row]]!r}: {column} "
                                             f"{values[row]} is not an integer")
        frames, labels = frames.astype(np.int64, copy=False), labels.astype(np.int64, copy=False)
        checks = (
            (frames < 1, "frame {} is not a 1-based frame number", frames),
            (labels < 0, "label {} is out of range (need 0 <= label)", labels),
            (np.isnan(scores), "score {} is NaN", scores),
        )
        for bad, message, values in checks:
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise DetectionDataError(f"video {names[index[row]]!r}: "
                                         + message.format(values[row]))
        bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            check_boxes(names[index[row]], boxes[row : row + 1], f"box at frame {frames[row]}",
                        number_rows=False)
        for name, value in (("video_names", names), ("video_index", index), ("frames", frames),
                            ("labels", labels), ("scores", scores), ("boxes", boxes)):
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.video_index.shape[0])

    def check_labels(self, num_classes: int | None) -> None:
        """Raise when a label is ``>= num_classes`` (nothing to check when None)."""
        if num_classes is not None and len(self) and self.labels.max() >= num_classes:
            row = int(np.argmax(self.labels >= num_classes))
            check_label(self.video_names[self.video_index[row]], int(self.labels[row]),
                        num_classes)

    @classmethod
    def from_detections(cls, detections: Iterable[FrameDetection]) -> FrameDetectionArrays:
        """Columns of a sequence of :class:`FrameDetection` (kept in input order)."""
        detections = list(detections)
        names: dict[str, int] = {}
        index = [names.setdefault(d.video, len(names)) for d in detections]
        return cls(
            video_names=tuple(names),
            video_index=np.asarray(index, dtype=np.int64),
            frames=np.asarray([d.frame for d in detections], dtype=np.int64),
            labels=np.asarray([d.label for d in detections], dtype=np.int64),
            scores=np.asarray([d.score for d in detections], dtype=np.float64),
            boxes=np.asarray([d.box for d in detections], dtype=np.float64).reshape(-1, 4),
        )


def check_ground_truth(
    gt_tubes: GroundTruthTubes, num_classes: int | None = None
) -> dict[str, dict[int, list[np.ndarray]]]:
    """Validate ground-truth tubes (labels, boxes, frames) and return them as float arrays."""
    checked: dict[str, dict[int, list[np.ndarray]]] = {}
    for video, per_label in gt_tubes.items():
        video = str(video)
        checked[video] = {}
        for label, tubes in per_label.items():
            label = check_label(video, label, num_classes, "ground-truth label")
            checked[video][label] = [
                check_tube(video, tube, f"ground-truth tube {i} of label {label}")
                for i, tube in enumerate(tubes)
            ]
    return checked
