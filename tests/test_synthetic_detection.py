"""The embedded detection dataset: determinism, ACT layout, boxes that hold the actors in the
decoded videos, actions trimmed in time, classes told by motion, and the promised proposals."""

from __future__ import annotations

import numpy as np
import pytest

from lgdnet.data.decoding import open_video
from lgdnet.data.detection_annotations import load_detection_gt, load_proposals
from lgdnet.data.synthetic import _paint
from lgdnet.data.synthetic_detection import (
    DETECTION_CLASSES,
    _mask_boxes,
    render_detection_clip,
    write_detection_dataset,
)

SMALL = dict(videos_per_class=3, num_frames=(24, 28), two_actor_prob=0.5)
SEED = 7


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("detection")
    gt_path = write_detection_dataset(root / "a", seed=SEED, **SMALL)
    return root, gt_path, load_detection_gt(gt_path)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) -> (N, M), written out here to check the generator's own."""
    a, b = a[:, None].astype(np.float64), b[None].astype(np.float64)
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


def _decode(path) -> np.ndarray:
    with open_video(path) as video:
        return video.get_frames(range(video.num_frames)).numpy()


def _clip(video: str, size=(96, 128)):
    """Render a video of the dataset again from its documented generator."""
    kind, name = video.split("/")
    rng = np.random.default_rng([SEED, DETECTION_CLASSES.index(kind), int(name.rsplit("_", 1)[1])])
    return render_detection_clip(kind, rng, SMALL["num_frames"], size, SMALL["two_actor_prob"])


def test_layout_splits_and_decodable_videos(dataset):
    root, gt_path, gt = dataset
    assert gt_path == root / "a" / "GT.pkl" and gt.labels == list(DETECTION_CLASSES)
    videos = sorted(gt.nframes)
    assert videos == sorted(f"{c}/{c}_{n:04d}" for c in DETECTION_CLASSES for n in range(3))
    assert gt.num_splits == 3
    tested = []
    for split in (1, 2, 3):
        train, test = gt.split_videos(split, "train"), gt.split_videos(split, "test")
        assert not set(train) & set(test) and sorted(train + test) == videos
        assert {v.split("/")[0] for v in test} == set(DETECTION_CLASSES)  # every class tested
        tested += test
    assert sorted(tested) == videos  # each video is tested in exactly one split
    for video in videos:
        assert list(gt.tubes[video]) == [DETECTION_CLASSES.index(video.split("/")[0])]
        with open_video(root / "a" / "videos" / f"{video}.mp4") as clip:
            assert (clip.num_frames, clip.height, clip.width) == (gt.nframes[video], 96, 128)
            assert round(clip.fps) == 25 and 24 <= clip.num_frames <= 28
        assert gt.resolution[video] == (96, 128)
    assert any(len(gt.tubes[v][label]) == 2 for v in videos for label in gt.tubes[v])  # two actors


def test_same_seed_same_files_other_seed_other_clips(dataset, tmp_path):
    root, _, gt = dataset
    again = load_detection_gt(write_detection_dataset(tmp_path / "b", seed=SEED, **SMALL))
    other = load_detection_gt(write_detection_dataset(tmp_path / "c", seed=SEED + 1, **SMALL))
    for video, by_label in gt.tubes.items():
        for label, tubes in by_label.items():
            assert len(again.tubes[video][label]) == len(tubes)
            for first, second in zip(tubes, again.tubes[video][label]):
                np.testing.assert_array_equal(first, second)
    written, rewritten = root / "a", tmp_path / "b"
    for name in ("GT.pkl", "proposals.json"):
        assert (rewritten / name).read_bytes() == (written / name).read_bytes()
    relative = "videos/walk/walk_0001.mp4"
    assert (rewritten / relative).read_bytes() == (written / relative).read_bytes()
    np.testing.assert_array_equal(_decode(rewritten / relative), _decode(written / relative))
    assert any(other.nframes[v] != gt.nframes[v] or not np.array_equal(other.tubes[v][lab][0], t[0])
               for v in gt.tubes for lab, t in gt.tubes[v].items())


def test_boxes_inside_the_frame_and_actors_inside_their_boxes(dataset):
    root, _, gt = dataset
    for video, by_label in gt.tubes.items():
        clip = _clip(video)
        frames = _decode(root / "a" / "videos" / f"{video}.mp4").astype(np.float32)
        assert frames.shape == clip.frames.shape
        # The GT tubes are the rendered actors' boxes over their action frames.
        tubes = next(iter(by_label.values()))
        assert len(tubes) == len(clip.intervals)
        for tube, boxes, (first, last) in zip(tubes, clip.actor_boxes, clip.intervals):
            np.testing.assert_array_equal(tube[:, 0], np.arange(first, last + 1))
            np.testing.assert_array_equal(tube[:, 1:], boxes[first - 1 : last])
        boxes = clip.actor_boxes  # (A, T, 4), idle frames too
        assert (boxes[..., :2] >= 0).all() and (boxes[..., 2:] <= [128, 96]).all()
        assert (boxes[..., 2:] > boxes[..., :2]).all()
        difference = np.abs(frames - clip.background).mean(axis=3)  # (T, H, W)
        for t in range(len(frames)):
            inside = np.zeros((96, 128), bool)
            for x1, y1, x2, y2 in boxes[:, t].astype(int):
                inside[y1:y2, x1:x2] = True
            # An actor fills most of its box; outside there is only noise and coding error.
            assert difference[t][inside].mean() > 4 * difference[t][~inside].mean() + 10, (video, t)


def test_a_box_is_the_bounding_box_of_the_half_covered_pixels():
    mask = np.zeros((2, 30, 40, 1), np.float32)
    _paint(mask[:1], "disc", np.array([[20.3, 10.3]]), 5.0, 0.0, np.array([255.0], np.float32))
    # Pixel (row r, column c) has its centre at (c + 0.5, r + 0.5): columns 15..24 and rows
    # 5..14 have centres within 5 of (20.3, 10.3), hence x1, y1, x2, y2 = 15, 5, 25, 15.
    np.testing.assert_array_equal(_mask_boxes(mask[..., 0]), [[15, 5, 25, 15], [0, 0, 0, 0]])


def test_actions_are_trimmed_and_told_by_motion():
    for kind in DETECTION_CLASSES:
        for number in range(6):
            rng = np.random.default_rng([3, DETECTION_CLASSES.index(kind), number])
            clip = render_detection_clip(kind, rng, (24, 40), two_actor_prob=0.0)
            (first, last), boxes = clip.intervals[0], clip.actor_boxes[0]
            num_frames = len(clip.frames)
            assert 0.4 * num_frames <= last - first + 1 <= 0.85 * num_frames
            # Idle before and after the action: the actor does not move or change size.
            assert (boxes[:first] == boxes[first - 1]).all()
            assert (boxes[last - 1 :] == boxes[last - 1]).all()
            action = boxes[first - 1 : last]
            centre, extent = (action[:, :2] + action[:, 2:]) / 2, action[:, 2:] - action[:, :2]
            x_range, y_range = np.ptp(centre, axis=0)
            steps = np.diff(centre[:, 0])
            turns = np.sum(np.diff(np.sign(steps[np.abs(steps) > 0.75])) != 0)
            if kind == "jump":
                # (the width changes by aliasing only, as the actor moves by fractions of a pixel)
                assert x_range <= 1 and y_range >= 6 and np.ptp(extent[:, 0]) <= 2.5
            elif kind == "sway":
                assert y_range <= 1 and x_range >= 8 and turns >= 1
            elif kind == "walk":
                assert y_range <= 1 and x_range >= 25 and turns == 0
            else:
                assert x_range <= 1.5 and np.ptp(extent[:, 0]) >= 4 and np.ptp(extent[:, 1]) >= 6


def test_proposals_cover_every_frame_with_the_promised_overlaps(dataset):
    root, _, gt = dataset
    proposals = load_proposals(root / "a" / "proposals.json", gt)
    assert sorted(proposals) == sorted(gt.nframes)
    best_ious = []
    for video in gt.nframes:
        assert sorted(proposals[video]) == list(range(1, gt.nframes[video] + 1))
        actors = _clip(video).actor_boxes  # every frame, idle or not
        for frame, boxes in proposals[video].items():
            assert (np.diff(boxes[:, 4]) <= 0).all()  # best score first
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:4] <= [128, 96]).all()
            iou = _iou(actors[:, frame - 1], boxes[:, :4])  # (A, n)
            best = iou.argmax(axis=1)
            best_ious += iou.max(axis=1).tolist()
            assert (boxes[best, 4] >= 0.6).all()  # an actor's proposal scores high
            assert (iou.max(axis=0) < 0.3).sum() >= 1  # and there are boxes off the actors
    best_ious = np.array(best_ious)
    assert best_ious.min() >= 0.6 - 1e-6 and best_ious.max() <= 0.9 + 1e-6
    assert best_ious.std() > 0.05  # spread over the range, not one fixed overlap
