"""The video dataset: records -> sampled, transformed clip tensors, for training and testing.

One class serves both modes (Sec. 5.2):

- ``mode="train"``: one randomly placed clip (3D) or one random frame per segment (2D),
  random crop and flip. Item ``{"video": (C, T, H, W), "label", "index"}``.
- ``mode="test"``: every view of one video (15 clips / 10 triples, times 1 or 3 crops), so
  that scores can be averaged per video. Item ``{"video": (V, C, T, H, W), "label",
  "index", "video_id", "chunk", "views"}``; batch these with :func:`collate_views`. With
  ``views_per_item=K`` each video is split into items of at most K views (``"chunk"`` k
  holds views ``"views" = (start, stop)``; ``"index"`` stays the video's), so that the
  memory of one item does not grow with the number of views.

Bad input never kills a run and is never silent: with ``on_error="skip"`` a sample that
cannot be read is logged, recorded in :attr:`VideoDataset.bad_files` (and appended to
``bad_files_log``), and the next readable sample (index + 1, + 2, ...) is returned in its
place, so the substitution is deterministic. The ``"index"`` of an item is the index of the
sample actually returned.

Randomness depends only on ``(seed, epoch, index)`` (:func:`~lgdnet.data.sampling.sample_rng`):
batches are identical for any ``num_workers`` and under ``DistributedSampler``. Call
:meth:`VideoDataset.set_epoch` before each epoch (with ``persistent_workers=True`` the
workers keep the epoch they were started with, so leave it off or rebuild the loader).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from lgdnet.data import transforms as T
from lgdnet.data.decoding import DEFAULT_FRAME_TEMPLATE, VideoSource, open_video
from lgdnet.data.sampling import (
    SamplingSpec,
    expand_snippets,
    sample_rng,
    sample_test_indices,
    sample_train_indices,
)
from lgdnet.errors import VideoReadError

__all__ = ["VideoDataset", "collate_views", "tidy_bad_files_log"]

logger = logging.getLogger(__name__)

# Errors that a strange file can still provoke past the decoder's own checks (shapes, sizes):
# they are reported as a bad sample instead of killing a data-loader worker.
_SAMPLE_ERRORS = (OSError, ValueError, RuntimeError, IndexError, MemoryError, EOFError)


def _accepts_size(source: VideoSource) -> bool:
    try:
        return "size" in inspect.signature(source.get_frames).parameters
    except (TypeError, ValueError):
        return False


class VideoDataset(Dataset):
    """Videos as clip tensors, for training (one random view) or testing (all views).

    Args:
        records: objects with ``.path``, ``.label``, ``.video_id`` (and optionally
            ``.num_frames``), e.g. :class:`lgdnet.data.annotations.VideoRecord`.
        spec: how to sample and size frames (:class:`SamplingSpec`).
        mode: ``"train"`` or ``"test"``.
        on_error: ``"raise"`` the :class:`VideoReadError` of a bad sample, or ``"skip"`` it
            (log, record, substitute the next readable sample).
        modality: ``"rgb"`` (videos or frame folders) or ``"flow"`` (sources opened by
            :func:`lgdnet.data.flow.open_flow`, ``uint8`` ``(T, H, W, 2)`` frames).
        seed: base seed of the sampling and augmentation.
        bad_files_log: file that every skipped sample appends ``path<TAB>reason`` to.
        frame_template: file names inside frame folders.
        decode_threads: decoder threads per video; 0 lets FFmpeg choose; ``None`` (default)
            means 1 inside a data-loader worker (the workers already fill the cores) and 0
            in the main process.
        views_per_item: test mode: the most views in one item; 0 (default) puts all the
            views of a video in one item. Dataset index ``i`` is then chunk ``i % C`` of video
            ``i // C``, C = ceil(views / views_per_item); each chunk decodes only its frames.
    """

    def __init__(
        self,
        records: Sequence[Any],
        spec: SamplingSpec,
        mode: Literal["train", "test"] = "train",
        on_error: Literal["raise", "skip"] = "raise",
        modality: Literal["rgb", "flow"] = "rgb",
        seed: int = 0,
        bad_files_log: str | os.PathLike | None = None,
        frame_template: str = DEFAULT_FRAME_TEMPLATE,
        decode_threads: int | None = None,
        views_per_item: int = 0,
    ) -> None:
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if modality not in ("rgb", "flow"):
            raise ValueError(f"modality must be 'rgb' or 'flow', got {modality!r}")
        self.records = list(records)
        self.spec = spec
        self.mode = mode
        self.on_error = on_error
        self.modality = modality
        self.seed = int(seed)
        self.epoch = 0
        self.bad_files_log = os.fspath(bad_files_log) if bad_files_log is not None else None
        self.frame_template = frame_template
        self.decode_threads = decode_threads
        if views_per_item < 0:
            raise ValueError(f"views_per_item must be 0 (all) or positive, got {views_per_item}")
        self.num_views = spec.num_test_views * spec.test_crops  # per video, in test mode
        self.views_per_item = views_per_item if mode == "test" and views_per_item else self.num_views
        self.chunks_per_video = -(-self.num_views // self.views_per_item) if mode == "test" else 1
        # (path, reason) of every sample found bad in this process. DataLoader workers hold
        # copies of the dataset: use bad_files_log to collect them across workers.
        self.bad_files: list[tuple[str, str]] = []
        self._bad_index: dict[int, VideoReadError] = {}

    def __len__(self) -> int:
        return len(self.records) * self.chunks_per_video

    def set_epoch(self, epoch: int) -> None:
        """Draw different (yet reproducible) clips and augmentations in each epoch."""
        self.epoch = int(epoch)

    # -- items ----------------------------------------------------------------------------

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index, chunk = divmod(index, self.chunks_per_video)
        if self.on_error == "raise":
            return self._load(index, chunk)
        first_error: VideoReadError | None = None
        for offset in range(len(self.records)):
            candidate = (index + offset) % len(self.records)
            error = self._bad_index.get(candidate)
            if error is None:
                try:
                    return self._load(candidate, chunk)
                except VideoReadError as new_error:
                    error = new_error
                    self._record_bad(candidate, error)
            first_error = first_error or error
        assert first_error is not None
        raise VideoReadError(
            first_error.path,
            f"{first_error.reason}; and none of the {len(self.records)} samples could be read",
        )

    def _record_bad(self, index: int, error: VideoReadError) -> None:
        self._bad_index[index] = error
        self.bad_files.append((error.path, error.reason))
        logger.warning("skipping bad sample %d: %s: %s", index, error.path, error.reason)
        if self.bad_files_log is not None:
            from lgdnet.atomic import append_line

            reason = error.reason.replace("\t", " ").replace("\n", " ")
            # several workers (and a bad video met again as a neighbour's substitute) may
            # append the same file: tidy_bad_files_log leaves one line per file
            append_line(self.bad_files_log, f"{error.path}\t{reason}")

    def _open(self, path: str) -> VideoSource:
        if self.modality == "flow":
            from lgdnet.data.flow import open_flow  # only flow users need the flow module

            return open_flow(path)
        threads = self.decode_threads
        if threads is None:
            threads = 1 if get_worker_info() is not None else 0
        return open_video(path, frame_template=self.frame_template, num_threads=threads)

    def _load(self, index: int, chunk: int = 0) -> dict[str, Any]:
        record = self.records[index]
        path = os.fspath(record.path)
        views = (chunk * self.views_per_item, min((chunk + 1) * self.views_per_item, self.num_views))
        try:
            with self._open(path) as source:
                if self.mode == "train":
                    video = self._train_view(source, sample_rng(self.seed, self.epoch, index))
                else:
                    video = self._test_views(source, *views)
        except VideoReadError:
            raise
        except _SAMPLE_ERRORS as error:
            raise VideoReadError(path, f"{type(error).__name__}: {error}") from None
        # Unlabelled videos (label None) get -1, so that they still batch.
        label = -1 if record.label is None else int(record.label)
        item: dict[str, Any] = {"video": video, "label": label, "index": index}
        if self.mode == "test":
            item.update(video_id=str(record.video_id), chunk=chunk, views=views)
        return item

    # -- frame reading --------------------------------------------------------------------

    def _indices(self, source: VideoSource, rng: np.random.Generator | None) -> np.ndarray:
        """Frame indices of the train view ``(T,)`` or the test views ``(V, T)``; for stacked
        flow each entry becomes ``flow_stack`` consecutive frames (last axis)."""
        spec = self.spec
        stacked = self.modality == "flow" and spec.scheme == "segments"
        # Stacked snippets must start early enough to fit in the video.
        positions = source.num_frames - spec.flow_stack + 1 if stacked else source.num_frames
        positions = max(positions, 1)
        if rng is not None:
            indices = sample_train_indices(spec, positions, rng)
        else:
            indices = sample_test_indices(spec, positions)
        if stacked:
            indices = expand_snippets(indices, spec.flow_stack, source.num_frames, spec.pad)
        return indices

    def _read(
        self, source: VideoSource, indices: np.ndarray, size: tuple[int, int]
    ) -> torch.Tensor:
        flat = indices.reshape(-1).tolist()
        if _accepts_size(source):
            frames = source.get_frames(flat, size=size)
        else:
            frames = source.get_frames(flat)
        return T.resize_frames(frames, size)  # no-op when decoded at the right size

    def _finish(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalise (last, Sec. 5.2) and lay out as the model input ``(C, T, H, W)``."""
        if self.modality == "rgb":
            return T.normalize_rgb(frames)
        flow = T.normalize_flow(frames)
        if self.spec.scheme == "segments":
            return T.stack_flow_snippets(flow, self.spec.num_frames)
        return flow

    def _train_view(self, source: VideoSource, rng: np.random.Generator) -> torch.Tensor:
        spec = self.spec
        indices = self._indices(source, rng)
        frames = self._read(source, indices, spec.train_resize)
        frames = T.random_crop(frames, spec.crop_size, rng)
        if spec.horizontal_flip and rng.random() < 0.5:
            frames = T.flip_horizontal(frames, flow=self.modality == "flow")
        return self._finish(frames)

    def _test_views(self, source: VideoSource, start: int, stop: int) -> torch.Tensor:
        """Views ``start <= v < stop`` of the ``num_test_views x test_crops`` (clip-major),
        decoding only the frames of the clips they come from."""
        spec = self.spec
        first, last = start // spec.test_crops, (stop - 1) // spec.test_crops + 1
        indices = self._indices(source, None)[first:last]  # (V', T) or (V', T, L)
        size = T.short_side_size(source.height, source.width, spec.test_short_side)
        frames = self._read(source, indices, size)
        per_view = frames.reshape(last - first, -1, *frames.shape[1:])
        views = []
        for offset, view in enumerate(per_view):
            crops = [view] if spec.test_crops == 1 else T.three_crops(view)
            for crop_index, crop in enumerate(crops):
                if start <= (first + offset) * spec.test_crops + crop_index < stop:
                    views.append(self._finish(crop))
        return torch.stack(views)


def tidy_bad_files_log(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Rewrite a ``bad_files_log`` with one line per bad file, in the order first met, and
    return its ``(path, reason)`` pairs (DataLoader workers each append what they meet, so a
    file can be listed more than once)."""
    from pathlib import Path

    from lgdnet.atomic import write_text

    log = Path(path)
    if not log.is_file():
        return []
    seen: dict[str, str] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        name, _, reason = line.partition("\t")
        if name and name not in seen:
            seen[name] = reason
    write_text(log, "".join(f"{name}\t{reason}\n" for name, reason in seen.items()))
    return list(seen.items())


def collate_views(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch test items, which hold all views of one video each.

    Videos of different sizes (aspect ratios differ under fully convolutional testing)
    cannot be stacked, so ``"video"`` stays a list; labels and indices become tensors.

    Returns:
        ``{"video": list of (V, C, T, H, W), "label": (B,) int64, "index": (B,) int64,
        "video_id": list of str, "chunk": (B,) int64, "views": list of (start, stop)}``.
    """
    return {
        "video": [item["video"] for item in batch],
        "label": torch.tensor([item["label"] for item in batch], dtype=torch.long),
        "index": torch.tensor([item["index"] for item in batch], dtype=torch.long),
        "video_id": [item["video_id"] for item in batch],
        "chunk": torch.tensor([item.get("chunk", 0) for item in batch], dtype=torch.long),
        "views": [tuple(item.get("views", (0, item["video"].shape[0]))) for item in batch],
    }
