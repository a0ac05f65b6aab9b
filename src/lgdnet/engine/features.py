"""Write the local and global representations of a list of videos (Sec. 5.6).

The paper uses the global representation ``g_L`` of a trained LGD-3D as a video descriptor
(fine-tuned on UCF101/HMDB51) and the local map ``x_L`` for ROI-pooled action detection.
:func:`extract_features` writes both for every video of a list:

* ``OUT/<video_id>.npz`` per video (sub-folders follow the id, e.g.
  ``OUT/videos/approach/approach_0003.npz``): a plain NumPy archive, read with
  ``numpy.load(path)`` (no pickled objects, so ``allow_pickle=False`` works) and in PyTorch
  with ``torch.from_numpy``, without lgdnet. It holds the arrays asked for (``outputs``):
  ``global`` (g_L, float32 ``(C,)``), ``local`` (x_L, float32 ``(C, T', H', W')``, or pooled
  as ``pooling`` says) and ``local_pooled`` (P(x_L) of Eq. 6, float32 ``(C,)``), plus
  ``label`` (int64) and ``video_id`` (a string). Views are averaged unless
  ``per_view=True`` (then a leading axis V).
* ``OUT/manifest.json``: classes, checkpoint, sampling, pooling, the arrays and their shapes,
  and one row per video (id, file, label), plus the videos that could not be read.

Each file is written atomically and finished files are skipped, so an interrupted run
continues where it stopped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from lgdnet.engine.evaluate import view_features
from lgdnet.errors import LgdnetError, VideoReadError

POOLINGS = ("none", "mean", "time")
#: The arrays a feature file can hold (see the module docstring).
OUTPUTS = ("global", "local", "local_pooled")


def pool_local(local: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool a local map over space-time (``"mean"``: P(x_L) of Eq. 6) or time only.

    Shape:
        ``(..., C, T, H, W)`` -> ``"none"``: unchanged, ``"mean"``: ``(..., C)``,
        ``"time"``: ``(..., C, H, W)``.
    """
    if pooling == "none":
        return local
    if pooling == "mean":
        return local.mean((-3, -2, -1))
    if pooling == "time":
        return local.mean(-3)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def feature_file(out_dir: str | os.PathLike, video_id: str) -> Path:
    """``OUT/<video_id>.npz``; ids with ``..`` or absolute parts are flattened to stay inside."""
    parts = [p for p in PurePosixPath(str(video_id).replace("\\", "/")).parts
             if p not in ("/", "", ".", "..")]
    name = "/".join(parts) if parts else "video"
    return Path(out_dir) / f"{name}.npz"


@dataclass
class FeatureSummary:
    """What :func:`extract_features` did."""

    written: int = 0
    skipped_existing: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (video path, reason)
    manifest: Path | None = None


class _Items(torch.utils.data.Dataset):
    """Test items of the videos still to do; a bad video becomes an error entry instead of
    being replaced by its neighbour (which would file features under the wrong id)."""

    def __init__(self, dataset: Any, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict[str, Any]:
        index = self.indices[position]
        try:
            return self.dataset[index]
        except VideoReadError as error:
            return {"index": index, "error": str(error)}


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from lgdnet.atomic import atomic_write

    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def extract_features(
    predictor: Any,
    records: list[Any],
    out_dir: str | os.PathLike,
    *,
    pooling: str = "none",
    per_view: bool = False,
    num_workers: int = 0,
    progress: bool = True,
    classes: list[str] | None = None,
    outputs: tuple[str, ...] = ("local", "global"),
) -> FeatureSummary:
    """Compute and save ``(x_L, g_L)`` for every record; resumable.

    Args:
        predictor: a :class:`~lgdnet.engine.predict.Predictor` (model, sampling, device).
        records: ``VideoRecord``-like objects (``path``, ``label``, ``video_id``).
        out_dir: where the ``.npz`` files and ``manifest.json`` go.
        pooling: local map pooling, one of :data:`POOLINGS` (see :func:`pool_local`).
        per_view: keep one entry per test view instead of averaging the views.
        num_workers: DataLoader processes decoding videos.
        progress: show a progress bar.
        classes: class names of the records' labels, for the manifest.
        outputs: which arrays each file holds, from :data:`OUTPUTS`: ``"global"`` (g_L),
            ``"local"`` (x_L, pooled as ``pooling`` says), ``"local_pooled"`` (P(x_L)).

    Shape:
        saved ``global``: ``(C_L,)`` or ``(V, C_L)`` per view; ``local``: ``(C_L, T', H', W')``
        pooled as asked, with a leading ``V`` per view.

    Raises:
        FolderLockedError: another process writes features into ``out_dir``.
        LgdnetError: ``out_dir`` is a file, or the list repeats a video id.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if not outputs or any(name not in OUTPUTS for name in outputs):
        raise ValueError(f"outputs must be a non-empty subset of {OUTPUTS}, got {outputs!r}")
    from lgdnet.locking import output_lock

    out_dir = Path(out_dir)
    with output_lock(out_dir, what="--out"):  # one run per folder
        return _extract_features(predictor, records, out_dir, pooling=pooling,
                                 per_view=per_view, num_workers=num_workers,
                                 progress=progress, classes=classes, outputs=tuple(outputs))


def _extract_features(predictor: Any, records: list[Any], out_dir: Path, *, pooling: str,
                      per_view: bool, num_workers: int, progress: bool,
                      classes: list[str] | None, outputs: tuple[str, ...]) -> FeatureSummary:
    from tqdm.auto import tqdm

    files = [feature_file(out_dir, r.video_id) for r in records]
    if len(set(files)) != len(files):
        raise LgdnetError(f"{out_dir}: the list has repeated video ids; their feature files "
                          "would overwrite each other")
    todo = [i for i, path in enumerate(files) if not path.is_file()]
    summary = FeatureSummary(skipped_existing=len(records) - len(todo))
    dataset = predictor.dataset(records, on_error="raise")
    loader = torch.utils.data.DataLoader(_Items(dataset, todo), batch_size=None,
                                         num_workers=num_workers)
    bar = tqdm(total=len(records), initial=summary.skipped_existing, desc="features",
               unit="video", disable=not progress, dynamic_ncols=True)
    shapes: dict[str, list[int]] = {}
    try:
        for item in loader:
            index = int(item["index"])
            if "error" in item:
                summary.failed.append((str(records[index].path), item["error"]))
            else:
                local, global_ = view_features(
                    predictor.model, item["video"].to(predictor.device),
                    views_per_chunk=predictor.views_per_chunk, precision=predictor.precision,
                )
                if not per_view:
                    local, global_ = local.mean(0), global_.mean(0)
                arrays = {"global": global_, "local": pool_local(local, pooling),
                          "local_pooled": pool_local(local, "mean")}
                arrays = {name: arrays[name].float().cpu().numpy() for name in outputs}
                shapes = {name: list(value.shape) for name, value in arrays.items()}
                _save_npz(files[index], {
                    **arrays, "label": np.int64(records[index].label),
                    "video_id": np.str_(records[index].video_id),
                })
                summary.written += 1
            bar.update(1)
    finally:
        bar.close()

    done = [i for i, path in enumerate(files) if path.is_file()]
    if not shapes and done:  # nothing new this time: describe the files already there
        with np.load(files[done[0]]) as data:
            shapes = {name: list(data[name].shape) for name in OUTPUTS if name in data.files}
    manifest = {
        "checkpoint": getattr(predictor, "checkpoint", None),
        "classes": list(classes) if classes is not None else list(predictor.classes),
        "views": predictor.num_views, "per_view": per_view, "pooling": pooling,
        "outputs": list(outputs), "shapes": shapes or None,
        "format": "one NumPy .npz per video (numpy.load; torch.from_numpy), float32 arrays "
                  "named by 'outputs', int64 'label', str 'video_id'",
        "videos": [{"video_id": records[i].video_id, "file": str(files[i].relative_to(out_dir)),
                    "label": int(records[i].label)} for i in done],
        "failed": [{"path": path, "reason": reason} for path, reason in summary.failed],
        "config": getattr(predictor, "config", None),
    }
    summary.manifest = out_dir / "manifest.json"
    from lgdnet.atomic import write_text

    write_text(summary.manifest, json.dumps(manifest, indent=2, default=str) + "\n")
    return summary
