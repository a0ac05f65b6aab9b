"""Reading frames from video files (PyAV) and frame folders.

:func:`open_video` is the one entry point: a file is decoded with PyAV, a folder is read as
pre-extracted frames (:mod:`lgdnet.data.frame_folder`). Both give a :class:`VideoSource`
whose ``get_frames(indices)`` returns ``uint8`` RGB frames ``(T, H, W, 3)``.

Files are read by :class:`~lgdnet.data.pyav_video.PyAVVideo` (keyframe seeking, threaded
decoding, exact frame indices; its module says how), folders by
:class:`~lgdnet.data.frame_folder.FrameFolderVideo`. Indices past the last frame are clamped
to the last frame. Everything bad is a :class:`~lgdnet.errors.VideoReadError` naming the
path: missing, empty, truncated, non-video and audio-only files, frames that cannot be
decoded, empty frame folders.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import torch

from lgdnet.errors import VideoReadError

__all__ = ["VideoSource", "open_video", "prepare_indices", "DEFAULT_FRAME_TEMPLATE"]

DEFAULT_FRAME_TEMPLATE = "img_{:05d}.jpg"
"""File names of a frame folder, numbered from 1 (the layout TSN and MMAction2 tools write)."""


class VideoSource(ABC):
    """A video whose frames can be read by index.

    Attributes:
        path: the file or folder.
        num_frames: number of frames (indices ``0 .. num_frames - 1``).
        fps: frames per second (the average rate for variable-rate files).
        height, width: frame size in pixels.
    """

    path: str
    num_frames: int
    fps: float
    height: int
    width: int

    @abstractmethod
    def get_frames(
        self, indices: Sequence[int], size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Read frames by index.

        Args:
            indices: frame indices, in any order, repeats allowed; indices past the last
                frame are clamped to the last frame.
            size: optional ``(height, width)`` to resize to while converting.

        Returns:
            The frames in the order asked.

        Shape:
            ``(len(indices), H, W, 3)``, ``uint8`` RGB.

        Raises:
            VideoReadError: the frames cannot be read.
        """

    def close(self) -> None:  # noqa: B027 (optional hook, nothing to release by default)
        """Release the file handles."""

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path!r}, num_frames={self.num_frames}, "
            f"fps={self.fps:g}, size={self.height}x{self.width})"
        )


def prepare_indices(indices: Sequence[int], num_frames: int) -> np.ndarray:
    """Validate frame indices and clamp those past the end to the last frame.

    Args:
        indices: wanted frame indices.
        num_frames: number of frames of the video (at least 1).

    Returns:
        ``int64`` array of the clamped indices, in the order given.
    """
    array = np.asarray(indices, dtype=np.int64).reshape(-1)
    if array.size and array.min() < 0:
        raise ValueError(f"frame indices must be non-negative, got {int(array.min())}")
    return np.minimum(array, num_frames - 1)


def describe_error(error: BaseException) -> str:
    """A short reason from an exception, for a :class:`VideoReadError` message."""
    # FFmpeg errors repeat the file name; the caller names it already.
    text = str(getattr(error, "strerror", None) or error).strip() or type(error).__name__
    return text if len(text) < 200 else text[:200] + "..."


def check_file(path: str) -> None:
    """Fail early, with a precise reason, on files FFmpeg would report vaguely."""
    if not os.path.exists(path):
        raise VideoReadError(path, "file not found")
    if not os.path.isfile(path):
        raise VideoReadError(path, "not a regular file")
    try:
        size = os.path.getsize(path)
    except OSError as error:
        raise VideoReadError(path, f"cannot read file ({describe_error(error)})") from None
    if size == 0:
        raise VideoReadError(path, "file is empty (0 bytes)")


def open_video(
    path: str | os.PathLike,
    *,
    frame_template: str = DEFAULT_FRAME_TEMPLATE,
    num_threads: int = 0,
) -> VideoSource:
    """Open a video file (decoded with PyAV) or a folder of extracted frames.

    Args:
        path: a video file, or a folder of frames named by ``frame_template``.
        frame_template: file names in a frame folder, a ``str.format`` pattern with one
            integer field, numbered from 1 (``img_00001.jpg``, ...).
        num_threads: decoder threads for files; 0 lets FFmpeg choose.

    Returns:
        A :class:`VideoSource`; close it (or use it as a context manager) when done.

    Raises:
        VideoReadError: the video cannot be opened (see
            :class:`~lgdnet.data.pyav_video.PyAVVideo`).
    """
    if Path(path).is_dir():
        from lgdnet.data.frame_folder import FrameFolderVideo

        return FrameFolderVideo(path, frame_template=frame_template)
    from lgdnet.data.pyav_video import PyAVVideo

    return PyAVVideo(path, num_threads=num_threads)
