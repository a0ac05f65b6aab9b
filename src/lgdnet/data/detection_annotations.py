"""Spatio-temporal detection annotations (Sec. 5.6): ground-truth tubes and per-frame proposals.

**Ground truth** is read in the layout of the ACT detector's ``JHMDB-GT.pkl`` and
``UCF101v2-GT.pkl`` (the files MOC and MMAction2 redistribute): a pickled dict with

* ``labels``: class names, in label order;
* ``gttubes``: ``{video: {label_index: [tube, ...]}}``, each tube an array ``(n, 5)`` of rows
  ``frame, x1, y1, x2, y2`` over contiguous frames;
* ``nframes``: ``{video: int}``; ``resolution``: ``{video: (height, width)}``;
* ``train_videos`` / ``test_videos``: one list of video names per split (J-HMDB has 3
  splits, UCF101-24 one). Video names are ``"class/name"``.

**Conventions** everywhere in lgdnet detection: frames are numbered from 1; boxes are
``x1, y1, x2, y2`` in continuous pixel coordinates of the original frame, ``(0, 0)`` the
top-left corner of the top-left pixel, area ``(x2 - x1) * (y2 - y1)`` (no ``+ 1``). The
published files' boxes are read unchanged and taken in this convention.

The real files are Python 2 pickles. They are read with a restricted unpickler that builds
numpy arrays and builtin containers and nothing else, so a tampered file cannot run code.

**Proposals** (lgdnet's own format, by suffix):

* ``.json``: ``{video: {frame: [[x1, y1, x2, y2, score], ...]}}``, frame keys are decimal
  strings (``"1"``), boxes in pixels;
* ``.npz`` (no pickles inside): ``videos`` (V,) str, ``video_index`` (N,) int64, ``frames``
  (N,) int64 and ``boxes`` (N, 5) float32, one row per box. A frame with no rows has no
  proposals.

In memory both are ``{video: {frame: array (n, 5) float32}}`` (:data:`Proposals`).
:func:`load_mmaction_proposals` reads the AVA-style proposals pickles of MMAction2
(``{"video_id,frame": array (n, 5)}`` of normalised ``x1, y1, x2, y2, score``) into the same
form, in pixels.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lgdnet.errors import AnnotationError

logger = logging.getLogger(__name__)

Proposals = dict[str, dict[int, np.ndarray]]
GT_KEYS = ("labels", "gttubes", "nframes", "train_videos", "test_videos", "resolution")
NPZ_KEYS = ("videos", "video_index", "frames", "boxes")


class DetectionAnnotationError(AnnotationError):
    """A ground-truth or proposals file is malformed; the message names the file and video.

    Args:
        path: the file.
        reason: what is wrong.
        video: the video concerned, or ``None`` when the problem is the file as a whole.
    """

    def __init__(self, path: str | os.PathLike, reason: str, video: str | None = None) -> None:
        self.video = video
        super().__init__(path, None, reason if video is None else f"video {video!r}: {reason}")


class UnsafePickleError(DetectionAnnotationError):
    """A pickle asks for a class or function outside the numpy-array allow-list."""


# ------------------------------------------------------------------------------ safe pickles
def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles written by Python 3 use it (for ``bytes``),
    limited to that one use."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin-1 text")
    return text.encode("latin1")


# Resolved from numpy's own pickling so that both the numpy 1 (Python 2 files) and numpy 2
# module names map to the functions this numpy has, without importing numpy.core.
# _frombuffer is how protocol 5 pickles carry array buffers.
_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]
_ALLOWED: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray}
_ALLOWED[("numpy", "dtype")] = np.dtype
_ALLOWED[("_codecs", "encode")] = _latin1_bytes
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _RECONSTRUCT
    _ALLOWED[(_module, "scalar")] = _SCALAR
    _ALLOWED[(_module.replace("multiarray", "numeric"), "_frombuffer")] = _FROMBUFFER
for _module in ("builtins", "__builtin__"):  # Python 2 files say __builtin__
    _ALLOWED.update({(_module, "set"): set, (_module, "frozenset"): frozenset})


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="latin1")  # Python 2 str -> str, numpy buffers intact
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                self.path, f"refusing to load: the pickle would construct {module}.{name}; "
                "only numpy arrays and builtin containers are allowed")
        return allowed


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Unpickle a file that may hold only numpy arrays, numpy scalars and builtin containers.

    Allowed: ``numpy.ndarray``, ``numpy.dtype``, ``numpy[._]core.multiarray._reconstruct`` and
    ``.scalar``, ``numpy[._]core.numeric._frombuffer`` (protocol 5), ``_codecs.encode`` for
    latin-1 only (bytes in protocol 2 from Python 3), builtin ``set`` and ``frozenset``.

    Args:
        path: the pickle (Python 2 or 3, any protocol).

    Returns:
        The unpickled object.

    Raises:
        UnsafePickleError: the pickle names any other class or function.
        DetectionAnnotationError: the file cannot be read or is not a pickle.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            return _SafeUnpickler(file, path).load()
    except DetectionAnnotationError:
        raise
    except OSError as error:
        raise DetectionAnnotationError(path, f"cannot read: {error.strerror or error}") from None
    except Exception as error:  # a corrupt pickle can fail in many ways; all mean one thing
        reason = f"not a readable pickle ({type(error).__name__}: {error})"
        raise DetectionAnnotationError(path, reason) from None


# ------------------------------------------------------------------------------ ground truth
@dataclass(frozen=True, eq=False)  # eq=False: == on dicts of arrays would be ambiguous
class DetectionGroundTruth:
    """Ground-truth tubes of a detection dataset (ACT layout, see the module docstring).

    ``tubes[video][label]`` is a list of arrays ``(n, 5)`` float32: ``frame, x1, y1, x2, y2``.
    ``train_videos[k]`` / ``test_videos[k]`` are the videos of split ``k + 1``.
    """

    labels: list[str]
    tubes: dict[str, dict[int, list[np.ndarray]]]
    nframes: dict[str, int]
    resolution: dict[str, tuple[int, int]]
    train_videos: list[list[str]]
    test_videos: list[list[str]]
    source: str = "<memory>"  # the file, named in errors

    @property
    def num_splits(self) -> int:
        return len(self.train_videos)

    def split_videos(self, split: int, subset: str) -> list[str]:
        """The videos of one subset of one split.

        Args:
            split: 1-based split number (1..3 for J-HMDB, 1 for UCF101-24).
            subset: ``"train"`` or ``"test"``.

        Returns:
            Video names, in file order.

        Raises:
            DetectionAnnotationError: the split does not exist in this file.
        """
        if subset not in ("train", "test"):
            raise ValueError(f"subset must be 'train' or 'test', not {subset!r}")
        if not 1 <= split <= self.num_splits:
            reason = f"split {split} does not exist; the file has splits 1..{self.num_splits}"
            raise DetectionAnnotationError(self.source, reason)
        return list((self.train_videos if subset == "train" else self.test_videos)[split - 1])


def _check_tube(path: Path, video: str, tube: Any, nframes: int) -> np.ndarray:
    tube = np.asarray(tube, dtype=np.float32)
    if tube.ndim != 2 or tube.shape[0] == 0 or tube.shape[1] != 5 or not np.isfinite(tube).all():
        reason = f"a tube must be a finite (n >= 1, 5) array, got shape {tube.shape}"
        raise DetectionAnnotationError(path, reason, video)
    frames = tube[:, 0]
    span = f"{frames[0]:g}..{frames[-1]:g}"
    if (frames != np.round(frames)).any() or (np.diff(frames) != 1).any():
        raise DetectionAnnotationError(path, f"tube frames {span} are not contiguous", video)
    if frames[0] < 1 or frames[-1] > nframes:
        raise DetectionAnnotationError(path, f"tube frames {span} are outside 1..{nframes}", video)
    inverted = (tube[:, 3] < tube[:, 1]) | (tube[:, 4] < tube[:, 2])
    if inverted.any():
        row = tube[np.argmax(inverted)]
        reason = f"box at frame {row[0]:g} has x2 < x1 or y2 < y1: {row[1:].tolist()}"
        raise DetectionAnnotationError(path, reason, video)
    return tube


def _parse_gt(data: Any, path: Path) -> DetectionGroundTruth:
    """Check every key, split, video and tube of an ACT-layout dict (named in each error)."""
    if not isinstance(data, dict):
        raise DetectionAnnotationError(path, f"expected a dict, got {type(data).__name__}")
    missing = [key for key in GT_KEYS if key not in data]
    if missing:
        raise DetectionAnnotationError(path, f"missing key(s) {', '.join(missing)}")
    labels = [str(name) for name in data["labels"]]
    nframes = {video: int(count) for video, count in data["nframes"].items()}
    resolution = {video: (int(size[0]), int(size[1])) for video, size in data["resolution"].items()}
    tubes: dict[str, dict[int, list[np.ndarray]]] = {}
    for video, by_label in data["gttubes"].items():
        if nframes.get(video, 0) < 1:
            reason = f"has tubes but nframes is {nframes[video]}" if video in nframes else \
                "has tubes in gttubes but no entry in nframes"
            raise DetectionAnnotationError(path, reason, video)
        tubes[video] = {}
        for label, video_tubes in by_label.items():
            if not isinstance(label, int | np.integer) or not 0 <= label < len(labels):
                reason = f"label index {label!r} is outside 0..{len(labels) - 1}"
                raise DetectionAnnotationError(path, reason, video)
            if isinstance(video_tubes, np.ndarray) and video_tubes.ndim == 2:
                video_tubes = [video_tubes]  # one tube stored bare
            checked = [_check_tube(path, video, tube, nframes[video]) for tube in video_tubes]
            tubes[video][int(label)] = checked
    splits = {}
    for key in ("train_videos", "test_videos"):
        splits[key] = [[str(video) for video in videos] for videos in data[key]]
        for number, videos in enumerate(splits[key], start=1):
            for video in videos:
                absent = [name for name, table in (("gttubes", tubes), ("nframes", nframes))
                          if video not in table]
                if absent:
                    reason = (f"listed in {key} of split {number} but absent from "
                              f"{' and '.join(absent)}")
                    raise DetectionAnnotationError(path, reason, video)
    train, test = splits["train_videos"], splits["test_videos"]
    if len(train) != len(test) or not train:
        reason = f"train_videos has {len(train)} splits and test_videos {len(test)}"
        raise DetectionAnnotationError(path, reason)
    return DetectionGroundTruth(labels, tubes, nframes, resolution, train, test, str(path))


def load_detection_gt(path: str | os.PathLike) -> DetectionGroundTruth:
    """Read and check an ACT-layout ground-truth pickle (``JHMDB-GT.pkl``, ``UCF101v2-GT.pkl``).

    Args:
        path: the pickle.

    Returns:
        The tubes, frame counts, resolutions and splits.

    Raises:
        DetectionAnnotationError: unreadable or unsafe file, missing key, a split video
            without tubes or frame count, a bad tube (frames not contiguous or outside
            ``1..nframes``, ``x2 < x1`` or ``y2 < y1``), a label index out of range.
    """
    path = Path(path)
    data = safe_load_pickle(path)
    try:
        return _parse_gt(data, path)
    except (AttributeError, TypeError, ValueError, IndexError, KeyError) as error:
        # a value of the wrong kind: a list where a dict belongs, a name where a count does
        reason = f"malformed ACT ground truth ({type(error).__name__}: {error})"
        raise DetectionAnnotationError(path, reason) from None


def save_detection_gt(gt: DetectionGroundTruth, path: str | os.PathLike) -> None:
    """Write ``gt`` as an ACT-layout pickle (protocol 2, as the published files are).

    Args:
        gt: the ground truth; it is checked first, so a bad one is never written.
        path: where to write.
    """
    path = Path(path)
    data = {
        "labels": list(gt.labels),
        "gttubes": {video: {label: [np.asarray(tube, np.float32) for tube in tubes]
                            for label, tubes in by_label.items()}
                    for video, by_label in gt.tubes.items()},
        "nframes": dict(gt.nframes),
        "train_videos": [list(videos) for videos in gt.train_videos],
        "test_videos": [list(videos) for videos in gt.test_videos],
        "resolution": {video: tuple(size) for video, size in gt.resolution.items()},
    }
    _parse_gt(data, path)
    with path.open("wb") as file:
        pickle.dump(data, file, protocol=2)


# ------------------------------------------------------------------------------ proposals
def _check_proposals(raw: Mapping[str, Mapping[int, Any]], path: Path,
                     gt: DetectionGroundTruth | None, strict: bool) -> Proposals:
    """Boxes as float32 (n, 5); videos or frames unknown to ``gt`` refused (or dropped)."""
    proposals: Proposals = {}
    dropped = 0
    for video, frames in raw.items():
        if gt is not None and video not in gt.nframes:
            if strict:
                raise DetectionAnnotationError(path, "is not in the ground truth", video)
            dropped += len(frames)
            continue
        proposals[video] = {}
        last = gt.nframes[video] if gt is not None else None
        for frame, boxes in frames.items():
            boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 5)
            if (not np.isfinite(boxes).all() or (boxes[:, 2] < boxes[:, 0]).any()
                    or (boxes[:, 3] < boxes[:, 1]).any()):
                reason = f"frame {frame}: boxes must be finite with x2 >= x1 and y2 >= y1"
                raise DetectionAnnotationError(path, reason, video)
            if frame < 1 or (last is not None and frame > last):
                if strict:
                    reason = f"frame {frame} is outside 1..{last or 'nframes'}"
                    raise DetectionAnnotationError(path, reason, video)
                dropped += 1
                continue
            proposals[video][int(frame)] = boxes
    if dropped:
        logger.warning("%s: dropped the proposals of %d frames unknown to the ground truth",
                       path, dropped)
    return proposals


def _box_rows(path: Path, video: str, frame: Any, boxes: Any) -> np.ndarray:
    try:
        return np.asarray(boxes, dtype=np.float32).reshape(-1, 5)
    except (TypeError, ValueError):
        reason = f"frame {frame}: expected rows of x1, y1, x2, y2, score"
        raise DetectionAnnotationError(path, reason, video) from None


def load_proposals(path: str | os.PathLike, gt: DetectionGroundTruth | None = None,
                   strict: bool = True) -> Proposals:
    """Read per-frame proposals in lgdnet's ``.json`` or ``.npz`` format.

    Args:
        path: the file; the suffix picks the format.
        gt: when given, every video must be in it and every frame in ``1..nframes``.
        strict: refuse (default) or drop, with a logged warning, what ``gt`` does not know.

    Returns:
        ``{video: {frame: boxes}}``.

    Shape:
        boxes: float32 ``(n, 5)``, rows ``x1, y1, x2, y2, score`` in pixels.
    """
    path = Path(path)
    raw: dict[str, dict[int, Any]] = {}
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                names, index, frames, boxes = (npz[key] for key in NPZ_KEYS)
            for video, frame, row in zip(index.tolist(), frames.tolist(), boxes.reshape(-1, 5)):
                raw.setdefault(str(names[video]), {}).setdefault(int(frame), []).append(row)
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
            for video, by_frame in data.items():
                raw[video] = {int(f): _box_rows(path, video, f, b) for f, b in by_frame.items()}
    except DetectionAnnotationError:
        raise
    except OSError as error:
        raise DetectionAnnotationError(path, f"cannot read: {error.strerror or error}") from None
    except (ValueError, KeyError, AttributeError, IndexError) as error:
        reason = f"not a proposals file ({type(error).__name__}: {error})"
        raise DetectionAnnotationError(path, reason) from None
    return _check_proposals(raw, path, gt, strict)


def save_proposals(proposals: Mapping[str, Mapping[int, np.ndarray]],
                   path: str | os.PathLike) -> None:
    """Write proposals as ``.json`` or ``.npz`` (by suffix; see the module docstring).

    Args:
        proposals: ``{video: {frame: boxes}}``, frames 1-based.
        path: where to write.

    Shape:
        boxes: ``(n, 5)`` rows ``x1, y1, x2, y2, score`` in pixels.
    """
    path = Path(path)
    table = {video: {int(f): np.asarray(b, np.float32).reshape(-1, 5)
                     for f, b in sorted(frames.items())} for video, frames in proposals.items()}
    if path.suffix == ".npz":
        names = sorted(table)
        rows = [(i, f, b) for i, video in enumerate(names) for f, b in table[video].items()]
        columns = ([np.full(len(b), i, np.int64) for i, _, b in rows] + [np.zeros(0, np.int64)],
                   [np.full(len(b), f, np.int64) for _, f, b in rows] + [np.zeros(0, np.int64)],
                   [b for _, _, b in rows] + [np.zeros((0, 5), np.float32)])
        arrays = [np.array(names, dtype=str)] + [np.concatenate(column) for column in columns]
        np.savez_compressed(path, **dict(zip(NPZ_KEYS, arrays)))
    else:
        # str() of a float32 is its shortest decimal that reads back to the same float32:
        # lossless, and half the size of the float64 repr json would write.
        data = {video: {str(f): [[float(str(v)) for v in row] for row in b]
                        for f, b in frames.items()} for video, frames in table.items()}
        path.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")


def load_mmaction_proposals(path: str | os.PathLike, gt: DetectionGroundTruth | None = None, *,
                            resolution: Mapping[str, tuple[int, int]] | None = None,
                            strict: bool = True) -> Proposals:
    """Read an MMAction2 AVA-style proposals pickle and convert it to pixels.

    The pickle is a dict ``{"video,frame": array}`` (frame a 4-digit number, here the 1-based
    frame) of rows ``x1, y1, x2, y2, score`` normalised to [0, 1] by the frame size (rows of
    4 get score 1). It is read with the same restricted unpickler as the ground truth.

    Args:
        path: the pickle.
        gt: checks videos and frames, and gives the resolutions unless ``resolution`` does.
        resolution: ``{video: (height, width)}``, overriding ``gt.resolution``.
        strict: refuse (default) or drop what ``gt``/``resolution`` do not know.

    Returns:
        ``{video: {frame: boxes}}``, boxes float32 ``(n, 5)`` in pixels.
    """
    path = Path(path)
    sizes = resolution if resolution is not None else (gt.resolution if gt is not None else None)
    if sizes is None:
        raise ValueError("load_mmaction_proposals needs gt or resolution to convert to pixels")
    data = safe_load_pickle(path)
    if not isinstance(data, dict):
        reason = f"expected a dict of 'video,frame' keys, got {type(data).__name__}"
        raise DetectionAnnotationError(path, reason)
    raw: dict[str, dict[int, Any]] = {}
    for key, boxes in data.items():
        video, _, frame = str(key).rpartition(",")
        if not video or not frame.isdigit():
            raise DetectionAnnotationError(path, f"key {key!r} is not 'video_id,frame'")
        if video not in sizes:
            if strict:
                reason = "has no known resolution (not in the ground truth)"
                raise DetectionAnnotationError(path, reason, video)
            continue
        boxes = np.array(boxes, dtype=np.float32)  # a copy: scaled in place below
        if boxes.ndim != 2 or boxes.shape[1] not in (4, 5):
            reason = f"frame {frame}: expected (n, 4) or (n, 5), got {boxes.shape}"
            raise DetectionAnnotationError(path, reason, video)
        if boxes.shape[1] == 4:
            boxes = np.concatenate([boxes, np.ones((len(boxes), 1), np.float32)], axis=1)
        if ((boxes[:, :4] < 0) | (boxes[:, :4] > 1)).any():
            reason = f"frame {frame}: coordinates are not normalised to [0, 1]"
            raise DetectionAnnotationError(path, reason, video)
        height, width = sizes[video]
        boxes[:, :4] *= np.array([width, height, width, height], dtype=np.float32)
        raw.setdefault(video, {})[int(frame)] = boxes
    return _check_proposals(raw, path, gt, strict)
