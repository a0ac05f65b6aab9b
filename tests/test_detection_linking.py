"""Tube linking and trimming (Saha et al., BMVC 2016) on synthetic videos with known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lgdnet.detection import (
    LinkingConfig,
    box_iou,
    link_paths,
    link_video,
    link_videos,
    trim_paths,
)
from lgdnet.errors import ConfigError, DetectionDataError

# Two objects over 20 frames: A moves right 3 px a frame, B moves down 3 px a frame, far apart;
# a third box C jumps around at random (a distractor). Each frame lists them in a shuffled
# order, so the linker cannot succeed by reading the same index in every frame.
NUM_FRAMES = 20


def two_object_video(seed: int = 0, score_a=None, score_b=None):
    rng = np.random.default_rng(seed)
    score_a = np.full((NUM_FRAMES, 2), [0.9, 0.02]) if score_a is None else score_a
    score_b = np.full((NUM_FRAMES, 2), [0.05, 0.8]) if score_b is None else score_b
    boxes, scores, where_a, where_b = [], [], [], []
    for t in range(NUM_FRAMES):
        a = [10 + 3 * t, 10, 40 + 3 * t, 40]
        b = [200, 10 + 3 * t, 230, 40 + 3 * t]
        x, y = rng.uniform(100, 180, 2)
        c = [x, y, x + 20, y + 20]
        order = rng.permutation(3)  # order[i] = which object sits at row i
        rows = [(a, score_a[t]), (b, score_b[t]), (c, [0.3, 0.3])]
        boxes.append(np.array([rows[o][0] for o in order], dtype=np.float64))
        scores.append(np.array([rows[o][1] for o in order], dtype=np.float64))
        where_a.append(int(np.flatnonzero(order == 0)[0]))
        where_b.append(int(np.flatnonzero(order == 1)[0]))
    return boxes, scores, np.array(where_a), np.array(where_b)


def test_linker_recovers_each_object_path():
    boxes, scores, where_a, where_b = two_object_video()
    paths = link_paths(boxes, scores, iou_weight=1.0, max_paths=2)
    assert paths.shape == (2, 2, NUM_FRAMES)  # (classes, paths, frames)
    np.testing.assert_array_equal(paths[0, 0], where_a)  # class 0 scores A highest
    np.testing.assert_array_equal(paths[1, 0], where_b)  # class 1 scores B highest


def test_overlap_term_alone_keeps_paths_on_their_objects():
    # Equal scores everywhere: the energy is a constant plus lambda * sum IoU, so each path
    # must follow one object (consecutive IoU 0.8-0.9) rather than jump (IoU 0).
    flat = np.full((NUM_FRAMES, 2), 0.5)
    boxes, scores, where_a, where_b = two_object_video(1, flat, flat)
    scores = [np.full_like(s, 0.5) for s in scores]
    paths = link_paths(boxes, scores, max_paths=2)
    for c in range(2):
        found = {tuple(paths[c, 0]), tuple(paths[c, 1])}
        assert found == {tuple(where_a), tuple(where_b)}
    assert link_paths(boxes, scores, max_paths=9).shape[1] == 3  # 3 boxes a frame: 3 paths


def energy(boxes, scores, path, lam):
    """Saha et al.'s path energy, summed edge by edge."""
    return sum(
        scores[t][path[t]] + scores[t + 1][path[t + 1]]
        + lam * box_iou(boxes[t][path[t]], boxes[t + 1][path[t + 1]])[0, 0]
        for t in range(len(boxes) - 1)
    )


@pytest.mark.parametrize("seed", range(6))
def test_viterbi_equals_exhaustive_search(seed):
    # 4 frames x 3 boxes, 2 classes: all 3^4 = 81 paths enumerated. The first path is the best
    # one; the second the best among the paths that share no box with the first.
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 20, (4, 3, 2))
    boxes = [np.concatenate([p, p + rng.uniform(5, 25, (3, 2))], axis=1) for p in xy]
    scores = [rng.random((3, 2)) for _ in range(4)]
    lam = float(rng.uniform(0.5, 2.0))
    paths = link_paths(boxes, scores, iou_weight=lam, max_paths=2)
    for c in range(2):
        class_scores = [s[:, c] for s in scores]
        every = list(itertools.product(range(3), repeat=4))
        best = max(energy(boxes, class_scores, p, lam) for p in every)
        assert energy(boxes, class_scores, paths[c, 0], lam) == pytest.approx(best)
        rest = [p for p in every if all(p[t] != paths[c, 0, t] for t in range(4))]
        second = max(energy(boxes, class_scores, p, lam) for p in rest)
        assert energy(boxes, class_scores, paths[c, 1], lam) == pytest.approx(second)


def label_energy(scores, labels, alpha):
    unary = sum(s if lab else 1 - s for s, lab in zip(scores, labels))
    return unary - alpha * sum(labels[t] != labels[t - 1] for t in range(1, len(labels)))


@pytest.mark.parametrize("seed", range(4))
def test_trimming_equals_exhaustive_search(seed):
    rng = np.random.default_rng(seed)
    scores, alpha = rng.random(8), float(rng.uniform(0.0, 1.0))
    best = max(label_energy(scores, lab, alpha) for lab in itertools.product([0, 1], repeat=8))
    assert label_energy(scores, trim_paths(scores, alpha), alpha) == pytest.approx(best)


def test_trimming_removes_low_frames_unless_the_penalty_forbids_it():
    scores = np.array([0.9] * 5 + [0.1] * 5 + [0.9] * 5)
    # Labels A..A B..B A..A: 4.5 + 4.5 + 4.5 - 2 alpha; all action: 4.5 + 0.5 + 4.5 = 9.5.
    # alpha = 1: 11.5 > 9.5, the low frames are cut out.
    np.testing.assert_array_equal(trim_paths(scores, 1.0), [1] * 5 + [0] * 5 + [1] * 5)
    # alpha = 3: 7.5 < 9.5 (and A B B, B B A give 6.5, all background 5.5): one action run.
    np.testing.assert_array_equal(trim_paths(scores, 3.0), [1] * 15)


def test_penalty_prevents_flicker():
    scores = np.array([0.7, 0.45] * 5)
    # Without a penalty every frame takes its better label: action, background, ...
    np.testing.assert_array_equal(trim_paths(scores, 0.0), [1, 0] * 5)
    # Turning a 0.45 frame to background gains 0.1 but costs two switches of 0.5.
    np.testing.assert_array_equal(trim_paths(scores, 0.5), [1] * 10)
    # Rows are independent, each with its own alpha; padding beyond a row's length is ignored.
    batch = trim_paths(np.stack([scores, scores]), np.array([0.0, 0.5]), np.array([10, 4]))
    np.testing.assert_array_equal(batch[0], [1, 0] * 5)
    np.testing.assert_array_equal(batch[1], [1] * 4 + [0] * 6)


def test_link_video_trims_and_scores_tubes():
    # Class 0 is confident about A on frames 1-10 only; class 1 about B on every frame. Class
    # 0's path A: cut after frame 10 (one switch) 9 + 8 - 3 = 14 beats all action 9 + 2 = 11.
    score_a = np.tile([0.9, 0.02], (NUM_FRAMES, 1))
    score_a[10:, 0] = 0.2
    boxes, scores, where_a, where_b = two_object_video(2, score_a)
    tubes = link_video("v_two", boxes, scores)  # defaults: alpha 3, min_length 5
    assert [(t.video, t.label, t.start, t.end) for t in tubes] == [
        ("v_two", 0, 1, 10), ("v_two", 1, 1, NUM_FRAMES)]
    a_boxes = np.array([boxes[t][where_a[t]] for t in range(10)])
    np.testing.assert_array_equal(tubes[0].boxes[:, 0], np.arange(1, 11))  # 1-based frames
    np.testing.assert_allclose(tubes[0].boxes[:, 1:], a_boxes)
    assert tubes[0].score == pytest.approx(0.9)  # mean class score of the tube's boxes
    assert tubes[1].score == pytest.approx(0.8)
    # Path-level scoring: class 0's path averages (10 * 0.9 + 10 * 0.2) / 20 = 0.55.
    path_scored = link_video("v_two", boxes, scores, LinkingConfig(tube_score="path_mean"))
    assert path_scored[0].score == pytest.approx(0.55)
    # A class-specific alpha: 100 for class 0 makes any switch too costly, so its path keeps one
    # label, action (11 > 9); class 1 with alpha 0 labels frame by frame: B all action.
    per_class = link_video("v_two", boxes, scores, LinkingConfig(switch_penalty=(100.0, 0.0)))
    assert [(t.label, t.start, t.end) for t in per_class] == [(0, 1, NUM_FRAMES),
                                                               (1, 1, NUM_FRAMES)]


def test_min_length_and_empty_frames_split_pieces():
    # Frames 1-3 and 5-9 have one confident box; frame 4 has none, so the path cannot cross it.
    boxes = [np.array([[0, 0, 10, 10]])] * 9
    scores = [np.array([[0.9]])] * 9
    boxes[3], scores[3] = np.zeros((0, 4)), np.zeros((0, 1))
    tubes = link_video("v_gap", boxes, scores, LinkingConfig(min_length=1))
    assert [(t.start, t.end) for t in tubes] == [(1, 3), (5, 9)]
    assert [(t.start, t.end) for t in link_video("v_gap", boxes, scores)] == [(5, 9)]
    assert link_video("v_empty", [], []) == []


def test_batched_linking_equals_one_video_at_a_time():
    rng = np.random.default_rng(3)
    videos = []
    for i in range(9):  # lengths 1..39, some frames empty: pieces of many lengths per batch
        length = int(rng.integers(1, 40))
        counts = rng.integers(0, 5, length) * (rng.random(length) < 0.9)
        boxes = [np.hstack([xy := rng.uniform(0, 50, (n, 2)), xy + rng.uniform(5, 30, (n, 2))])
                 for n in counts]
        videos.append((f"v{i}", boxes, [rng.random((n, 3)) for n in counts]))
    config = LinkingConfig(min_length=2, switch_penalty=0.5)
    batched = link_videos(videos, config, batch_size=4)
    single = [t for video in videos for t in link_video(*video, config)]
    assert len(batched) == len(single) > 20
    for x, y in zip(batched, single):
        assert (x.video, x.label, x.score) == (y.video, y.label, pytest.approx(y.score))
        np.testing.assert_array_equal(x.boxes, y.boxes)


def test_bad_linker_input_names_the_video():
    boxes = [np.array([[0, 0, 10, 10.0]])] * 4
    scores = [np.array([[0.5, 0.5]])] * 4
    nan = scores[:2] + [np.array([[0.5, np.nan]])] + scores[3:]
    with pytest.raises(DetectionDataError, match=r"'v_nan'.*NaN class score at frame 3"):
        link_video("v_nan", boxes, nan)
    flipped = boxes[:1] + [np.array([[10, 0, 0, 10.0]])] + boxes[2:]
    with pytest.raises(DetectionDataError, match=r"'v_box'.*frame 2 proposal 0.*x1 <= x2"):
        link_video("v_box", flipped, scores)
    with pytest.raises(DetectionDataError, match="'v_len'"):
        link_video("v_len", boxes, scores[:3])
    with pytest.raises(DetectionDataError, match="'v_k'"):
        link_videos([("v_ok", boxes, scores), ("v_k", boxes, [np.array([[0.5]])] * 4)])
    with pytest.raises(ConfigError, match="2 classes"):
        link_video("v", boxes, scores, LinkingConfig(switch_penalty=(1.0, 2.0, 3.0)))
    for bad in ({"min_length": 0}, {"iou_weight": -1}, {"tube_score": "max"}):
        with pytest.raises(ConfigError):
            LinkingConfig(**bad)
