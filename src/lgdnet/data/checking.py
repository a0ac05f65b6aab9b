"""Dataset checking: find every bad entry of an annotation list before a run meets it.

:func:`check_dataset` reads the annotations collecting (not raising) malformed lines, then
opens every listed video in parallel and reports, in one pass, each problem a training run
would otherwise hit one epoch at a time: a list naming no video at all, malformed lines and
unknown labels, duplicate
entries, missing files, files that cannot be decoded (empty, truncated, not a video, no video
stream, corrupt frames: the :class:`~lgdnet.errors.VideoReadError` reason), videos shorter
than a clip, and rawframes lists whose frame counts disagree with the folder.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from lgdnet.data.annotations import VideoRecord, load_annotations
from lgdnet.errors import VideoReadError

# Problem kinds, in the order the summary lists them.
KINDS = ("empty", "annotation", "duplicate", "missing", "unreadable", "too-short", "frame-count")


@dataclass(frozen=True)
class Problem:
    """One problem: its kind (one of :data:`KINDS`), the file, what is wrong, and where the
    entry is listed (``annotation_file:line``)."""

    kind: str
    path: str
    detail: str
    where: str = ""

    def __str__(self) -> str:
        if self.kind == "annotation":
            return f"{self.kind:<11} {self.where or self.path}: {self.detail}"
        where = f" ({self.where})" if self.where else ""
        return f"{self.kind:<11} {self.path}{where}: {self.detail}"


@dataclass
class CheckReport:
    """What :func:`check_dataset` found. ``ok`` is true only when nothing is wrong."""

    source: str
    num_entries: int
    num_videos_checked: int
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        counted = Counter(problem.kind for problem in self.problems)
        return {kind: counted[kind] for kind in KINDS if counted[kind]}

    def summary(self) -> str:
        head = (f"{self.source}: {self.num_entries} entries, {self.num_videos_checked} videos checked "
                f"in {self.seconds:.1f} s: ")
        if self.ok:
            return head + "no problems"
        counts = ", ".join(f"{n} {kind}" for kind, n in self.counts().items())
        return head + f"{len(self.problems)} problems ({counts})"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "ok": self.ok, "num_entries": self.num_entries,
                "num_videos_checked": self.num_videos_checked, "counts": self.counts(),
                "seconds": round(self.seconds, 3), "problems": [asdict(p) for p in self.problems]}


def check_video(record: VideoRecord, min_frames: int = 16, decode: bool = True) -> list[tuple[str, str]]:
    """Check one video; returns ``(kind, detail)`` pairs, empty when the video is fine.

    Args:
        record: the entry (a file, or a frame folder with ``num_frames`` from a rawframes list).
        min_frames: fewer frames than this is a ``too-short`` problem (a clip needs them).
        decode: also decode the first, middle and last frames (catches corrupt streams whose
            header reads fine); ``False`` only opens the video.
    """
    from lgdnet.data.decoding import open_video

    if not os.path.exists(record.path):
        return [("missing", "no such file or folder")]
    problems = []
    try:
        with open_video(record.path) as video:
            count = video.num_frames
            if decode and count > 0:
                video.get_frames(sorted({0, count // 2, count - 1}))
    except VideoReadError as error:
        return [("unreadable", error.reason)]
    except Exception as error:  # a checker must report, never crash, whatever the decoder raises
        return [("unreadable", f"{type(error).__name__}: {error}")]
    if count < min_frames:
        problems.append(("too-short", f"{count} frames, fewer than the {min_frames} required"))
    if record.num_frames is not None and record.num_frames != count:
        problems.append(("frame-count", f"the list says {record.num_frames} frames, the video has {count}"))
    return problems


def check_dataset(
    annotations: str | os.PathLike,
    root: str | os.PathLike | None = None,
    format: str = "auto",
    split: int = 1,
    subset: str = "train",
    classes: list[str] | str | os.PathLike | None = None,
    workers: int | None = None,
    min_frames: int = 16,
    decode: bool = True,
    progress: bool = True,
) -> CheckReport:
    """Check every entry of an annotation list and every video it names.

    Args:
        annotations, root, format, split, subset, classes: as :func:`load_annotations`.
        workers: threads opening videos in parallel (default: 2 per CPU, at most 16); the
            decoders release the GIL, and threads keep the start-up cost nil.
        min_frames: videos with fewer frames are reported as ``too-short``.
        decode: decode three frames of every video, not only open it.
        progress: show a tqdm progress bar.

    Returns:
        A :class:`CheckReport`: malformed lines first, then duplicates, then the videos'
        problems in list order.

    Raises:
        AnnotationError: the annotation file itself cannot be used (missing, no header, no
            ``classInd.txt``...). Bad lines are reported, not raised.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    loaded = load_annotations(annotations, root=root, format=format, split=split, subset=subset,
                              classes=classes, errors="collect")
    problems = [Problem("annotation", error.path, error.reason,
                        f"{error.path}:{error.line}" if error.line is not None else error.path)
                for error in loaded.errors]
    if not loaded.records and not loaded.errors:  # nothing to train on is a problem too
        problems.append(Problem("empty", loaded.source,
                                f"no videos listed (subset {subset!r}): a run would train on nothing"))
    origins = loaded.origins or [loaded.source] * len(loaded.records)

    # Duplicates: the same file (or the same id, which would share an output folder) twice.
    unique: list[tuple[VideoRecord, str]] = []
    first_seen: dict[str, str] = {}
    for record, origin in zip(loaded.records, origins):
        keys = (f"path:{os.path.normpath(os.path.abspath(record.path))}", f"id:{record.video_id}")
        repeated = next((first_seen[key] for key in keys if key in first_seen), None)
        if repeated is not None:
            problems.append(Problem("duplicate", record.path, f"already listed at {repeated}", origin))
            continue
        for key in keys:
            first_seen[key] = origin
        unique.append((record, origin))

    workers = workers if workers is not None else min(16, 2 * (os.cpu_count() or 1))
    bar = tqdm(total=len(unique), desc="check-data", unit="video", disable=not progress)
    found: list[list[tuple[str, str]]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for result in pool.map(lambda item: check_video(item[0], min_frames, decode), unique):
            found.append(result)
            bar.update()
            if result:
                bar.set_postfix(problems=len(problems) + sum(map(len, found)), refresh=False)
    bar.close()
    for (record, origin), result in zip(unique, found):
        problems.extend(Problem(kind, record.path, detail, origin) for kind, detail in result)
    return CheckReport(loaded.source, len(loaded.records) + len(loaded.errors), len(unique), problems,
                       time.perf_counter() - started)
