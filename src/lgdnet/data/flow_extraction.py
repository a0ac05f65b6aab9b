"""TV-L1 flow extraction for one video and for a whole annotation list, resumable.

The paper's flow stream uses "two-direction optical flow extracted by TV-L1 algorithm [50]"
(Sec. 5.3; Zach, Pock and Bischof 2007). Each video is decoded with
:func:`lgdnet.data.decoding.open_video`, resized as the RGB stream resizes (shorter side to
``short_side``, default 256, or an exact ``size``), converted to gray, passed pair by pair
through the TV-L1 solver (:class:`lgdnet.data.flow.TVL1Params`), quantised with
:func:`lgdnet.data.flow.quantize_flow` and written in the TSN/MMAction2 folder layout
described in :mod:`lgdnet.data.flow`. Extraction parallelises over videos (one process per
core, one OpenCV thread per process) and writes every video folder atomically.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import json
import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lgdnet.data.flow import (
    DEFAULT_BOUND,
    FLOW_INFO_FILE,
    FLOW_ZERO_LEVEL,
    TVL1_DEFAULT,
    TVL1Params,
    count_flow_frames,
    flow_frame_name,
    quantize_flow,
    to_gray,
)
from lgdnet.errors import ConfigError, VideoReadError


def extraction_size(
    height: int, width: int, short_side: int | None = None, size: tuple[int, int] | None = None
) -> tuple[int, int]:
    """The ``(H, W)`` flow is computed at: ``size`` if given, else the video resized so its
    shorter side is ``short_side`` (aspect kept, exactly as the RGB stream resizes), else
    the video's own size."""
    from lgdnet.data.transforms import short_side_size

    if size is not None:
        return int(size[0]), int(size[1])
    if not short_side:
        return height, width
    return short_side_size(height, width, short_side)


@dataclass(frozen=True)
class FlowExtractionConfig:
    """How flow is extracted and stored (saved as ``flow_info.json`` in the output folder).

    Args:
        short_side: resize frames so the shorter side has this length; ``None`` or 0 keeps
            the video's size. Ignored when ``size`` is given.
        size: exact ``(H, W)`` to resize frames to.
        bound: clipping bound in pixels at the extraction resolution.
        tvl1: TV-L1 parameters (:data:`TVL1_DEFAULT` or :data:`TVL1_FAST`).
        image_format: ``"jpg"`` (TSN/MMAction2 default, lossy) or ``"png"`` (lossless).
        jpeg_quality: JPEG quality, 0-100.
        chunk_frames: frames decoded at once, bounding memory on long videos.
    """

    short_side: int | None = 256
    size: tuple[int, int] | None = None
    bound: float = DEFAULT_BOUND
    tvl1: TVL1Params = field(default_factory=TVL1Params)
    image_format: str = "jpg"
    jpeg_quality: int = 95
    chunk_frames: int = 64

    def __post_init__(self) -> None:
        if not self.bound > 0:
            raise ConfigError(f"flow bound must be > 0, got {self.bound}")
        if self.image_format not in ("jpg", "png"):
            raise ConfigError(f"flow image format must be 'jpg' or 'png', got {self.image_format!r}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ConfigError(f"flow size must be (H, W) with positive sides, got {self.size}")
        if self.short_side is not None and self.short_side < 0:
            raise ConfigError(f"short side must be >= 0, got {self.short_side}")
        if self.chunk_frames < 2:
            raise ConfigError(f"chunk_frames must be >= 2, got {self.chunk_frames}")

    def describe(self) -> dict[str, Any]:
        """The settings that determine the stored values (compared when resuming)."""
        return {
            "layout": "flow_{x,y}_%05d." + self.image_format,
            "bound": float(self.bound),
            "zero_level": FLOW_ZERO_LEVEL,
            "short_side": self.short_side if self.size is None else None,
            "size": list(self.size) if self.size is not None else None,
            "image_format": self.image_format,
            "tvl1": asdict(self.tvl1),
        }


def _write_pair(folder: Path, index: int, pair: np.ndarray, config: FlowExtractionConfig) -> None:
    import cv2

    ext = "." + config.image_format
    options = [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality] if ext == ".jpg" else []
    for channel, component in enumerate("xy"):
        path = folder / flow_frame_name(component, index, ext)
        if not cv2.imwrite(os.fspath(path), np.ascontiguousarray(pair[..., channel]), options):
            raise OSError(f"cannot write {path}")


def _partial_folder(final: Path) -> Path:
    # a hidden sibling: never matches a video id, and renaming it is atomic (same filesystem)
    return final.parent / f".{final.name}.partial"


def extract_video_flow(
    video_path: str | os.PathLike, out_folder: str | os.PathLike, config: FlowExtractionConfig
) -> int:
    """Extract one video's flow into ``out_folder``, atomically.

    Frames go to a hidden ``.<name>.partial`` sibling that is renamed to ``out_folder`` only
    when every flow frame is written, so an interrupted run never leaves a folder that looks
    finished. A stale ``.partial`` folder from an earlier run is discarded first.

    Returns:
        the number of flow frames written (video frames - 1).

    Raises:
        VideoReadError: the video cannot be decoded or has fewer than 2 frames.
    """
    from lgdnet.data.decoding import open_video

    final = Path(out_folder)
    partial = _partial_folder(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        solver = config.tvl1.create()
        written = 0
        # one decoder thread: decoding costs little next to TV-L1, and workers fill the cores
        with open_video(video_path, num_threads=1) as source:
            if source.num_frames < 2:
                raise VideoReadError(video_path, f"{source.num_frames} frame(s); flow needs 2")
            size = extraction_size(source.height, source.width, config.short_side, config.size)
            previous: np.ndarray | None = None
            for start in range(0, source.num_frames, config.chunk_frames):
                stop = min(start + config.chunk_frames, source.num_frames)
                gray = to_gray(source.get_frames(range(start, stop), size=size))
                if previous is not None:  # carry the last frame over the chunk boundary
                    gray = np.concatenate([previous[None], gray])
                for t in range(len(gray) - 1):
                    flow = solver.calc(gray[t], gray[t + 1], None)
                    _write_pair(partial, written, quantize_flow(flow, config.bound), config)
                    written += 1
                previous = gray[-1]
        os.rename(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return written


@dataclass
class FlowReport:
    """What :func:`extract_flow_dataset` did.

    Attributes:
        extracted: video ids extracted by this run.
        skipped: video ids whose flow folder already existed.
        failed: ``(video_id, reason)`` of videos that could not be extracted.
        num_flow_frames: flow frames per finished (extracted or skipped) video id.
        list_path: the rawframes-style list written (``video_id num_flow_frames label``).
        seconds: wall time of the run.
    """

    extracted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    num_flow_frames: dict[str, int] = field(default_factory=dict)
    list_path: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _out_folder(out_dir: Path, video_id: str) -> Path:
    """``out_dir / video_id``, refusing ids that would escape ``out_dir`` or hide a folder."""
    parts = video_id.replace("\\", "/").split("/")
    if not video_id or os.path.isabs(video_id) or any(p in ("", ".", "..") for p in parts) \
            or any(p.startswith(".") for p in parts):
        raise VideoReadError(video_id, "video id cannot be used as a flow folder name")
    return out_dir.joinpath(*parts)


def _init_worker() -> None:
    # one thread per process: the pool already uses every core, oversubscription only slows
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    # A killed run must not leave workers computing flow for minutes: once the parent is
    # gone (we are re-parented), stop; the video's .partial folder is discarded next run.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _extract_task(task: tuple[str, str, str, FlowExtractionConfig]) -> tuple[str, bool, Any]:
    """Worker body: ``(video_id, True, num_flow_frames)`` or ``(video_id, False, reason)``."""
    video_id, video_path, out_folder, config = task
    try:
        return video_id, True, extract_video_flow(video_path, out_folder, config)
    except VideoReadError as error:
        return video_id, False, str(error)
    except Exception as error:  # a bad video must never end the run (cv2.error, OSError, ...)
        return video_id, False, f"{video_path}: {type(error).__name__}: {error}"


def _check_flow_info(out_dir: Path, config: FlowExtractionConfig) -> None:
    """Write ``flow_info.json``, or refuse to mix settings with flow already in ``out_dir``."""
    info_path = out_dir / FLOW_INFO_FILE
    settings = config.describe()
    if info_path.exists():
        try:
            existing = json.loads(info_path.read_text())
        except ValueError as error:
            raise ConfigError(f"{info_path}: not valid JSON ({error})") from error
        differing = sorted(k for k in settings if existing.get(k) != settings[k])
        if differing:
            raise ConfigError(
                f"{info_path}: flow in this folder was extracted with other settings "
                f"({', '.join(differing)} differ); use another --out or the same settings"
            )
        return
    from lgdnet import __version__

    _write_atomically(info_path, json.dumps({**settings, "lgdnet": __version__}, indent=2) + "\n")


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text)
    os.replace(temporary, path)


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir/.extract-flow.lock`` (released by the OS even if we are killed)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(out_dir / ".extract-flow.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"{out_dir}: another flow extraction is writing here") from None
        yield


def extract_flow_dataset(
    records: Sequence[Any],
    out_dir: str | os.PathLike,
    *,
    workers: int = 1,
    short_side: int | None = 256,
    size: tuple[int, int] | None = None,
    bound: float = DEFAULT_BOUND,
    tvl1: TVL1Params = TVL1_DEFAULT,
    image_format: str = "jpg",
    list_path: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
    progress: bool = True,
) -> FlowReport:
    """Extract TV-L1 flow for every record into ``out_dir/<video_id>/``; resumable.

    Videos whose folder already exists are skipped (folders appear only complete, see
    :func:`extract_video_flow`), so an interrupted run is continued by running it again with
    the same settings. Bad videos are collected in :attr:`FlowReport.failed`, never raised.
    A second run on the same ``out_dir`` while one is going raises ConfigError (a lock file).

    Args:
        records: :class:`~lgdnet.data.VideoRecord` s (``path``, ``label``, ``video_id``).
        out_dir: output root; also receives ``flow_info.json`` (the settings).
        workers: processes; 1 extracts in this process.
        short_side, size, bound, tvl1, image_format: see :class:`FlowExtractionConfig`.
        list_path: where to write the rawframes-style list ``video_id num_flow_frames label``
            of the finished videos (default ``out_dir/flow_list.txt``), readable by the
            list loader with ``root=out_dir``.
        classes: class names; written as ``classes.txt`` beside the list so the loader names
            the labels (and counts the classes) as the source annotations do.
        progress: show a tqdm progress bar.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    config = FlowExtractionConfig(short_side=short_side, size=size, bound=bound, tvl1=tvl1,
                                  image_format=image_format)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):  # a second run on out_dir would race over its folders
        _check_flow_info(out_dir, config)
        report = FlowReport(list_path=Path(list_path) if list_path else out_dir / "flow_list.txt")

        bar = tqdm(total=len(records), desc="extract-flow", unit="video", disable=not progress)
        tasks = _plan(records, out_dir, config, report, bar)

        def finish(result: tuple[str, bool, Any]) -> None:
            video_id, succeeded, value = result
            if succeeded:
                report.extracted.append(video_id)
                report.num_flow_frames[video_id] = value
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


def _plan(records: Sequence[Any], out_dir: Path, config: FlowExtractionConfig,
          report: FlowReport, bar: Any) -> list[tuple[str, str, str, FlowExtractionConfig]]:
    """The videos still to extract; finished ones go to ``report.skipped`` (and bad ids or
    unreadable existing folders to ``report.failed``) straight away."""
    tasks = []
    for record in records:
        video_id = str(record.video_id)
        try:
            folder = _out_folder(out_dir, video_id)
        except VideoReadError as error:
            report.failed.append((video_id, str(error)))
            bar.update()
            continue
        if folder.is_dir():  # complete by construction: folders appear only by renaming
            try:
                report.num_flow_frames[video_id] = count_flow_frames(folder)
                report.skipped.append(video_id)
            except VideoReadError as error:
                report.failed.append((video_id, f"{error} (delete it to extract again)"))
            bar.update()
            continue
        tasks.append((video_id, os.fspath(record.path), os.fspath(folder), config))
    return tasks


def _run_pool(tasks: list, workers: int, finish: Any) -> None:
    """Run tasks on a process pool, at most ``2 * workers`` in flight; a crashed worker (a
    segfault in a decoder) fails only the videos in flight and the pool is started again."""
    context = multiprocessing.get_context("spawn")  # fork after torch/OpenMP start can hang
    pending = list(reversed(tasks))
    while pending:
        with futures.ProcessPoolExecutor(workers, mp_context=context,
                                         initializer=_init_worker) as pool:
            in_flight: dict[futures.Future, tuple] = {}
            try:
                while pending or in_flight:
                    while pending and len(in_flight) < 2 * workers:
                        task = pending.pop()
                        in_flight[pool.submit(_extract_task, task)] = task
                    done, _ = futures.wait(in_flight, return_when=futures.FIRST_COMPLETED)
                    for future in done:
                        result = future.result()  # raises BrokenProcessPool if one died
                        del in_flight[future]
                        finish(result)
            except futures.process.BrokenProcessPool:
                for task in in_flight.values():
                    finish((task[0], False, f"{task[1]}: worker process crashed "
                                             "(run again to retry)"))


def _write_list(report: FlowReport, records: Sequence[Any], classes: Sequence[str] | None) -> None:
    """The finished videos as a rawframes-style list, in the order of ``records``."""
    lines = []
    for record in records:
        video_id = str(record.video_id)
        if video_id in report.num_flow_frames:
            label = -1 if record.label is None else int(record.label)
            lines.append(f"{video_id} {report.num_flow_frames[video_id]} {label}\n")
    assert report.list_path is not None
    report.list_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(report.list_path, "".join(lines))
    if classes is not None:
        _write_atomically(report.list_path.parent / "classes.txt", "".join(f"{c}\n" for c in classes))
