"""Detection training clips: IoU labels, Fast R-CNN sampling, determinism, collate, bad videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lgdnet.data.detection_annotations import (
    DetectionGroundTruth,
    load_detection_gt,
    load_proposals,
)
from lgdnet.data.detection_dataset import (
    DetectionClipDataset,
    DetectionClipSpec,
    clip_indices,
    collate_detection,
    label_proposals,
    sample_rois,
)
from lgdnet.data.synthetic_detection import write_detection_dataset

REAL = Path(__file__).parent / "data" / "clips"  # copies of ../shared/data/clips


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("det")
    gt_path = write_detection_dataset(out, videos_per_class=3, seed=1, num_frames=(12, 14),
                                      size=(48, 64), classes=["jump", "walk"])
    gt = load_detection_gt(gt_path)
    return gt, load_proposals(out / "proposals.json", gt), out / "videos"


def test_labels_by_iou_exactly():
    gt_boxes = np.array([[0, 0, 10, 10], [20, 0, 40, 10]], np.float32)
    gt_labels = np.array([2, 0])
    boxes = np.array([[0, 0, 10, 10],     # IoU 1 with gt 0 -> class 2 + 1
                      [0, 0, 10, 5],      # IoU exactly 0.5 -> positive
                      [0, 0, 10, 4.9],    # IoU 0.49 -> background
                      [20, 0, 40, 10],    # gt 1 -> class 0 + 1
                      [5, 0, 30, 10],     # IoU 0.2 with both: background
                      [50, 50, 60, 60]],  # no overlap
                     np.float32)
    assert label_proposals(boxes, gt_boxes, gt_labels).tolist() == [3, 3, 0, 1, 0, 0]
    assert label_proposals(boxes, gt_boxes[:0], gt_labels[:0]).tolist() == [0] * 6
    assert label_proposals(boxes, gt_boxes, gt_labels, fg_iou=0.6).tolist() == [3, 0, 0, 1, 0, 0]


def test_sampling_fractions():
    rng = np.random.default_rng(0)
    many = np.array([1] * 10 + [0] * 50)
    keep = sample_rois(many, 16, 0.25, rng)
    assert len(keep) == 16 and (many[keep] > 0).sum() == 4  # Fast R-CNN: 25% foreground
    few_negatives = np.array([2] * 10 + [0] * 3)
    keep = sample_rois(few_negatives, 8, 0.25, rng)
    assert (few_negatives[keep] == 0).sum() == 3 and (few_negatives[keep] > 0).sum() == 5
    keep = sample_rois(np.zeros(40, np.int64), 8, 0.25, rng)
    assert len(keep) == 8  # no positives: background only
    small = np.array([0, 1, 0, 0, 3])
    assert sample_rois(small, 32, 0.25, rng).tolist() == [0, 1, 2, 3, 4]  # everything kept
    keep = sample_rois(np.array([1] * 3 + [0] * 100), 16, 0.25, rng)
    assert (np.array([1] * 3 + [0] * 100)[keep] > 0).sum() == 3


def test_clip_indices_repeat_the_edge_frames():
    assert clip_indices(0, 4, 2, 10).tolist() == [0, 0, 0, 2]
    assert clip_indices(9, 4, 2, 10).tolist() == [5, 7, 9, 9]
    assert clip_indices(5, 3, 1, 10).tolist() == [4, 5, 6]


def test_items_labels_and_boxes(tiny):
    gt, proposals, root = tiny
    spec = DetectionClipSpec(num_frames=4, frame_stride=2, frame_size=(96, 128),
                             horizontal_flip=False)
    dataset = DetectionClipDataset(gt, proposals, root, spec=spec)
    train = gt.split_videos(1, "train")
    annotated = sum(len({int(f) for tubes in gt.tubes[v].values() for t in tubes for f in t[:, 0]})
                    for v in train)
    assert len(dataset) == annotated  # one key frame per item with frame_step 1
    item = dataset[0]
    assert item["video"].shape == (3, 4, 96, 128) and item["video"].dtype == torch.float32
    # the ground-truth boxes are among the ROIs, twice the size (48x64 -> 96x128), positive
    video, frame = item["video_id"], item["frame"]
    label = next(iter(gt.tubes[video]))
    truth = [t[t[:, 0] == frame][0, 1:] for t in gt.tubes[video][label] if frame in t[:, 0]]
    for box in truth:
        matches = (item["rois"] == torch.tensor(box) * 2).all(dim=1)
        assert matches.any() and (item["label"][matches] == label + 1).all()
    raw = proposals[video][frame]
    assert len(item["rois"]) == len(raw) + len(truth)  # few boxes: all kept


def test_determinism_epochs_and_flip(tiny):
    gt, proposals, root = tiny
    spec = DetectionClipSpec(num_frames=4, frame_step=3, frames="all")
    first = DetectionClipDataset(gt, proposals, root, spec=spec, seed=3)
    again = DetectionClipDataset(gt, proposals, root, spec=spec, seed=3)
    for index in range(len(first)):
        a, b = first[index], again[index]
        assert a["frame"] == b["frame"] and torch.equal(a["video"], b["video"])
        assert torch.equal(a["rois"], b["rois"]) and torch.equal(a["label"], b["label"])
    frames = {e: [] for e in range(4)}
    for epoch in frames:
        first.set_epoch(epoch)
        frames[epoch] = [first[i]["frame"] for i in range(len(first))]
    assert len({tuple(v) for v in frames.values()}) > 1  # key frames move between epochs
    # a flip mirrors the boxes: x -> W - x
    flips = DetectionClipDataset(gt, proposals, root, spec=DetectionClipSpec(num_frames=4))
    plain = DetectionClipDataset(gt, proposals, root,
                                 spec=DetectionClipSpec(num_frames=4, horizontal_flip=False))
    flipped = [i for i in range(len(flips)) if not torch.equal(flips[i]["rois"], plain[i]["rois"])]
    assert flipped
    a, b = flips[flipped[0]], plain[flipped[0]]
    assert torch.allclose(a["rois"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor(
        [64, 0, 64, 0]), b["rois"])
    assert torch.equal(a["video"], b["video"].flip(3))


def test_collate_and_a_bad_video_is_skipped(tiny, tmp_path, caplog):
    gt, proposals, root = tiny
    dataset = DetectionClipDataset(gt, proposals, root, spec=DetectionClipSpec(num_frames=4))
    batch = collate_detection([dataset[0], None, dataset[1]])
    assert batch["video"].shape == (2, 3, 4, 48, 64)
    counts = [len(dataset[0]["rois"]), len(dataset[1]["rois"])]
    assert batch["rois"].shape == (sum(counts), 5) and batch["label"].shape == (sum(counts),)
    assert batch["rois"][:, 0].tolist() == [0.0] * counts[0] + [1.0] * counts[1]
    assert batch["index"].tolist() == [0, 1]
    assert collate_detection([None, None]) is None
    # a video file that is not a video: its items are None, named in a warning, recorded
    broken = tmp_path / "videos"
    for video in gt.split_videos(1, "train"):
        (broken / video).parent.mkdir(parents=True, exist_ok=True)
        (broken / f"{video}.mp4").write_bytes((root / f"{video}.mp4").read_bytes())
    bad = dataset.items[0][0]
    (broken / f"{bad}.mp4").write_bytes(b"not a video at all" * 10)
    skipping = DetectionClipDataset(gt, proposals, broken, spec=DetectionClipSpec(num_frames=4))
    with caplog.at_level("WARNING"):
        assert skipping[0] is None
    assert bad in caplog.text and skipping.bad_files[0][0].endswith(f"{bad}.mp4")
    last = len(skipping) - 1
    assert skipping[last] is not None and skipping.items[last][0] != bad
    with pytest.raises(Exception, match="mp4"):
        DetectionClipDataset(gt, proposals, broken, spec=DetectionClipSpec(num_frames=4),
                             on_error="raise")[0]


def test_a_real_ucf101_video():
    # A hand-made tube on a real UCF101 clip (320x240 AVI): boxes scaled to the clip size.
    video = "v_SoccerJuggling_g23_c01"
    tube = np.array([[f, 100, 60, 200, 220] for f in range(5, 15)], np.float32)
    gt = DetectionGroundTruth(["juggle"], {video: {0: [tube]}}, {video: 40}, {video: (240, 320)},
                              [[video]], [[]])
    proposals = {video: {10: np.array([[100, 60, 200, 220, 0.9], [0, 0, 50, 50, 0.2]],
                                      np.float32)}}
    spec = DetectionClipSpec(num_frames=4, frame_size=(120, 160), horizontal_flip=False)
    dataset = DetectionClipDataset(gt, proposals, REAL, spec=spec, on_error="raise")
    assert len(dataset) == 10
    item = dataset[5]
    assert item["frame"] == 10 and item["video"].shape == (3, 4, 120, 160)
    assert item["rois"].tolist() == [[50, 30, 100, 110], [0, 0, 25, 25], [50, 30, 100, 110]]
    assert item["label"].tolist() == [1, 0, 1]
