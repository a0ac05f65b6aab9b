"""Shared machinery of the per-video extractors (frames, optical flow): resumable and
crash-tolerant.

:mod:`lgdnet.data.frame_extraction` and :mod:`lgdnet.data.flow_extraction` both turn every
video of an annotation list into a folder ``out_dir/<video_id>/`` of images. What they compute
per video differs; how a dataset run is organised does not, and lives here:

* :func:`atomic_folder`: a video's files go to a hidden ``.<name>.partial`` sibling that is
  renamed into place only when complete, so a folder that exists is finished;
* :func:`extract_videos`: skip finished folders (resuming), run the rest on a process pool
  that survives a crashed worker, collect bad videos instead of stopping, and write the
  rawframes list ``video_id count label`` (and ``classes.txt``) of the finished videos;
* :func:`exclusive`: the output folder's lock, refusing a second run on it;
* :func:`extraction_size`: the size videos are extracted at, as the RGB stream resizes.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lgdnet.errors import VideoReadError

#: ``extract_video(video_path, out_folder, config) -> count``; must be a module-level
#: function so that it pickles (by name) into the worker processes.
ExtractVideo = Callable[[str, str, Any], int]


def extraction_size(
    height: int, width: int, short_side: int | None = None, size: tuple[int, int] | None = None
) -> tuple[int, int]:
    """The ``(H, W)`` a video is extracted at: ``size`` if given, else the video resized so its
    shorter side is ``short_side`` (aspect kept, exactly as the RGB stream resizes), else
    the video's own size."""
    from lgdnet.data.transforms import short_side_size

    if size is not None:
        return int(size[0]), int(size[1])
    if not short_side:
        return height, width
    return short_side_size(height, width, short_side)


def partial_folder(final: Path) -> Path:
    """The hidden sibling a video is written into before it is renamed to ``final``."""
    # never matches a video id, and renaming it is atomic (same filesystem)
    return final.parent / f".{final.name}.partial"


@contextlib.contextmanager
def atomic_folder(out_folder: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty ``.<name>.partial`` folder, renamed to ``out_folder`` when the block ends
    normally and deleted when it raises, so an interrupted run never leaves a folder that looks
    finished. A stale ``.partial`` folder from an earlier run is discarded first.

    Args:
        out_folder: the final folder.
        replace: delete an existing ``out_folder`` (from another tool or an older run) before
            the rename; otherwise the rename fails on a non-empty one.
    """
    final = Path(out_folder)
    partial = partial_folder(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if partial.exists():  # left over by an interrupted run
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        yield partial
        if replace and final.exists():
            shutil.rmtree(final)
        os.rename(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all (:func:`lgdnet.atomic.write_text`)."""
    from lgdnet.atomic import write_text

    write_text(path, text)


def video_folder(out_dir: Path, video_id: str, what: str) -> Path:
    """``out_dir / video_id``, refusing ids that would escape ``out_dir`` or hide the folder.

    Raises:
        VideoReadError: the id is empty, absolute, has ``.``/``..``/hidden parts.
    """
    parts = video_id.replace("\\", "/").split("/")
    if not video_id or os.path.isabs(video_id) \
            or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise VideoReadError(video_id, f"video id cannot be used as a {what} folder name")
    return out_dir.joinpath(*parts)


@contextlib.contextmanager
def exclusive(out_dir: Path, what: str) -> Iterator[None]:
    """Hold the output folder's lock (:func:`lgdnet.locking.output_lock`) for the block;
    released by the OS even if we are killed.

    Raises:
        FolderLockedError: another process (named by PID and host) holds it.
    """
    from lgdnet.locking import output_lock

    with output_lock(out_dir, what=what):
        yield


@dataclass
class ExtractionReport:
    """What a dataset extraction did (extended by the frame and flow reports).

    Attributes:
        extracted: video ids extracted by this run.
        skipped: video ids whose folder already existed (finished by an earlier run).
        failed: ``(video_id, reason)`` of videos that could not be extracted.
    """

    extracted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class ExtractionOutcome(ExtractionReport):
    """What :func:`extract_videos` did, with the count (frames) of every finished id."""

    counts: dict[str, int] = field(default_factory=dict)


# (extract_video, video_id, video_path, out_folder, config)
_Task = tuple[ExtractVideo, str, str, str, Any]


def _init_worker() -> None:
    # one thread per process: the pool already uses every core, oversubscription only slows
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    # A killed run must not leave workers computing for minutes: once the parent is gone
    # (we are re-parented), stop; the video's .partial folder is discarded next run.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _extract_task(task: _Task) -> tuple[str, bool, Any]:
    """Worker body: ``(video_id, True, count)`` or ``(video_id, False, reason)``."""
    extract_video, video_id, video_path, out_folder, config = task
    try:
        return video_id, True, extract_video(video_path, out_folder, config)
    except VideoReadError as error:
        return video_id, False, str(error)
    except Exception as error:  # a bad video must never end the run (cv2.error, OSError, ...)
        return video_id, False, f"{video_path}: {type(error).__name__}: {error}"


def extract_videos(
    records: Sequence[Any],
    out_dir: Path,
    extract_video: ExtractVideo,
    config: Any,
    *,
    count_finished: Callable[[Path], int],
    workers: int,
    list_path: Path,
    classes: Sequence[str] | None,
    what: str,
    desc: str,
    progress: bool,
) -> ExtractionOutcome:
    """Run ``extract_video`` for every record into ``out_dir/<video_id>/``; resumable.

    Videos whose folder already exists are skipped (folders appear only complete when
    ``extract_video`` writes through :func:`atomic_folder`), so an interrupted run is
    continued by running it again. A video listed twice is extracted once. Bad videos are
    collected in :attr:`ExtractionOutcome.failed`, never raised. The rawframes list is written
    even when the run is interrupted.

    Args:
        records: :class:`~lgdnet.data.VideoRecord` s (``path``, ``label``, ``video_id``).
        out_dir: output root (exists).
        extract_video: ``(video_path, out_folder, config) -> count`` for one video; a
            module-level function (it is pickled by name into the workers).
        config: passed to ``extract_video``; picklable.
        count_finished: the count of an existing (finished) folder; a VideoReadError fails
            that video.
        workers: processes (>= 1); 1 extracts in this process.
        list_path: where to write the list ``video_id count label`` of the finished videos,
            in the order of ``records`` (label -1 for unlabelled records).
        classes: class names, written as ``classes.txt`` beside the list.
        what: what the folders hold (``"frame"``, ``"flow"``), for messages.
        desc: progress bar label.
        progress: show a tqdm progress bar.
    """
    from tqdm import tqdm

    outcome = ExtractionOutcome()
    bar = tqdm(total=len(records), desc=desc, unit="video", disable=not progress)
    tasks = _plan(records, out_dir, extract_video, config, count_finished, what, outcome, bar)

    def finish(result: tuple[str, bool, Any]) -> None:
        video_id, succeeded, value = result
        if succeeded:
            outcome.extracted.append(video_id)
            outcome.counts[video_id] = value
        else:
            outcome.failed.append((video_id, value))
        bar.update()
        bar.set_postfix(failed=len(outcome.failed), refresh=False)

    try:
        if workers == 1 or len(tasks) <= 1:
            for task in tasks:
                finish(_extract_task(task))
        else:
            _run_pool(tasks, workers, finish)
    finally:
        bar.close()
        write_rawframes_list(list_path, records, outcome.counts, classes)
    return outcome


def _plan(records: Sequence[Any], out_dir: Path, extract_video: ExtractVideo, config: Any,
          count_finished: Callable[[Path], int], what: str, outcome: ExtractionOutcome,
          bar: Any) -> list[_Task]:
    """The videos still to extract; finished ones go to ``outcome.skipped`` (and bad ids or
    unreadable existing folders to ``outcome.failed``) straight away."""
    tasks: list[_Task] = []
    seen: set[str] = set()
    for record in records:
        video_id = str(record.video_id)
        if video_id in seen:  # listed twice: extracted once
            bar.update()
            continue
        seen.add(video_id)
        try:
            folder = video_folder(out_dir, video_id, what)
        except VideoReadError as error:
            outcome.failed.append((video_id, str(error)))
            bar.update()
            continue
        if folder.is_dir():  # complete by construction: folders appear only by renaming
            try:
                outcome.counts[video_id] = count_finished(folder)
                outcome.skipped.append(video_id)
            except VideoReadError as error:
                outcome.failed.append((video_id, f"{error} (delete it to extract again)"))
            bar.update()
            continue
        tasks.append((extract_video, video_id, os.fspath(record.path), os.fspath(folder), config))
    return tasks


def _run_pool(tasks: list[_Task], workers: int,
              finish: Callable[[tuple[str, bool, Any]], None]) -> None:
    """Run tasks on a process pool, at most ``2 * workers`` in flight; a crashed worker (a
    segfault in a decoder) fails only the videos in flight and the pool is started again."""
    context = multiprocessing.get_context("spawn")  # fork after torch/OpenMP start can hang
    pending = list(reversed(tasks))
    while pending:
        with futures.ProcessPoolExecutor(workers, mp_context=context,
                                         initializer=_init_worker) as pool:
            in_flight: dict[futures.Future, _Task] = {}
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
                for _, video_id, video_path, _, _ in in_flight.values():
                    finish((video_id, False, f"{video_path}: worker process crashed "
                                             "(run again to retry)"))


def write_rawframes_list(list_path: Path, records: Sequence[Any], counts: dict[str, int],
                         classes: Sequence[str] | None) -> None:
    """The finished videos as a rawframes list ``video_id count label``, in the order of
    ``records``, each once (read by :func:`~lgdnet.data.load_annotations` with the output
    folder as root); ``classes.txt`` beside it when ``classes`` is given."""
    lines, written = [], set()
    for record in records:
        video_id = str(record.video_id)
        if video_id in counts and video_id not in written:
            written.add(video_id)
            label = -1 if record.label is None else int(record.label)
            lines.append(f"{video_id} {counts[video_id]} {label}\n")
    list_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(list_path, "".join(lines))
    if classes is not None:
        write_atomically(list_path.parent / "classes.txt", "".join(f"{name}\n" for name in classes))
