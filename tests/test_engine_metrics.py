"""Metrics, score files and fusion against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from lgdnet.engine.metrics import (
    ScoreFile,
    align_score_files,
    classification_metrics,
    confusion_matrix,
    fuse_scores,
    load_scores,
    mean_class_accuracy,
    plot_confusion_matrix,
    save_scores,
    topk_accuracy,
)
from lgdnet.errors import LgdnetError

# 4 videos, 3 classes. Rankings: v0 [0,1,2], v1 [2,1,0], v2 [1,0,2], v3 [0,2,1].
SCORES = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.1, 0.3, 0.6],
        [0.3, 0.5, 0.2],
        [0.5, 0.1, 0.4],
    ]
)
LABELS = np.array([0, 1, 1, 2])


def test_topk_accuracy_hand_computed():
    # top-1 hits: v0 (0), v2 (1) -> 2/4; top-2 adds v1 (1 is second) and v3 (2 is second).
    assert topk_accuracy(SCORES, LABELS, 1) == pytest.approx(0.5)
    assert topk_accuracy(SCORES, LABELS, 2) == pytest.approx(1.0)


def test_topk_clips_k_to_number_of_classes():
    assert topk_accuracy(SCORES, LABELS, 5) == pytest.approx(1.0)
    two_classes, all_zero = SCORES[:, :2], np.zeros(4, dtype=int)
    assert topk_accuracy(two_classes, all_zero, 1) == pytest.approx(0.5)  # v0, v3
    assert topk_accuracy(two_classes, all_zero, 5) == pytest.approx(1.0)


def test_topk_ties_go_to_lower_class_index():
    scores = np.array([[0.5, 0.5, 0.0]])
    assert topk_accuracy(scores, np.array([0]), 1) == 1.0
    assert topk_accuracy(scores, np.array([1]), 1) == 0.0


def test_mean_class_accuracy_hand_computed():
    # class 0: 1/1, class 1: v1 wrong, v2 right -> 1/2, class 2: 0/1 -> mean 0.5.
    assert mean_class_accuracy(SCORES, LABELS) == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    # top-1 is not mean class accuracy once classes are unbalanced.
    labels = np.array([0, 0, 0, 1])
    scores = np.eye(3)[[0, 0, 0, 0]]
    assert topk_accuracy(scores, labels, 1) == pytest.approx(0.75)
    # class 2 has no video and is left out: (1 + 0) / 2.
    assert mean_class_accuracy(scores, labels) == pytest.approx(0.5)


def test_confusion_matrix_rows_true_columns_predicted():
    matrix = confusion_matrix(np.array([0, 2, 1, 0]), LABELS, 3)
    expected = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(matrix, expected)


def test_classification_metrics_keys():
    metrics = classification_metrics(SCORES, LABELS)
    assert metrics == {
        "top1": pytest.approx(0.5),
        "top5": pytest.approx(1.0),
        "mean_class_accuracy": pytest.approx(0.5),
        "num_videos": 4,
    }


def test_fuse_scores_weighted_average():
    a = np.array([[1.0, 0.0], [0.2, 0.8]])
    b = np.array([[0.0, 1.0], [0.6, 0.4]])
    fused = fuse_scores([a, b], [1.0, 3.0])
    np.testing.assert_allclose(fused, [[0.25, 0.75], [0.5, 0.5]])
    # equal weights are the plain mean whatever their scale
    np.testing.assert_allclose(fuse_scores([a, b], [2, 2]), (a + b) / 2)
    with pytest.raises(ValueError):
        fuse_scores([a, b], [1.0])
    with pytest.raises(ValueError):
        fuse_scores([a, b], [0.0, 0.0])


def test_fusion_can_fix_a_stream():
    # stream A is wrong on video 1, stream B on video 0; fusion with the right weight fixes both
    a = np.array([[0.9, 0.1], [0.6, 0.4]])
    b = np.array([[0.45, 0.55], [0.1, 0.9]])
    labels = np.array([0, 1])
    assert topk_accuracy(a, labels, 1) == 0.5
    assert topk_accuracy(b, labels, 1) == 0.5
    assert topk_accuracy(fuse_scores([a, b], [1, 1]), labels, 1) == 1.0


def test_score_file_roundtrip_and_alignment(tmp_path):
    first = ScoreFile(SCORES, LABELS, ["a", "b", "c", "d"], ["x", "y", "z"])
    order = [2, 0, 3, 1]
    second = ScoreFile(SCORES[order] * 2, LABELS[order], ["c", "a", "d", "b"], ["x", "y", "z"])
    path_a = save_scores(tmp_path / "a" / "scores.npz", first)
    path_b = save_scores(tmp_path / "b" / "scores.npz", second)
    loaded_a, loaded_b = load_scores(path_a), load_scores(path_b)
    assert loaded_a.video_ids == ["a", "b", "c", "d"] and loaded_a.classes == ["x", "y", "z"]
    np.testing.assert_allclose(loaded_a.scores, SCORES, rtol=1e-6)
    aligned = align_score_files([loaded_a, loaded_b])
    np.testing.assert_allclose(aligned[1].scores, SCORES * 2, rtol=1e-6)
    np.testing.assert_array_equal(aligned[1].labels, LABELS)


def test_alignment_errors_name_both_files(tmp_path):
    first = ScoreFile(SCORES, LABELS, ["a", "b", "c", "d"], ["x", "y", "z"], path="run1.npz")
    other_videos = ScoreFile(SCORES, LABELS, ["a", "b", "c", "e"], ["x", "y", "z"], "run2.npz")
    with pytest.raises(LgdnetError, match=r"run1\.npz and run2\.npz cover different videos"):
        align_score_files([first, other_videos])
    other_classes = ScoreFile(SCORES, LABELS, ["a", "b", "c", "d"], ["x", "y", "w"], "run3.npz")
    with pytest.raises(LgdnetError, match=r"run3\.npz have different classes"):
        align_score_files([first, other_classes])
    other_labels = ScoreFile(SCORES, np.array([0, 1, 1, 1]), ["a", "b", "c", "d"],
                             ["x", "y", "z"], "run4.npz")
    with pytest.raises(LgdnetError, match="label of video 'd'"):
        align_score_files([first, other_labels])


def test_load_scores_errors_name_the_file(tmp_path):
    with pytest.raises(LgdnetError, match="missing.npz: score file not found"):
        load_scores(tmp_path / "missing.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(LgdnetError, match="corrupt.npz"):
        load_scores(corrupt)


def test_confusion_matrix_png(tmp_path):
    names = [f"class_{i:03d}" for i in range(100)]
    matrix = confusion_matrix(np.arange(100) % 97, np.arange(100), 100)
    path = plot_confusion_matrix(matrix, names, tmp_path / "plots" / "confusion.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # width and height from the IHDR chunk: large enough for 100 readable names
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 2000 and height >= 2000
