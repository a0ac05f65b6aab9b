"""Frame extraction: videos to folders of JPEGs in the TSN/MMAction2 layout, resumable.

Large datasets are often trained from pre-extracted frames (``out/<video_id>/img_00001.jpg``,
...), which :func:`lgdnet.data.open_video` reads like a video. Each video is decoded with
:func:`~lgdnet.data.open_video`, resized (shorter side to ``short_side``, default 256, or an
exact ``size``), encoded with OpenCV and written into a hidden ``.<name>.partial`` folder that
is renamed into place only when every frame is written: a folder that exists is complete, so
a second run skips it and an interrupted run is finished by running it again. Bad videos are
reported at the end and never stop the run. A rawframes list (``video_id num_frames label``)
and ``classes.txt`` are written beside the frames for the ``list`` annotation loader. The
machinery shared with flow extraction is :mod:`lgdnet.data.resumable_extraction`.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lgdnet.data.resumable_extraction import (
    ExtractionReport,
    atomic_folder,
    exclusive,
    extract_videos,
    extraction_size,
)
from lgdnet.errors import ConfigError

DEFAULT_TEMPLATE = "img_{:05d}.jpg"


@dataclass(frozen=True)
class FrameExtractionConfig:
    """How frames are written: size (``size`` wins over ``short_side``; neither keeps the
    video's size), file-name template (numbered from 1), JPEG quality, frames per decode call."""

    short_side: int | None = 256
    size: tuple[int, int] | None = None
    template: str = DEFAULT_TEMPLATE
    quality: int = 95
    chunk_frames: int = 64

    def __post_init__(self) -> None:
        from lgdnet.data.frame_folder import template_to_regex

        try:
            template_to_regex(self.template)
            self.template.format(1)
        except (ValueError, IndexError, KeyError) as error:
            raise ConfigError(f"frame template {self.template!r}: {error}") from None
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"JPEG quality must be in 1..100, got {self.quality}")
        if self.size is not None and min(self.size) < 1:
            raise ConfigError(f"size must be positive, got {self.size}")


def extract_video_frames(video_path: str | os.PathLike, out_folder: str | os.PathLike, config: FrameExtractionConfig) -> int:
    """Write every frame of one video into ``out_folder``, atomically; returns the frame count.

    Raises:
        VideoReadError: the video cannot be opened or decoded.
    """
    import cv2

    from lgdnet.data.decoding import open_video

    # replace: a folder from another tool or an older run is replaced whole
    with atomic_folder(out_folder, replace=True) as partial:
        options = [int(cv2.IMWRITE_JPEG_QUALITY), config.quality]
        with open_video(video_path, num_threads=1) as source:
            size = extraction_size(source.height, source.width, config.short_side, config.size)
            for start in range(0, source.num_frames, config.chunk_frames):
                stop = min(start + config.chunk_frames, source.num_frames)
                frames = source.get_frames(range(start, stop), size=size).numpy()
                for offset, frame in enumerate(frames):
                    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]), options)  # RGB -> BGR
                    if not ok:
                        raise OSError(f"OpenCV could not encode frame {start + offset} as JPEG")
                    (partial / config.template.format(start + offset + 1)).write_bytes(encoded.tobytes())
            count = source.num_frames
    return count


@dataclass
class FrameReport(ExtractionReport):
    """What :func:`extract_frames` did: ids extracted, skipped (already complete) and failed
    (``(video_id, reason)``), frames per finished id, the list written, and the wall time."""

    num_frames: dict[str, int] = field(default_factory=dict)
    list_path: Path | None = None
    seconds: float = 0.0


def _count_frames(folder: Path, template: str) -> int:
    from lgdnet.data.frame_folder import template_to_regex

    pattern = template_to_regex(template)
    return sum(1 for entry in os.scandir(folder) if pattern.match(entry.name))


def extract_frames(
    records: Sequence[Any],
    out_dir: str | os.PathLike,
    *,
    workers: int = 1,
    short_side: int | None = 256,
    size: tuple[int, int] | None = None,
    template: str = DEFAULT_TEMPLATE,
    quality: int = 95,
    list_path: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
    progress: bool = True,
) -> FrameReport:
    """Extract the frames of every record into ``out_dir/<video_id>/``; resumable.

    Args:
        records: :class:`~lgdnet.data.VideoRecord` s (``path``, ``label``, ``video_id``).
        out_dir: output root.
        workers: processes, one video each; 1 extracts in this process.
        short_side, size, template, quality: see :class:`FrameExtractionConfig`.
        list_path: where to write the rawframes list ``video_id num_frames label`` of the
            finished videos (default ``out_dir/rawframes.txt``), read by
            :func:`~lgdnet.data.load_annotations` with ``root=out_dir``.
        classes: class names, written as ``classes.txt`` beside the list.
        progress: show a tqdm progress bar.

    Returns:
        A :class:`FrameReport`; failed videos are listed there, never raised.

    Raises:
        FolderLockedError: another process is extracting into ``out_dir`` (the output
            folder is locked for the run, :func:`lgdnet.locking.output_lock`).
    """
    started = time.perf_counter()
    config = FrameExtractionConfig(short_side=short_side, size=size, template=template, quality=quality)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    list_file = Path(list_path) if list_path else out_dir / "rawframes.txt"
    # one run per output folder: two would delete each other's .partial folders
    with exclusive(out_dir, "frame output folder"):
        outcome = extract_videos(
            records, out_dir, extract_video_frames, config,
            count_finished=functools.partial(_count_frames, template=config.template),
            workers=workers, list_path=list_file, classes=classes, what="frame",
            desc="extract-frames", progress=progress)
    return FrameReport(outcome.extracted, outcome.skipped, outcome.failed, outcome.counts, list_file,
                       time.perf_counter() - started)
