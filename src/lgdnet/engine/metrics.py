"""Video-level classification metrics, score files and score fusion.

Everything here works on per-video score matrices (``(num_videos, num_classes)`` numpy arrays,
one row per video, e.g. softmax probabilities averaged over views as in Sec. 5.2), so the same
functions serve ``lgdnet eval``, ``lgdnet fuse`` and the tests. Plain numpy: no torch needed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lgdnet.errors import LgdnetError


def _check_scores(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    labels = np.asarray(labels).astype(np.int64)
    if scores.ndim != 2 or labels.ndim != 1 or scores.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected scores (N, K) and labels (N,), got {scores.shape} and {labels.shape}"
        )
    return scores, labels


def ranked_classes(scores: np.ndarray) -> np.ndarray:
    """Class indices of every row sorted from the highest score down.

    Ties go to the lower class index (a stable sort), so results never depend on the platform.

    Shape:
        scores ``(N, K)`` -> ``(N, K)`` integer indices.
    """
    return np.argsort(-np.asarray(scores), axis=1, kind="stable")


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of videos whose label is among the ``k`` highest scores.

    ``k`` is clipped to the number of classes, so top-5 on a 3-class problem is top-3 (= 1.0).

    Args:
        scores: ``(N, K)`` per-video scores.
        labels: ``(N,)`` true class indices.
        k: how many top classes count as a hit.
    """
    scores, labels = _check_scores(scores, labels)
    if scores.shape[0] == 0:
        return float("nan")
    k = max(1, min(int(k), scores.shape[1]))
    top = ranked_classes(scores)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``matrix[true, predicted]`` of videos.

    Args:
        predictions: ``(N,)`` predicted class indices.
        labels: ``(N,)`` true class indices.
        num_classes: K, the size of both axes.

    Shape:
        ``(K, K)`` int64, rows are true classes, columns predicted classes.
    """
    predictions = np.asarray(predictions, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    flat = labels * num_classes + predictions
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def mean_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 recall of every class, averaged over the classes that have at least one video.

    Classes absent from ``labels`` are left out rather than counted as 0, so the number does
    not depend on how many unused classes a label set carries.
    """
    scores, labels = _check_scores(scores, labels)
    if scores.shape[0] == 0:
        return float("nan")
    matrix = confusion_matrix(ranked_classes(scores)[:, 0], labels, scores.shape[1])
    per_class = matrix.sum(axis=1)
    present = per_class > 0
    return float((np.diag(matrix)[present] / per_class[present]).mean())


def classification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The numbers ``lgdnet eval`` reports: top-1, top-5, mean class accuracy, video count."""
    scores, labels = _check_scores(scores, labels)
    return {
        "top1": topk_accuracy(scores, labels, 1),
        "top5": topk_accuracy(scores, labels, 5),
        "mean_class_accuracy": mean_class_accuracy(scores, labels),
        "num_videos": int(scores.shape[0]),
    }


def plot_confusion_matrix(
    matrix: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "Confusion matrix",
) -> Path:
    """Draw a row-normalised confusion matrix with class names on both axes and save a PNG.

    The figure grows with the number of classes, so the names stay readable up to about
    100 classes; cell counts are written only when there is room.

    Args:
        matrix: ``(K, K)`` counts from :func:`confusion_matrix`.
        class_names: K names, in class-index order.
        path: where the PNG goes (its folder is created).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix, dtype=np.float64)
    num_classes = matrix.shape[0]
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)

    # about a quarter inch (18 pt) per class, so an 8-10 pt name fits beside every row
    side = float(np.clip(2.5 + 0.25 * num_classes, 5.0, 30.0))
    font = 10.0 if num_classes <= 30 else 8.0
    figure, axes = plt.subplots(figsize=(side + 1.5, side))
    image = axes.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of true class")
    ticks = np.arange(num_classes)
    axes.set_xticks(ticks)
    axes.set_yticks(ticks)
    axes.set_xticklabels(list(class_names), rotation=90, fontsize=font)
    axes.set_yticklabels(list(class_names), fontsize=font)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    if num_classes <= 20:
        for row in range(num_classes):
            for column in range(num_classes):
                if matrix[row, column] > 0:
                    colour = "white" if normalised[row, column] > 0.5 else "black"
                    axes.text(column, row, f"{int(matrix[row, column])}", ha="center",
                              va="center", fontsize=font, color=colour)
    figure.tight_layout()
    from lgdnet.atomic import atomic_write

    path = Path(path)
    try:
        atomic_write(path, lambda handle: figure.savefig(handle, dpi=100, format="png"))
    finally:
        plt.close(figure)
    return path


# --- score files and fusion ------------------------------------------------------------------


@dataclass
class ScoreFile:
    """Per-video scores of one evaluation, as saved in ``scores.npz``.

    Attributes:
        scores: ``(N, K)`` float scores (softmax probabilities averaged over views).
        labels: ``(N,)`` true class indices.
        video_ids: N video ids, unique.
        classes: K class names.
        path: the file it was read from (for error messages), if any.
    """

    scores: np.ndarray
    labels: np.ndarray
    video_ids: list[str]
    classes: list[str]
    path: str | None = None


def save_scores(path: str | os.PathLike, result: ScoreFile) -> Path:
    """Write ``scores.npz`` (scores, labels, video_ids, classes) atomically."""
    from lgdnet.atomic import atomic_write

    path = Path(path)
    atomic_write(path, lambda handle: np.savez(
        handle,
        scores=np.asarray(result.scores, dtype=np.float32),
        labels=np.asarray(result.labels, dtype=np.int64),
        video_ids=np.asarray(result.video_ids, dtype=str),
        classes=np.asarray(result.classes, dtype=str),
    ))
    return path


def load_scores(path: str | os.PathLike) -> ScoreFile:
    """Read a ``scores.npz`` written by :func:`save_scores` (no pickles are loaded).

    Raises:
        LgdnetError: the file is missing, unreadable or lacks one of the arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise LgdnetError(f"{path}: score file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"scores", "labels", "video_ids", "classes"} - set(data.files)
            if missing:
                raise LgdnetError(f"{path}: not an lgdnet score file (missing {sorted(missing)})")
            scores = data["scores"].astype(np.float64)
            labels = data["labels"].astype(np.int64)
            video_ids = [str(v) for v in data["video_ids"]]
            classes = [str(c) for c in data["classes"]]
    except LgdnetError:
        raise
    except Exception as error:  # zip, header and dtype errors alike
        raise LgdnetError(f"{path}: cannot read score file ({error})") from error
    if scores.shape != (len(video_ids), len(classes)) or labels.shape != (len(video_ids),):
        raise LgdnetError(
            f"{path}: inconsistent score file (scores {scores.shape}, {len(video_ids)} videos, "
            f"{len(classes)} classes)"
        )
    return ScoreFile(scores, labels, video_ids, classes, path=str(path))


def fuse_scores(score_matrices: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted average of aligned score matrices: ``sum_i w_i S_i / sum_i w_i``.

    This is the late fusion of two-stream networks (RGB and flow, Table 5): only the relative
    weights matter for the ranking; dividing by their sum keeps probabilities in [0, 1].

    Shape:
        every matrix ``(N, K)`` -> ``(N, K)``.
    """
    if len(score_matrices) != len(weights) or not score_matrices:
        raise ValueError(f"need one weight per score matrix, got {len(weights)} for "
                         f"{len(score_matrices)}")
    weights = [float(w) for w in weights]
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
    fused = sum(w * np.asarray(s, dtype=np.float64) for w, s in zip(weights, score_matrices))
    return fused / sum(weights)


def align_score_files(files: Sequence[ScoreFile]) -> list[ScoreFile]:
    """Reorder every file's rows to the first file's video order, after checking they match.

    Raises:
        LgdnetError: naming both files, when class names, the set of video ids or a video's
            label differ.
    """
    reference = files[0]
    aligned = [reference]
    for other in files[1:]:
        pair = f"{reference.path or 'first score file'} and {other.path or 'second score file'}"
        if other.classes != reference.classes:
            raise LgdnetError(f"{pair} have different classes "
                              f"({len(reference.classes)} vs {len(other.classes)} names)")
        if len(set(other.video_ids)) != len(other.video_ids):
            raise LgdnetError(f"{other.path}: repeated video ids")
        missing = set(reference.video_ids) ^ set(other.video_ids)
        if missing:
            example = sorted(missing)[:3]
            raise LgdnetError(f"{pair} cover different videos ({len(missing)} ids in only one, "
                              f"e.g. {example})")
        position = {video_id: row for row, video_id in enumerate(other.video_ids)}
        order = np.array([position[v] for v in reference.video_ids], dtype=np.int64)
        labels = other.labels[order]
        if not np.array_equal(labels, reference.labels):
            bad = reference.video_ids[int(np.flatnonzero(labels != reference.labels)[0])]
            raise LgdnetError(f"{pair} disagree on the label of video {bad!r}")
        aligned.append(ScoreFile(other.scores[order], labels, list(reference.video_ids),
                                 list(other.classes), other.path))
    return aligned
