"""Frame extraction: videos to folders of JPEGs in the TSN/MMAction2 layout, resumable.

Large datasets are often trained from pre-extracted frames (``out/<video_id>/img_00001.jpg``,
...), which :func:`lgdnet.data.open_video` reads like a video. Each video is decoded with
:func:`~lgdnet.data.open_video`, resized (shorter side to ``short_side``, default 256, or an
exact ``size``), encoded with OpenCV and written into a hidden ``.<name>.partial`` folder that
is renamed into place only when every frame is written: a folder that exists is complete, so
a second run skips it and an interrupted run is finished by running it again. Bad videos are
reported at the end and never stop the run. A rawframes list (``video_id num_frames label``)
and ``classes.txt`` are written beside the frames for the ``list`` annotation loader.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lgdnet.errors import ConfigError, VideoReadError

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


def _output_size(height: int, width: int, config: FrameExtractionConfig) -> tuple[int, int]:
    from lgdnet.data.transforms import short_side_size

    if config.size is not None:
        return int(config.size[0]), int(config.size[1])
    if not config.short_side:
        return height, width
    return short_side_size(height, width, config.short_side)


def _partial_folder(final: Path) -> Path:
    # A hidden sibling: never taken for a video folder, and renamed atomically (same disk).
    return final.parent / f".{final.name}.partial"


def extract_video_frames(video_path: str | os.PathLike, out_folder: str | os.PathLike, config: FrameExtractionConfig) -> int:
    """Write every frame of one video into ``out_folder``, atomically; returns the frame count.

    Raises:
        VideoReadError: the video cannot be opened or decoded.
    """
    import cv2

    from lgdnet.data.decoding import open_video

    final = Path(out_folder)
    partial = _partial_folder(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if partial.exists():  # left over by an interrupted run
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        options = [int(cv2.IMWRITE_JPEG_QUALITY), config.quality]
        with open_video(video_path, num_threads=1) as source:
            size = _output_size(source.height, source.width, config)
            for start in range(0, source.num_frames, config.chunk_frames):
                stop = min(start + config.chunk_frames, source.num_frames)
                frames = source.get_frames(range(start, stop), size=size).numpy()
                for offset, frame in enumerate(frames):
                    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]), options)  # RGB -> BGR
                    if not ok:
                        raise OSError(f"OpenCV could not encode frame {start + offset} as JPEG")
                    (partial / config.template.format(start + offset + 1)).write_bytes(encoded.tobytes())
            count = source.num_frames
        if final.exists():  # a folder from another tool or an older run: replace it whole
            shutil.rmtree(final)
        os.rename(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return count


@dataclass
class FrameReport:
    """What :func:`extract_frames` did: ids extracted, skipped (already complete) and failed
    (``(video_id, reason)``), frames per finished id, the list written, and the wall time."""

    extracted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    num_frames: dict[str, int] = field(default_factory=dict)
    list_path: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _out_folder(out_dir: Path, video_id: str) -> Path:
    """``out_dir / video_id``, refusing ids that would leave ``out_dir`` or hide the folder."""
    parts = video_id.replace("\\", "/").split("/")
    if not video_id or os.path.isabs(video_id) or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise VideoReadError(video_id, "video id cannot be used as a frame folder name")
    return out_dir.joinpath(*parts)


def _count_frames(folder: Path, template: str) -> int:
    from lgdnet.data.frame_folder import template_to_regex

    pattern = template_to_regex(template)
    return sum(1 for entry in os.scandir(folder) if pattern.match(entry.name))


def _init_worker() -> None:
    # One thread per process: the pool already fills the cores.
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _extract_task(task: tuple[str, str, str, FrameExtractionConfig]) -> tuple[str, bool, Any]:
    """Worker body: ``(video_id, True, num_frames)`` or ``(video_id, False, reason)``."""
    video_id, video_path, out_folder, config = task
    try:
        return video_id, True, extract_video_frames(video_path, out_folder, config)
    except VideoReadError as error:
        return video_id, False, str(error)
    except Exception as error:  # one bad video must never end the run (cv2.error, OSError...)
        return video_id, False, f"{video_path}: {type(error).__name__}: {error}"


def _run_pool(tasks: list, workers: int, finish: Any) -> None:
    """Run tasks on ``workers`` processes; a crashed worker (a decoder segfault) fails only the
    videos in flight, and a fresh pool takes the rest."""
    context = multiprocessing.get_context("spawn")  # fork after torch/OpenMP start can hang
    pending = list(reversed(tasks))
    while pending:
        with futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
            in_flight: dict[futures.Future, tuple] = {}
            try:
                while pending or in_flight:
                    while pending and len(in_flight) < 2 * workers:
                        task = pending.pop()
                        in_flight[pool.submit(_extract_task, task)] = task
                    done, _ = futures.wait(in_flight, return_when=futures.FIRST_COMPLETED)
                    for future in done:
                        result = future.result()  # BrokenProcessPool if a worker died
                        del in_flight[future]
                        finish(result)
            except futures.process.BrokenProcessPool:
                for task in in_flight.values():
                    finish((task[0], False, f"{task[1]}: worker process crashed (run again to retry)"))


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
    """
    from tqdm import tqdm

    started = time.perf_counter()
    config = FrameExtractionConfig(short_side=short_side, size=size, template=template, quality=quality)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = FrameReport(list_path=Path(list_path) if list_path else out_dir / "rawframes.txt")
    bar = tqdm(total=len(records), desc="extract-frames", unit="video", disable=not progress)
    tasks, seen = [], set()
    for record in records:
        video_id = str(record.video_id)
        if video_id in seen:  # listed twice: extracted once
            bar.update()
            continue
        seen.add(video_id)
        try:
            folder = _out_folder(out_dir, video_id)
        except VideoReadError as error:
            report.failed.append((video_id, str(error)))
            bar.update()
            continue
        if folder.is_dir():  # folders appear only complete (see extract_video_frames)
            report.num_frames[video_id] = _count_frames(folder, config.template)
            report.skipped.append(video_id)
            bar.update()
        else:
            tasks.append((video_id, os.fspath(record.path), os.fspath(folder), config))

    def finish(result: tuple[str, bool, Any]) -> None:
        video_id, succeeded, value = result
        if succeeded:
            report.extracted.append(video_id)
            report.num_frames[video_id] = value
        else:
            report.failed.append((video_id, value))
        bar.update()
        bar.set_postfix(failed=len(report.failed), refresh=False)

    try:
        if workers == 1 or len(tasks) <= 1:
            for task in tasks:
                finish(_extract_task(task))
        else:
            _run_pool(tasks, workers, finish)
    finally:
        bar.close()
        _write_list(report, records, classes)
        report.seconds = time.perf_counter() - started
    return report


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _write_list(report: FrameReport, records: Sequence[Any], classes: Sequence[str] | None) -> None:
    """The finished videos as a rawframes list, in the order of ``records``, each once."""
    lines, written = [], set()
    for record in records:
        video_id = str(record.video_id)
        if video_id in report.num_frames and video_id not in written:
            written.add(video_id)
            lines.append(f"{video_id} {report.num_frames[video_id]} {int(record.label)}\n")
    assert report.list_path is not None
    report.list_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(report.list_path, "".join(lines))
    if classes is not None:
        _write_atomically(report.list_path.parent / "classes.txt", "".join(f"{name}\n" for name in classes))
