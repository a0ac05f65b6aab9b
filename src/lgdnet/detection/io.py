"""The detections file: a detector's tubes and per-frame boxes, as JSON (read and written).

Layout (one entry per line when lgdnet writes it, so an error's line number finds the entry)::

    {"tubes":  [{"video": "class/name", "label": 0, "score": 0.9,
                 "boxes": [[frame, x1, y1, x2, y2], ...]}, ...],
     "frames": [{"video": "class/name", "frame": 12, "label": 0, "score": 0.8,
                 "box": [x1, y1, x2, y2]}, ...],
     "meta":   {...}}

``tubes`` feed video-mAP and ``frames`` frame-mAP; either may be missing or empty, not both.
``meta`` is optional and free-form (how the detections were made: config, checkpoint); it is
written by :func:`save_detections` and not interpreted when read. Any other key is refused,
so a misspelt ``"tube"`` is not silently read as "no tubes".

Conventions (those of :mod:`lgdnet.detection.types`): labels index the ground truth's
``labels``; frames are numbered from 1 and a tube's frames are contiguous and increasing;
boxes are ``x1, y1, x2, y2`` in continuous pixel coordinates of the original frame. Frames and
labels are integers (a float with an integral value, ``12.0``, is accepted, as numpy writes
them); scores and coordinates are finite numbers (JSON's ``NaN`` and ``Infinity`` are refused).

Every error is a :class:`~lgdnet.errors.DetectionDataError` naming the file, the entry
(``tubes[3]``) and its video.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lgdnet.atomic import write_text
from lgdnet.errors import DetectionDataError

from .types import FrameDetection, FrameDetectionArrays, Tube

if TYPE_CHECKING:  # the detection layer only reads attributes of the data layer's ground truth
    from lgdnet.data.detection_annotations import DetectionGroundTruth

TOP_KEYS = ("tubes", "frames", "meta")
TUBE_KEYS = ("video", "label", "score", "boxes")
FRAME_KEYS = ("video", "frame", "label", "score", "box")
_FRAME_KEYSET = frozenset(FRAME_KEYS)
_NUMBERS = {int, float}  # exact types: json gives bool too, and bool is an int subclass
_LARGEST = 2**62  # frames and labels beyond this are not numbers anyone meant (and int64 ends)


class _NonFinite(ValueError):
    """``NaN`` or ``Infinity`` in the JSON text (Python's json accepts them, JSON does not)."""


def _refuse_constant(name: str) -> Any:
    raise _NonFinite(name)


def _read_json(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DetectionDataError(f"cannot read: {error.strerror or error}", path) from None
    if not data.strip():
        raise DetectionDataError("the file is empty: no detections (expected a JSON object "
                                 'with "tubes" and/or "frames")', path)
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as error:
        raise DetectionDataError(f"not a JSON text file (not UTF-8 at byte {error.start})",
                                 path) from None
    except json.JSONDecodeError as error:
        raise DetectionDataError(f"not JSON: {error.msg} at line {error.lineno}, column "
                                 f"{error.colno}", path) from None
    except _NonFinite as error:
        raise DetectionDataError(f"{error} is not a JSON number; scores and boxes must be "
                                 "finite", path) from None


def _integer(value: Any) -> int | None:
    """``value`` as an int when it is an integer (or an integral float), else None."""
    integral = type(value) is int or (type(value) is float and math.isfinite(value)
                                      and value == int(value))
    return int(value) if integral and abs(value) < _LARGEST else None


def _entry(path: Path, kind: str, index: int, entry: Any, keys: tuple[str, ...]) -> str:
    """Check one entry's keys; return its where-prefix ``tubes[3]: video 'a/b'``."""
    where = f"{kind}[{index}]"
    if not isinstance(entry, dict):
        raise DetectionDataError(f"{where}: expected an object with keys {', '.join(keys)}, "
                                 f"got {type(entry).__name__}", path)
    video = entry.get("video")
    if "video" in entry and (not isinstance(video, str) or not video):
        raise DetectionDataError(f'{where}: "video" must be a non-empty string, got {video!r}',
                                 path)
    if isinstance(video, str):
        where += f": video {video!r}"
    missing = [key for key in keys if key not in entry]
    unknown = sorted(set(entry) - set(keys))
    if missing or unknown:
        problem = (f"missing key(s) {', '.join(missing)}" if missing
                   else f"unknown key(s) {', '.join(unknown)}")
        raise DetectionDataError(f"{where}: {problem} (an entry has {', '.join(keys)})", path)
    return where


def _label_and_score(path: Path, where: str, entry: dict) -> tuple[int, float]:
    label = _integer(entry["label"])
    if label is None:
        raise DetectionDataError(f"{where}: label {entry['label']!r} is not a valid integer", path)
    score = entry["score"]
    if type(score) not in _NUMBERS or not math.isfinite(score):
        raise DetectionDataError(f"{where}: score {score!r} is not a finite number", path)
    return label, float(score)


Check = tuple[np.ndarray, Callable[[int], str]]  # rows that fail, and a row's message


def _raise_first(path: Path, kind: str, names: Sequence[str], index: np.ndarray,
                 checks: Iterable[Check]) -> None:
    """Raise for the first failing row of the first failing check (whole-array tests, so only
    a bad row is looked at in Python)."""
    for bad, message in checks:
        if bad.any():
            row = int(np.argmax(bad))
            raise DetectionDataError(f"{kind}[{row}]: video {names[index[row]]!r}: "
                                     f"{message(row)}", path)


def _check_gt(path: Path, kind: str, names: Sequence[str], index: np.ndarray,
              labels: np.ndarray, first: np.ndarray, last: np.ndarray,
              gt: DetectionGroundTruth) -> None:
    """Raise for the first entry whose video, label or frames ``gt`` does not have."""
    known = np.array([name in gt.nframes for name in names] + [False])
    nframes = np.array([gt.nframes.get(name, 0) for name in names] + [0])[index]

    def span(r: int) -> str:
        return f"frame {first[r]}" if first[r] == last[r] else f"frames {first[r]}..{last[r]}"

    _raise_first(path, kind, names, index, [
        (~known[index], lambda r: f"the video is not in the ground truth {gt.source}"),
        (labels >= len(gt.labels), lambda r: f"label {labels[r]} is out of range: the ground "
                                             f"truth has {len(gt.labels)} labels "
                                             f"(0..{len(gt.labels) - 1})"),
        (last > nframes, lambda r: f"{span(r)} outside the video's frames 1..{nframes[r]}"),
    ])


def _parse_tube(path: Path, index: int, entry: Any) -> Tube:
    where = _entry(path, "tubes", index, entry, TUBE_KEYS)
    label, score = _label_and_score(path, where, entry)
    rows = entry["boxes"]
    if not isinstance(rows, list) or not rows:
        raise DetectionDataError(f'{where}: "boxes" must be a non-empty list of [frame, x1, '
                                 f"y1, x2, y2] rows", path)
    if not _all_numbers(rows, 5):  # whole-list test first; the loop only finds the culprit
        for i, row in enumerate(rows):
            if not _all_numbers([row], 5):
                raise DetectionDataError(f"{where}: boxes[{i}] is {row!r}, expected 5 numbers "
                                         "[frame, x1, y1, x2, y2]", path)
    try:
        return Tube(entry["video"], label, score, np.asarray(rows, dtype=np.float64))
    except DetectionDataError as error:  # the types' own checks: contiguity, x2 < x1, label < 0
        raise DetectionDataError(f"tubes[{index}]: {error.reason}", path) from None


def _all_numbers(rows: Any, width: int) -> bool:
    """Whether ``rows`` is a list of lists of ``width`` numbers (C-speed set tests)."""
    return (type(rows) is list and set(map(type, rows)) <= {list} and set(map(len, rows)) <= {width}
            and set(map(type, chain.from_iterable(rows))) <= _NUMBERS)


def _integral(values: list) -> np.ndarray | None:
    # A numeric column as int64 when every value is integral, else None.
    array = np.asarray(values)
    if array.dtype.kind not in "if" or np.abs(array).max(initial=0) >= _LARGEST:
        return None  # e.g. integers too large for int64 (object or uint64 arrays)
    if array.dtype.kind == "f":
        if not (np.isfinite(array).all() and (array == np.round(array)).all()):
            return None
    return array.astype(np.int64).reshape(-1)


def _frame_columns(entries: list) -> tuple | None:
    """The frames' columns when every entry is well-formed, tested column by column at C
    speed rather than entry by entry; None when any entry is not."""
    if not all(type(e) is dict and e.keys() == _FRAME_KEYSET for e in entries):
        return None
    videos, boxes = [e["video"] for e in entries], [e["box"] for e in entries]
    columns = [[e[key] for e in entries] for key in ("frame", "label", "score")]
    if not set(map(type, videos)) <= {str} or "" in videos or not _all_numbers(boxes, 4) or any(
            not set(map(type, column)) <= _NUMBERS for column in columns):
        return None
    frames, labels, scores = columns
    frame_array, label_array = _integral(frames), _integral(labels)
    score_array = np.asarray(scores, dtype=np.float64).reshape(-1)
    if frame_array is None or label_array is None or not np.isfinite(score_array).all():
        return None
    names = {name: i for i, name in enumerate(dict.fromkeys(videos))}
    index = [names[video] for video in videos]
    return names, index, frames, labels, boxes, frame_array, label_array, score_array


def _explain_bad_frames(path: Path, entries: list) -> None:
    """Raise for the first malformed frame entry, looked at one by one (the slow path, taken
    only once :func:`_frame_columns` has found that some entry is malformed)."""
    for i, entry in enumerate(entries):
        where = _entry(path, "frames", i, entry, FRAME_KEYS)
        _label_and_score(path, where, entry)
        if _integer(entry["frame"]) is None:
            raise DetectionDataError(f"{where}: frame {entry['frame']!r} is not a valid integer",
                                     path)
        if not _all_numbers([entry["box"]], 4):
            raise DetectionDataError(f"{where}: box is {entry['box']!r}, expected 4 numbers "
                                     "[x1, y1, x2, y2]", path)
    raise DetectionDataError('"frames": malformed entries', path)  # pragma: no cover


def _parse_frames(path: Path, entries: list, gt: DetectionGroundTruth | None
                  ) -> FrameDetectionArrays:
    columns = _frame_columns(entries)
    if columns is None:
        _explain_bad_frames(path, entries)
    names, index, frames, labels, boxes, frame_array, label_array, score_array = columns
    video_names = tuple(names)
    index_array = np.asarray(index, dtype=np.int64)
    box_array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    _raise_first(path, "frames", video_names, index_array, [
        (~np.isfinite(box_array).all(axis=1) | (box_array[:, 2] < box_array[:, 0])
         | (box_array[:, 3] < box_array[:, 1]),
         lambda r: f"box {boxes[r]} needs finite x1 <= x2 and y1 <= y2"),
        (frame_array < 1, lambda r: f"frame {frames[r]} is not a 1-based frame number"),
        (label_array < 0, lambda r: f"label {labels[r]} is out of range (need 0 <= label)"),
    ])
    if gt is not None:
        _check_gt(path, "frames", video_names, index_array, label_array, frame_array,
                  frame_array, gt)
    try:
        return FrameDetectionArrays(video_names, index_array, frame_array, label_array,
                                    score_array, box_array)
    except DetectionDataError as error:  # not expected after the checks above; keep the file
        raise DetectionDataError(error.reason, path) from None


def load_detections(path: str | os.PathLike, gt: DetectionGroundTruth | None = None
                    ) -> tuple[list[Tube], FrameDetectionArrays]:
    """Read and check a detections file (format in the module docstring).

    Args:
        path: the JSON file.
        gt: when given, every video must be in it, every label ``< len(gt.labels)`` and every
            frame in ``1..gt.nframes[video]``.

    Returns:
        The tubes (file order) and the frame detections as columns (file order; no rows
        when the file has none).

    Raises:
        DetectionDataError: unreadable, empty or non-JSON file, a missing or unknown key, a
            value of the wrong type, a bad box (``x2 < x1``, ``y2 < y1``), non-contiguous
            tube frames, a video, label or frame the ground truth does not have. The message
            names the file, the entry (``tubes[3]``) and the video.
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DetectionDataError('expected a JSON object with "tubes" and/or "frames", got '
                                 f"a JSON {type(data).__name__}", path)
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise DetectionDataError(f"unknown key(s) {', '.join(map(repr, unknown))} (a "
                                 f"detections file has {', '.join(TOP_KEYS)})", path)
    for key in ("tubes", "frames"):
        if not isinstance(data.get(key, []), list):
            raise DetectionDataError(f'"{key}" must be a list, got {type(data[key]).__name__}',
                                     path)
    if "meta" in data and not isinstance(data["meta"], dict):
        raise DetectionDataError('"meta" must be an object', path)
    raw_tubes, raw_frames = data.get("tubes", []), data.get("frames", [])
    if not raw_tubes and not raw_frames:
        raise DetectionDataError('no detections: "tubes" and "frames" are both missing or '
                                 "empty", path)
    tubes = [_parse_tube(path, i, entry) for i, entry in enumerate(raw_tubes)]
    if gt is not None and tubes:
        names = {name: i for i, name in enumerate(dict.fromkeys(t.video for t in tubes))}
        columns = [np.array([attribute(t) for t in tubes], dtype=np.int64) for attribute in (
            lambda t: names[t.video], lambda t: t.label, lambda t: t.start, lambda t: t.end)]
        _check_gt(path, "tubes", tuple(names), *columns, gt)
    return tubes, _parse_frames(path, raw_frames, gt)


def _tube_lines(tubes: list[Tube]) -> list[str]:
    encode = json.JSONEncoder(allow_nan=False).encode  # one encoder: json.dumps makes one a call
    lines = []
    for tube in tubes:
        rows = tube.boxes.tolist()
        for row in rows:
            row[0] = int(row[0])  # frame numbers written as integers
        lines.append(encode({"video": tube.video, "label": tube.label, "score": tube.score,
                             "boxes": rows}))
    return lines


def _frame_lines(frames: FrameDetectionArrays) -> list[str]:
    # Formatted directly rather than by json.dumps per entry (which builds an encoder each
    # call): repr of a finite float is exactly what json writes, names are encoded once.
    if not (np.isfinite(frames.scores).all() and np.isfinite(frames.boxes).all()):
        raise ValueError("a frame detection's score or box is not finite")
    names = [json.dumps(name) for name in frames.video_names]
    columns = (frames.video_index.tolist(), frames.frames.tolist(), frames.labels.tolist(),
               frames.scores.tolist(), frames.boxes.tolist())
    return [f'{{"video": {names[v]}, "frame": {f}, "label": {c}, "score": {s!r}, '
            f'"box": [{b[0]!r}, {b[1]!r}, {b[2]!r}, {b[3]!r}]}}' for v, f, c, s, b in zip(*columns)]


def save_detections(path: str | os.PathLike, tubes: Iterable[Tube],
                    frames: FrameDetectionArrays | Iterable[FrameDetection] = (),
                    meta: Mapping[str, Any] | None = None) -> None:
    """Write a detections file that :func:`load_detections` reads back exactly.

    Written atomically (a temporary file in the same folder, fsync'ed, then renamed over
    ``path``), so a crash never leaves half a file. Floats are written as their shortest
    round-tripping decimal, so the numbers read back are the ones saved.

    Args:
        path: the JSON file to write.
        tubes: the tubes.
        frames: frame detections, as columns or objects.
        meta: optional JSON-serialisable description of how the detections were made.

    Raises:
        DetectionDataError: nothing to write, or a score or box that is not finite.
    """
    path = Path(path)
    if not isinstance(frames, FrameDetectionArrays):
        frames = FrameDetectionArrays.from_detections(frames)
    tubes = list(tubes)
    if not tubes and not len(frames):
        raise DetectionDataError("refusing to write a detections file without tubes or frames",
                                 path)
    try:
        parts = []
        for key, lines in (("tubes", _tube_lines(tubes)), ("frames", _frame_lines(frames))):
            body = ",\n".join(lines)
            parts.append(f'"{key}": [\n{body}\n]' if lines else f'"{key}": []')
        if meta is not None:
            parts.append(f'"meta": {json.dumps(dict(meta), allow_nan=False)}')
    except ValueError as error:  # allow_nan=False: JSON has no NaN or Infinity
        raise DetectionDataError(f"cannot write: {error} (scores and boxes must be finite)",
                                 path) from None
    write_text(path, "{" + ",\n".join(parts) + "}\n")
