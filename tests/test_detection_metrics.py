"""Box/tube IoU, VOC AP, frame-mAP and video-mAP against hand-computed cases.

In the manner of MMAction2's tests/evaluation: tiny fixtures, exact expected values, the hand
computation written next to each.
"""

from __future__ import annotations

import numpy as np
import pytest

from lgdnet.detection import (
    JHMDB_THRESHOLDS,
    UCF101_24_THRESHOLDS,
    FrameDetection,
    FrameDetectionArrays,
    Tube,
    box_iou,
    frame_map,
    temporal_iou,
    tube_iou,
    video_map,
    video_map_at,
    voc_ap,
)
from lgdnet.errors import DetectionDataError, LgdnetError


def tube(first: int, last: int, box) -> np.ndarray:
    """A (n, 5) tube holding ``box`` on frames first..last."""
    frames = np.arange(first, last + 1, dtype=np.float64)[:, None]
    return np.hstack([frames, np.tile(np.asarray(box, dtype=np.float64), (len(frames), 1))])


# ----------------------------------------------------------------------------- IoU


def test_box_iou_hand_computed():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]])
    b = np.array([[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30]])
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    # [0,0,10,10] vs [5,5,15,15]: 5x5 = 25 over 100 + 100 - 25 = 175 (no +1 in areas).
    assert iou[0] == pytest.approx([25 / 175, 1.0, 0.0])
    # A zero-area box matches nothing, not even itself (empty union -> 0).
    assert iou[1] == pytest.approx([0.0, 0.0, 0.0])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_temporal_iou_inclusive_ranges():
    assert temporal_iou((1, 10), (6, 15)) == pytest.approx(5 / 15)  # frames 6..10 of 1..15
    assert temporal_iou((3, 3), (3, 3)) == 1.0  # one frame is a range of length 1
    assert temporal_iou((1, 3), (4, 6)) == 0.0  # adjacent, no shared frame
    with pytest.raises(ValueError):
        temporal_iou((5, 4), (1, 2))


def test_tube_iou_partial_temporal_overlap():
    a = tube(1, 4, [0, 0, 10, 10])
    b = np.array([[3, 0, 0, 10, 5], [4, 0, 0, 10, 10], [5, 0, 0, 10, 10], [6, 0, 0, 10, 10]],
                 dtype=np.float64)
    # Temporal: frames 3..4 shared of 1..6 -> 2/6. Spatial over frames 3, 4: 0.5 and 1.0 -> 0.75.
    # Spatio-temporal: 1/3 * 0.75 = 0.25.
    assert tube_iou(a, b) == pytest.approx(0.25)
    assert tube_iou(b, a) == pytest.approx(0.25)
    assert tube_iou(a, tube(5, 9, [0, 0, 10, 10])) == 0.0  # no shared frame
    assert tube_iou(a, a) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="contiguous"):
        tube_iou(a, b[[0, 2]])


def test_tube_iou_matrix_equals_pairwise_tube_iou():
    # video_map computes IoUs per (video, class) as one matrix; it must agree with tube_iou.
    from lgdnet.detection.boxes import _tube_iou_matrix

    rng = np.random.default_rng(0)

    def random_tube():
        first = int(rng.integers(1, 8))
        xy = rng.uniform(0, 20, (int(rng.integers(1, 8)), 2))
        return np.hstack([np.arange(first, first + len(xy))[:, None], xy,
                          xy + rng.uniform(2, 15, xy.shape)])

    a = [random_tube() for _ in range(7)]
    b = [random_tube() for _ in range(4)]
    expected = [[tube_iou(x, y) for y in b] for x in a]
    assert (np.asarray(expected) > 0).sum() >= 5  # enough overlapping pairs to mean something
    np.testing.assert_allclose(_tube_iou_matrix(a, b), expected, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------- VOC AP


def test_voc_ap_hand_computed():
    # Closed curve: recall [0, .5, .5, 1, 1], precision [0, 1, .5, 2/3, 0]; made monotone from
    # the right: [1, 1, 2/3, 2/3, 0]. Steps: 0->.5 at 1, .5->1 at 2/3: .5 + 1/3.
    assert voc_ap([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]) == pytest.approx(0.5 + 1 / 3)
    # Interpolation matters: precision [1, .5, 2/3, .75] at recall [.25, .25, .5, .75] becomes
    # [1, .75, .75, .75]; area .25 * 1 + .25 * .75 + .25 * .75 (+ .25 * 0) = 0.625.
    assert voc_ap([0.25, 0.25, 0.5, 0.75], [1.0, 0.5, 2 / 3, 0.75]) == pytest.approx(0.625)
    assert voc_ap([0.5, 1.0], [1.0, 1.0]) == pytest.approx(1.0)
    assert voc_ap([], []) == 0.0
    with pytest.raises(ValueError):
        voc_ap([0.5], [1.0, 0.5])


# ----------------------------------------------------------------------------- frame-mAP

BOX = [0, 0, 10, 10]
FRAME_GT = {
    "a": {0: [tube(1, 2, BOX)], 1: [tube(1, 1, [20, 20, 30, 30])]},
    "b": {0: [tube(1, 1, BOX)]},
}
FRAME_DETECTIONS = [
    FrameDetection("a", 1, 0, 0.9, BOX),  # d1: TP, IoU 1
    FrameDetection("a", 1, 0, 0.8, [0, 0, 10, 9]),  # d2: duplicate of d1's ground truth: FP
    FrameDetection("a", 2, 0, 0.7, [0, 0, 10, 5]),  # d3: IoU 50/100 = 0.5 >= 0.5: TP
    FrameDetection("b", 1, 0, 0.6, [50, 50, 60, 60]),  # d4: IoU 0: FP (b's box is missed)
    FrameDetection("b", 2, 0, 0.7, BOX),  # d5: no ground truth in b's frame 2: FP; ties d3
    FrameDetection("a", 1, 1, 0.5, [20, 20, 30, 30]),  # e1: TP
    FrameDetection("a", 1, 1, 0.95, BOX),  # e2: on class 0's box, but class 1: FP
    FrameDetection("a", 1, 2, 0.3, BOX),  # f: class 2 has no ground truth
]
# Class 0 (3 GT boxes), rank d1 d2 d3 d5 d4 (d3 before d5: tie kept in input order):
#   TP 1 0 1 0 0 -> recall 1/3 1/3 2/3 2/3 2/3, precision 1 1/2 2/3 1/2 2/5;
#   AP = 1/3 * 1 + 1/3 * 2/3 = 5/9. (With d5 ranked before d3 it would be 1/3 + 1/3 * 1/2.)
# Class 1 (1 GT box), rank e2 e1: TP 0 1 -> AP = 1 * 1/2 = 1/2.
# Class 2: no ground truth -> NaN, left out. mAP = (5/9 + 1/2) / 2 = 19/36.


def test_frame_map_hand_computed():
    result = frame_map(FRAME_GT, FRAME_DETECTIONS, 0.5, num_classes=3)
    assert result.per_class[0] == pytest.approx(5 / 9)
    assert result.per_class[1] == pytest.approx(1 / 2)
    assert np.isnan(result.per_class[2])
    assert result.mean_ap == pytest.approx(19 / 36)
    assert result.num_ground_truth == {0: 3, 1: 1, 2: 0}
    assert result.as_dict()["mean_ap"] == pytest.approx(19 / 36)


def test_frame_map_threshold_and_inferred_classes():
    # At 0.6, d3 (IoU 0.5) is a FP too: class 0 TP 1 0 0 0 0 -> AP 1/3; mAP (1/3 + 1/2) / 2.
    result = frame_map(FRAME_GT, FRAME_DETECTIONS, 0.6)
    assert result.per_class[0] == pytest.approx(1 / 3)
    assert result.mean_ap == pytest.approx(5 / 12)
    assert sorted(result.per_class) == [0, 1, 2]  # classes seen in gt or detections


def test_frame_map_columns_equal_objects():
    columns = FrameDetectionArrays.from_detections(FRAME_DETECTIONS)
    assert len(columns) == len(FRAME_DETECTIONS)
    assert frame_map(FRAME_GT, columns, num_classes=3).mean_ap == pytest.approx(19 / 36)


def test_frame_map_matches_best_free_ground_truth():
    # Two GT boxes in one frame: g1 [0,0,10,10], g2 [2,0,12,10]. y1 = g1 takes g1. y2 = [.5,0,
    # 10.5,10] has IoU 95/105 with the taken g1 and 85/115 = 0.739 with the free g2: it takes g2
    # (TP), where PASCAL's "best overall, then check if taken" would call it a FP. AP = 1.
    gt = {"c": {0: [tube(1, 1, [0, 0, 10, 10]), tube(1, 1, [2, 0, 12, 10])]}}
    dets = [FrameDetection("c", 1, 0, 0.9, [0, 0, 10, 10]),
            FrameDetection("c", 1, 0, 0.8, [0.5, 0, 10.5, 10])]
    assert frame_map(gt, dets).per_class[0] == pytest.approx(1.0)
    # Without any detection a class with ground truth has AP 0; nothing at all gives NaN.
    assert frame_map(gt, []).mean_ap == 0.0
    assert np.isnan(frame_map({}, []).mean_ap)


def test_frame_map_far_apart_frames_use_the_search_path():
    # Frame numbers in the millions make the (video, frame, label) keys too sparse for the
    # lookup table: the sorted-search path must give the same 19/36.
    shift = 5_000_000
    gt = {v: {c: [t + [shift, 0, 0, 0, 0] for t in tubes] for c, tubes in per.items()}
          for v, per in FRAME_GT.items()}
    dets = [FrameDetection(d.video, d.frame + shift, d.label, d.score, d.box)
            for d in FRAME_DETECTIONS]
    assert frame_map(gt, dets, num_classes=3).mean_ap == pytest.approx(19 / 36)
    # A class-1 box in a's frame 2, which has class-0 ground truth only (its key falls next to
    # other keys, not on one): FP. Class 1 ranks it, e2 (FP), e1 (TP): AP 1/3; mAP 4/9.
    extra = FrameDetection("a", 2 + shift, 1, 0.99, BOX)
    assert frame_map(gt, [*dets, extra], num_classes=3).mean_ap == pytest.approx(4 / 9)


def reference_frame_ap(gt_boxes, dets, threshold):
    """Plain-Python frame AP of one class: gt_boxes {(video, frame): [box]}, dets in order."""
    free = {key: [True] * len(boxes) for key, boxes in gt_boxes.items()}
    ranked = sorted(range(len(dets)), key=lambda i: -dets[i].score)  # sorted() is stable
    flags = []
    for i in ranked:
        key = (dets[i].video, dets[i].frame)
        ious = [box_iou(dets[i].box, g)[0, 0] if ok else -1.0
                for g, ok in zip(gt_boxes.get(key, []), free.get(key, []))]
        best = int(np.argmax(ious)) if ious else -1
        flags.append(best >= 0 and ious[best] >= threshold)
        if flags[-1]:
            free[key][best] = False
    tp = np.cumsum(flags)
    n = sum(len(b) for b in gt_boxes.values())
    return voc_ap(tp / n, tp / np.arange(1, len(flags) + 1))


@pytest.mark.parametrize("seed", range(3))
def test_frame_map_equals_plain_python_greedy_matching(seed):
    # Crowded random frames (up to 3 GT boxes and 6 detections, scores rounded to force ties):
    # the array program's matching must equal the one-detection-at-a-time loop of the protocol.
    rng = np.random.default_rng(seed)
    gt, dets, per_class = {}, [], {0: {}, 1: {}}
    for v in ("p", "q"):
        gt[v] = {0: [], 1: []}
        for c in (0, 1):
            for _ in range(int(rng.integers(1, 4))):
                first = int(rng.integers(1, 4))
                xy = rng.uniform(0, 20, 2)
                gt[v][c].append(tube(first, first + 2, [*xy, *(xy + rng.uniform(5, 15, 2))]))
                for row in gt[v][c][-1]:
                    per_class[c].setdefault((v, int(row[0])), []).append(row[1:])
        for _ in range(40):
            xy = rng.uniform(0, 20, 2)
            dets.append(FrameDetection(v, int(rng.integers(1, 6)), int(rng.integers(0, 2)),
                                       round(float(rng.random()), 1),
                                       [*xy, *(xy + rng.uniform(5, 15, 2))]))
    result = frame_map(gt, dets, 0.3)
    for c in (0, 1):
        expected = reference_frame_ap(per_class[c], [d for d in dets if d.label == c], 0.3)
        assert result.per_class[c] == pytest.approx(expected)


# ----------------------------------------------------------------------------- video-mAP

VIDEO_GT = {
    "a": {0: [tube(1, 4, BOX)], 1: [tube(1, 2, [20, 20, 30, 30])]},
    "b": {0: [tube(1, 4, BOX)]},
}
VIDEO_TUBES = [
    Tube("a", 0, 0.9, tube(1, 4, BOX)),  # T1: IoU 1: TP
    Tube("a", 0, 0.8, tube(1, 4, BOX)),  # T2: duplicate: FP
    Tube("b", 0, 0.7, tube(3, 6, BOX)),  # T3: IoU 2/6 * 1 = 1/3
    Tube("b", 0, 0.6, tube(1, 4, [0, 0, 10, 5])),  # T4: IoU 1 * 0.5 = 0.5
    Tube("a", 1, 0.4, tube(1, 2, [20, 20, 30, 30])),  # T5: TP
    Tube("b", 1, 0.5, tube(1, 2, [20, 20, 30, 30])),  # T6: b has no class-1 tube: FP
    Tube("a", 2, 0.3, tube(1, 2, BOX)),  # class 2: no ground truth
]
# delta 0.2, class 0 (2 GT): T1 TP, T2 FP, T3 TP (1/3 >= .2, takes b's tube), T4 FP (taken):
#   recall .5 .5 1 1, precision 1 .5 2/3 .5 -> AP .5 * 1 + .5 * 2/3 = 5/6.
# delta 0.5: T3 FP (1/3 < .5, b's tube stays free), T4 TP (0.5 >= 0.5):
#   recall .5 .5 .5 1, precision 1 .5 1/3 .5 -> monotone 1 .5 .5 .5 -> AP .5 + .5 * .5 = 3/4.
# Class 1: T6 FP, T5 TP -> AP 1/2 at both. mAP: (5/6 + 1/2) / 2 = 2/3 and (3/4 + 1/2) / 2 = 5/8.


def test_video_map_hand_computed():
    low = video_map(VIDEO_GT, VIDEO_TUBES, 0.2, num_classes=3)
    assert low.per_class[0] == pytest.approx(5 / 6)
    assert low.per_class[1] == pytest.approx(1 / 2)
    assert np.isnan(low.per_class[2])
    assert low.mean_ap == pytest.approx(2 / 3)
    high = video_map(VIDEO_GT, VIDEO_TUBES, 0.5, num_classes=3)
    assert high.per_class[0] == pytest.approx(3 / 4)
    assert high.mean_ap == pytest.approx(5 / 8)
    assert high.num_ground_truth == {0: 2, 1: 1, 2: 0}


def test_video_map_at_several_thresholds():
    assert JHMDB_THRESHOLDS == (0.2, 0.5)
    assert UCF101_24_THRESHOLDS == (0.05, 0.1, 0.2, 0.3)
    results = video_map_at(VIDEO_GT, VIDEO_TUBES, JHMDB_THRESHOLDS)
    assert list(results) == [0.2, 0.5]
    assert results[0.2].mean_ap == pytest.approx(2 / 3)
    assert results[0.5].mean_ap == pytest.approx(5 / 8)
    ucf = video_map_at(VIDEO_GT, VIDEO_TUBES)  # at 0.05 .. 0.3 T3 (1/3) is a TP: as at 0.2
    assert [ucf[t].mean_ap for t in UCF101_24_THRESHOLDS] == pytest.approx([2 / 3] * 4)
    with pytest.raises(ValueError):
        video_map(VIDEO_GT, VIDEO_TUBES, 0.0)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Tube("v_bad", 0, 0.5, tube(1, 3, [10, 0, 5, 10])), "x1 <= x2"),
        (lambda: Tube("v_bad", 0, 0.5, tube(1, 3, [0, 10, 10, 5])), "y1 <= y2"),
        (lambda: Tube("v_bad", 0, 0.5, tube(1, 3, BOX)[[0, 2]]), "contiguous"),
        (lambda: Tube("v_bad", 0, 0.5, tube(1, 3, BOX)[::-1]), "contiguous"),
        (lambda: Tube("v_bad", 0, 0.5, tube(0, 3, BOX)), "1-based"),
        (lambda: Tube("v_bad", 0, float("nan"), tube(1, 3, BOX)), "NaN"),
        (lambda: Tube("v_bad", -1, 0.5, tube(1, 3, BOX)), "out of range"),
        (lambda: FrameDetection("v_bad", 1, 0, float("nan"), BOX), "NaN"),
        (lambda: FrameDetection("v_bad", 1, 0, 0.5, [0, 10, 10, 5]), "y1 <= y2"),
        (lambda: video_map(VIDEO_GT, [Tube("v_bad", 5, 0.5, tube(1, 2, BOX))], 0.5,
                           num_classes=3), "out of range"),
        (lambda: video_map({"v_bad": {0: [tube(1, 4, BOX)[[0, 1, 3]]]}}, [], 0.5), "contiguous"),
        (lambda: video_map({"v_bad": {7: [tube(1, 4, BOX)]}}, [], 0.5, num_classes=3),
         "out of range"),
        (lambda: frame_map(FRAME_GT, [FrameDetection("v_bad", 1, 3, 0.5, BOX)], num_classes=3),
         "out of range"),
        (lambda: FrameDetectionArrays(("ok", "v_bad"), [0, 1], [1, 1], [0, 0], [0.2, np.nan],
                                      [BOX, BOX]), "NaN"),
        (lambda: FrameDetectionArrays(("ok", "v_bad"), [0, 1], [1, 1], [0, 0], [0.2, 0.1],
                                      [BOX, [5, 0, 1, 10]]), "x1 <= x2"),
    ],
)
def test_bad_input_names_the_video(make, message):
    with pytest.raises(DetectionDataError, match=message) as error:
        make()
    assert "'v_bad'" in str(error.value)
    assert isinstance(error.value, LgdnetError)


def test_detection_data_error_names_the_file():
    error = DetectionDataError("video 'x': tube score is NaN", path="runs/tubes.pkl")
    assert str(error) == "runs/tubes.pkl: video 'x': tube score is NaN"
    assert error.path == "runs/tubes.pkl"
    assert str(DetectionDataError("video 'x': bad")) == "video 'x': bad"
