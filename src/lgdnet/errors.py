"""Exceptions shared by every layer of lgdnet.

Every error a user can cause (a bad file, a bad line, a bad setting) is a subclass of
:class:`LgdnetError`, so the command line can print it as one clear sentence instead of a
traceback. Messages always name the file (and the line, where there is one).
"""

from __future__ import annotations

import os


class LgdnetError(Exception):
    """Base class of the errors that lgdnet raises for bad input or bad settings."""


class VideoReadError(LgdnetError):
    """A video (file or frame folder) cannot be read.

    Raised for missing, zero-byte, truncated, non-video, no-video-stream and undecodable
    inputs alike, so one ``except VideoReadError`` covers every bad sample.

    Args:
        path: the file or folder that failed.
        reason: what is wrong, in a few words (``"file is empty (0 bytes)"``).
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class AnnotationError(LgdnetError):
    """An annotation file (list, CSV, split file, class index) is malformed.

    Args:
        path: the annotation file.
        line: 1-based line number, or ``None`` when the problem is the file as a whole.
        reason: what is wrong with that line.
    """

    def __init__(self, path: str | os.PathLike, line: int | None, reason: str) -> None:
        self.path = os.fspath(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class ConfigError(LgdnetError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value)."""


class CheckpointError(LgdnetError):
    """A checkpoint is missing, truncated, corrupt or does not fit the model."""


class DetectionDataError(LgdnetError):
    """Action-detection data (frame detections, tubes, ground-truth tubes) is malformed.

    Raised for a box with ``x2 < x1`` or ``y2 < y1`` (or a non-finite coordinate), a tube whose
    frames are not contiguous and increasing, a label out of range and a NaN score. The
    message names the video, so one bad tube among thousands can be found.

    Args:
        reason: what is wrong, naming the video (``"video 'v_Biking_g01_c01': ..."``).
        path: the file the detections or annotations were read from, when there is one.
    """

    def __init__(self, reason: str, path: str | os.PathLike | None = None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)
