"""TV-L1 flow extraction for one video and for a whole annotation list, resumable.

The paper's flow stream uses "two-direction optical flow extracted by TV-L1 algorithm [50]"
(Sec. 5.3; Zach, Pock and Bischof 2007). Each video is decoded with
:func:`lgdnet.data.decoding.open_video`, resized as the RGB stream resizes (shorter side to
``short_side``, default 256, or an exact ``size``), converted to gray, passed pair by pair
through the TV-L1 solver (:class:`lgdnet.data.flow.TVL1Params`), quantised with
:func:`lgdnet.data.flow.quantize_flow` and written in the TSN/MMAction2 folder layout
described in :mod:`lgdnet.data.flow`. Extraction parallelises over videos (one process per
core, one OpenCV thread per process) and writes every video folder atomically (the shared
machinery is :mod:`lgdnet.data.resumable_extraction`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
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
from lgdnet.data.resumable_extraction import (
    ExtractionReport,
    atomic_folder,
    exclusive,
    extract_videos,
    extraction_size,
    write_atomically,
)
from lgdnet.errors import ConfigError, VideoReadError


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

    with atomic_folder(out_folder) as partial:
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
    return written


@dataclass
class FlowReport(ExtractionReport):
    """What :func:`extract_flow_dataset` did: :class:`ExtractionReport` (``extracted``,
    ``skipped``, ``failed``, ``ok``) and

    Attributes:
        num_flow_frames: flow frames per finished (extracted or skipped) video id.
        list_path: the rawframes-style list written (``video_id num_flow_frames label``).
        seconds: wall time of the run.
    """

    num_flow_frames: dict[str, int] = field(default_factory=dict)
    list_path: Path | None = None
    seconds: float = 0.0


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
    from importlib.metadata import version  # the package's, without importing the models

    write_atomically(info_path, json.dumps({**settings, "lgdnet": version("lgdnet")}, indent=2) + "\n")


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
    A second run on the same ``out_dir`` while one is going raises FolderLockedError
    (:func:`lgdnet.locking.output_lock`), naming the first run's PID and host.

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
    started = time.perf_counter()
    config = FlowExtractionConfig(short_side=short_side, size=size, bound=bound, tvl1=tvl1,
                                  image_format=image_format)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    # a second run on out_dir would race over its folders
    with exclusive(out_dir, "flow output folder"):
        _check_flow_info(out_dir, config)
        list_file = Path(list_path) if list_path else out_dir / "flow_list.txt"
        outcome = extract_videos(
            records, out_dir, extract_video_flow, config, count_finished=count_flow_frames,
            workers=workers, list_path=list_file, classes=classes, what="flow",
            desc="extract-flow", progress=progress)
    return FlowReport(outcome.extracted, outcome.skipped, outcome.failed, outcome.counts,
                      list_file, time.perf_counter() - started)
