"""Folders of pre-extracted frames (``img_00001.jpg``, ...), the layout TSN and MMAction2 write.

Reading a few JPEGs is often faster than seeking in a long video, which is why large
datasets are commonly stored this way. Frames are indexed by the sorted numbers in their
names, so frame ``i`` is the ``i``-th file whatever number the first one carries (TSN starts
at 1) and a gap in the numbering does not shift the frames after it off the end.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lgdnet.data.decoding import DEFAULT_FRAME_TEMPLATE, VideoSource, prepare_indices
from lgdnet.errors import VideoReadError

__all__ = ["FrameFolderVideo", "frame_folder_path", "template_to_regex"]

_FIELD = re.compile(r"\{[^{}]*\}")


def template_to_regex(template: str) -> re.Pattern[str]:
    """Turn a file-name template with one integer field (``img_{:05d}.jpg``) into a regex.

    Args:
        template: a ``str.format`` pattern with exactly one field.

    Returns:
        A compiled pattern whose group 1 is the frame number.
    """
    fields = _FIELD.findall(template)
    if len(fields) != 1:
        raise ValueError(f"frame template must have one integer field, got {template!r}")
    before, after = _FIELD.split(template)
    return re.compile(re.escape(before) + r"(\d+)" + re.escape(after) + r"\Z")


class FrameFolderVideo(VideoSource):
    """A folder of frame images, read with OpenCV.

    Args:
        path: the folder.
        frame_template: file names, a ``str.format`` pattern with one integer field.
        fps: the rate of the original video; a folder does not record it.

    Raises:
        VideoReadError: the folder is missing, holds no frame matching the template, or its
            first frame cannot be read.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        frame_template: str = DEFAULT_FRAME_TEMPLATE,
        fps: float = 30.0,
    ) -> None:
        self.path = os.fspath(path)
        self.fps = float(fps)
        if not os.path.isdir(self.path):
            raise VideoReadError(self.path, "frame folder not found")
        pattern = template_to_regex(frame_template)
        numbered = []
        try:
            names = os.listdir(self.path)
        except OSError as error:
            raise VideoReadError(self.path, f"cannot list frame folder ({error})") from None
        for name in names:
            match = pattern.match(name)
            if match:
                numbered.append((int(match.group(1)), name))
        if not numbered:
            raise VideoReadError(
                self.path, f"frame folder holds no frame named like {frame_template!r}"
            )
        numbered.sort()
        self._files = [os.path.join(self.path, name) for _, name in numbered]
        self.num_frames = len(self._files)
        first = self._read(0, None)
        self.height, self.width = int(first.shape[0]), int(first.shape[1])

    def _read(self, index: int, size: tuple[int, int] | None) -> np.ndarray:
        import cv2  # optional dependency (the "video" extra)

        file = self._files[index]
        try:
            data = np.fromfile(file, dtype=np.uint8)
        except OSError as error:
            raise VideoReadError(file, f"cannot read frame ({error})") from None
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None:
            raise VideoReadError(file, "frame image cannot be decoded")
        if size is not None and (image.shape[0], image.shape[1]) != tuple(size):
            height, width = size
            shrinking = height * width < image.shape[0] * image.shape[1]
            image = cv2.resize(
                image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
            )
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def get_frames(
        self, indices: Sequence[int], size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        wanted = prepare_indices(indices, self.num_frames)
        if wanted.size == 0:
            height, width = size if size is not None else (self.height, self.width)
            return torch.empty((0, height, width, 3), dtype=torch.uint8)
        decoded = {int(i): self._read(int(i), size) for i in np.unique(wanted)}
        shapes = {image.shape for image in decoded.values()}
        if len(shapes) > 1:
            raise VideoReadError(self.path, f"frames differ in size: {sorted(shapes)}")
        return torch.from_numpy(np.stack([decoded[int(i)] for i in wanted]))


def frame_folder_path(folder: str | os.PathLike, index: int, template: str) -> Path:
    """The file of frame ``index`` (0-based) in a folder numbered from 1 by ``template``."""
    return Path(folder) / template.format(index + 1)
