"""Multi-view video-level evaluation (Sec. 5.2, inference stage).

The paper predicts a video by averaging the scores of several views: 10 uniformly sampled
triples of frames for LGD-2D and 15 uniformly sampled 16-frame clips for LGD-3D. Here a view's
score is its softmax probability vector, and a video's score is the mean over its views.

Views are pushed through the network in chunks of at most ``views_per_chunk``, so peak
memory depends on the chunk size and not on the number of views. Under ``torchrun`` every rank
scores its own shard of the videos (no padding) and the per-video results are gathered and
deduplicated by dataset index, so the metrics are the same on any number of processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lgdnet.atomic import write_text
from lgdnet.engine.metrics import (
    ScoreFile,
    classification_metrics,
    confusion_matrix,
    plot_confusion_matrix,
    ranked_classes,
    save_scores,
)
from lgdnet.engine.runtime import autocast


def _chunks(views: torch.Tensor, views_per_chunk: int) -> Iterator[torch.Tensor]:
    if views_per_chunk < 1:
        raise ValueError(f"views_per_chunk must be at least 1, got {views_per_chunk}")
    for start in range(0, views.shape[0], views_per_chunk):
        yield views[start : start + views_per_chunk]


@torch.inference_mode()
def score_views(
    model: nn.Module,
    views: torch.Tensor,
    *,
    views_per_chunk: int = 8,
    precision: str = "fp32",
) -> torch.Tensor:
    """Video-level score: the softmax probabilities of all views, averaged (Sec. 5.2).

    Args:
        model: an LGD network in eval mode; ``model(x)`` are the class scores
            (stage 1: mean of the global and local logits; stage 2: combination classifier).
        views: all views of one video, on the model's device.
        views_per_chunk: the most views in one forward pass; bounds peak memory.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast).

    Shape:
        views ``(V, C, T, H, W)`` -> ``(num_classes,)`` float32 probabilities summing to 1.
    """
    total = None
    for chunk in _chunks(views, views_per_chunk):
        with autocast(views.device, precision):
            logits = model(chunk)
        probabilities = torch.softmax(logits.float(), dim=1).sum(dim=0)
        total = probabilities if total is None else total + probabilities
    return total / views.shape[0]


@torch.inference_mode()
def view_features(
    model: nn.Module,
    views: torch.Tensor,
    *,
    views_per_chunk: int = 8,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Local and global representations ``(x_L, g_L)`` of every view, computed in chunks.

    Shape:
        views ``(V, C, T, H, W)`` -> local ``(V, C_L, T', H', W')``, global ``(V, C_L)``,
        float32 on the views' device.
    """
    local_parts, global_parts = [], []
    for chunk in _chunks(views, views_per_chunk):
        with autocast(views.device, precision):
            local, global_ = model.forward_features(chunk)
        local_parts.append(local.float())
        global_parts.append(global_.float())
    return torch.cat(local_parts), torch.cat(global_parts)


@dataclass
class EvalResult:
    """Video-level results of :func:`evaluate`, in dataset order.

    Attributes:
        metrics: ``top1``, ``top5``, ``mean_class_accuracy`` (fractions in [0, 1]) and
            ``num_videos``.
        scores: ``(num_videos, num_classes)`` softmax probabilities averaged over views.
        labels: ``(num_videos,)`` true class indices.
        video_ids: one id per row of ``scores``.
        indices: the dataset index of every row.
    """

    metrics: dict[str, float]
    scores: np.ndarray
    labels: np.ndarray
    video_ids: list[str]
    indices: list[int] = field(default_factory=list)


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def evaluate(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    *,
    views_per_chunk: int = 8,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    progress: bool = True,
    num_workers: int = 0,
    description: str = "eval",
) -> EvalResult:
    """Score every video of a test-mode dataset with multi-view averaging (Sec. 5.2).

    Args:
        model: an LGD network (not DDP-wrapped); put in eval mode for the call and restored.
        dataset: yields ``{"video": (V, C, T, H, W), "label", "index", "video_id"}`` items
            (``VideoDataset(..., mode="test")``), all views of a video in one item or, with
            ``"chunk"`` and ``"views"`` keys (``VideoDataset(..., views_per_item=K)``), split
            over several items whose probabilities are summed per video; items that are
            ``None`` (skipped broken videos) are left out.
        views_per_chunk: the most views in one forward pass.
        device: where to run; defaults to the model's device (the model is moved there).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        progress: show a progress bar (main process only).
        num_workers: DataLoader workers decoding videos in parallel.

    Returns:
        The same :class:`EvalResult` on every rank, covering the whole dataset.
    """
    from tqdm.auto import tqdm

    from lgdnet.engine import distributed

    device = torch.device(device) if device is not None else _model_device(model)
    model.to(device)
    was_training = model.training
    model.eval()

    indices = list(distributed.shard_indices(len(dataset)))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices),
        batch_size=None,  # one item (all or a chunk of a video's views) per step
        num_workers=num_workers,
    )
    # (video index, chunk, label, video id, summed probabilities, number of views)
    parts: list[tuple[int, int, int, str, np.ndarray, int]] = []
    chunks = int(getattr(dataset, "chunks_per_video", 1))
    bar = tqdm(
        total=len(indices),
        desc=description,
        unit="video" if chunks == 1 else "chunk",
        disable=not (progress and distributed.is_main_process()),
        dynamic_ncols=True,
    )
    try:
        for item in loader:
            if item is not None:
                views = item["video"].to(device, non_blocking=True)
                scores = score_views(model, views, views_per_chunk=views_per_chunk,
                                     precision=precision)
                count = views.shape[0]
                parts.append((int(item["index"]), int(item.get("chunk", 0)), int(item["label"]),
                              str(item["video_id"]), (scores * count).cpu().numpy(), count))
            bar.update(1)
    finally:
        bar.close()
        model.train(was_training)

    if distributed.get_world_size() > 1:
        parts = [part for rank_parts in distributed.all_gather_object(parts) for part in rank_parts]
    bad_files_log = getattr(dataset, "bad_files_log", None)
    if bad_files_log and distributed.is_main_process():
        from lgdnet.data.dataset import tidy_bad_files_log

        tidy_bad_files_log(bad_files_log)  # one line per file, whatever the workers wrote
    # A chunk scored twice (a broken video's chunk replaced by the next video's) counts once.
    unique = {(part[0], part[1]): part for part in parts}
    videos: dict[int, list[Any]] = {}
    for index, _, label, video_id, summed, count in (unique[key] for key in sorted(unique)):
        video = videos.setdefault(index, [label, video_id, 0.0, 0])
        video[2] = video[2] + summed
        video[3] += count
    ordered = sorted(videos)
    num_classes = int(getattr(model, "num_classes", 0)) or (
        videos[ordered[0]][2].shape[0] if ordered else 0
    )
    scores = (np.stack([videos[i][2] / videos[i][3] for i in ordered]).astype(np.float32)
              if ordered else np.zeros((0, num_classes), dtype=np.float32))
    labels = np.array([videos[i][0] for i in ordered], dtype=np.int64)
    return EvalResult(
        metrics=classification_metrics(scores, labels),
        scores=scores,
        labels=labels,
        video_ids=[videos[i][1] for i in ordered],
        indices=ordered,
    )


def save_evaluation(
    result: EvalResult,
    out_dir: str | os.PathLike,
    classes: list[str],
    *,
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``scores.npz``, ``metrics.json`` (metrics with the full config) and
    ``confusion_matrix.png`` into ``out_dir``.

    Returns:
        The paths written, by kind (``scores``, ``metrics``, ``confusion_matrix``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "scores": save_scores(
            out_dir / "scores.npz",
            ScoreFile(result.scores, result.labels, result.video_ids, list(classes)),
        )
    }
    record = {"metrics": result.metrics, **(extra or {}), "classes": list(classes),
              "config": config}
    metrics_path = out_dir / "metrics.json"
    write_text(metrics_path, json.dumps(record, indent=2, default=str) + "\n")
    paths["metrics"] = metrics_path
    if len(result.labels):
        matrix = confusion_matrix(ranked_classes(result.scores)[:, 0], result.labels,
                                  len(classes))
        paths["confusion_matrix"] = plot_confusion_matrix(
            matrix, classes, out_dir / "confusion_matrix.png",
            title=f"Confusion matrix (top-1 {100 * result.metrics['top1']:.1f}%)",
        )
    return paths


def format_metrics(metrics: dict[str, float], num_classes: int | None = None) -> str:
    """One line for people: ``top-1 62.5%  top-5 100.0%  mean class 61.0%  (40 videos)``."""
    text = (f"top-1 {100 * metrics['top1']:.1f}%  top-5 {100 * metrics['top5']:.1f}%  "
            f"mean class {100 * metrics['mean_class_accuracy']:.1f}%  "
            f"({metrics['num_videos']} videos)")
    if num_classes:
        text += f"  chance {100 / num_classes:.1f}%"
    return text
