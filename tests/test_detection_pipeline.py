"""Detection end to end on a tiny embedded set: fine-tune, resume, detect, link, evaluate, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lgdnet.data.detection_annotations import load_detection_gt, load_proposals, save_proposals
from lgdnet.data.detection_dataset import DetectionClipSpec
from lgdnet.data.synthetic_detection import write_detection_dataset
from lgdnet.detection.evaluation import evaluate_detections
from lgdnet.detection.inference import detect_split, detect_video, uniform_detections
from lgdnet.detection.io import load_detections, save_detections
from lgdnet.detection.training import DetectorTrainSettings, load_detector, train_detector
from lgdnet.detection.types import Tube
from lgdnet.detection.visualize import annotate_frames, write_annotated_video
from lgdnet.engine.checkpoint import load_weights, save_checkpoint
from lgdnet.models import create_model

SETTINGS = DetectorTrainSettings(epochs=1, lr_step=5, batch_size=4, device="cpu",
                                 progress=False, clips=DetectionClipSpec(num_frames=4,
                                                                         frame_step=3))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    gt_path = write_detection_dataset(root / "data", videos_per_class=3, seed=2,
                                      num_frames=(12, 14), size=(48, 64),
                                      classes=["jump", "walk"])
    torch.manual_seed(0)
    classifier = save_checkpoint(root / "classifier", create_model("lgd3d_tiny", 2), config={},
                                 classes=["jump", "walk"], epoch=1)
    return root, gt_path, classifier


def _train(setup, out, epochs, resume=False):
    root, gt_path, classifier = setup
    settings = DetectorTrainSettings(**{**SETTINGS.__dict__, "epochs": epochs})
    data = root / "data"
    return train_detector(gt_path, data / "proposals.json", data / "videos", classifier, out,
                          settings=settings, resume=resume)


def test_fine_tune_detect_link_evaluate(setup, tmp_path):
    root, gt_path, _ = setup
    result = _train(setup, tmp_path / "run", epochs=1)
    assert result["epochs"] == 1 and Path(result["checkpoint"]).is_file()
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
    assert json.loads((tmp_path / "run" / "detection.json").read_text())["split"] == 1
    detector, config, classes = load_detector(result["checkpoint"])
    assert classes == ["jump", "walk"] and config["data"]["num_frames"] == 4
    gt = load_detection_gt(gt_path)
    proposals = load_proposals(root / "data" / "proposals.json", gt)
    tubes, frames, skipped = detect_split(detector, gt, proposals, root / "data" / "videos",
                                          spec=SETTINGS.clips, progress=False)
    assert not skipped
    test_videos = gt.split_videos(1, "test")
    # one detection per proposal and class on every frame of every test video
    expected = sum(len(b) for v in test_videos for b in proposals[v].values()) * 2
    assert len(frames) == expected and set(frames.video_names) == set(test_videos)
    assert ((frames.scores >= 0) & (frames.scores <= 1)).all()
    metrics = evaluate_detections(gt, tubes, frames, 1)
    values = [metrics["frame_mAP"]["0.5"], *metrics["video_mAP"].values()]
    assert set(metrics["video_mAP"]) == {"0.2", "0.5"}
    assert all(0.0 <= v <= 1.0 for v in values)
    uniform = evaluate_detections(gt, *uniform_detections(gt, proposals, score=0.5 - 1e-3), 1)
    assert uniform["video_mAP"]["0.5"] == 0.0  # below 1/2 the trimming keeps no frame
    base_tubes, _ = uniform_detections(gt, proposals)  # the proposals' own scores, every class
    assert base_tubes and {t.label for t in base_tubes} == {0, 1}
    for tube in base_tubes:  # one tube per path and class, the same boxes for each class
        twins = [t for t in base_tubes if t.video == tube.video and t.score == tube.score]
        assert len({t.label for t in twins}) == 2
    path = tmp_path / "detections.json"
    save_detections(path, tubes, frames)
    again, frames_again = load_detections(path, gt)
    assert len(again) == len(tubes) and len(frames_again) == len(frames)
    # one video on its own gives the same scores as in the split
    video = test_videos[0]
    one_tubes, one_frames = detect_video(detector, root / "data" / "videos" / f"{video}.mp4",
                                         proposals[video], video=video, spec=SETTINGS.clips)
    mine = frames.video_index == frames.video_names.index(video)
    assert np.allclose(np.sort(one_frames.scores), np.sort(frames.scores[mine]), atol=1e-6)


def test_a_bad_test_video_is_skipped_and_named(setup, tmp_path, caplog):
    root, gt_path, _ = setup
    gt = load_detection_gt(gt_path)
    proposals = load_proposals(root / "data" / "proposals.json", gt)
    videos = tmp_path / "videos"
    test_videos = gt.split_videos(1, "test")
    for video in test_videos:
        (videos / video).parent.mkdir(parents=True, exist_ok=True)
        (videos / f"{video}.mp4").write_bytes((root / "data" / "videos" / f"{video}.mp4")
                                              .read_bytes())
    (videos / f"{test_videos[0]}.mp4").write_bytes(b"")
    detector = load_detector(_train(setup, tmp_path / "run", 1)["checkpoint"])[0]
    with caplog.at_level("WARNING"):
        _, frames, skipped = detect_split(detector, gt, proposals, videos, spec=SETTINGS.clips,
                                          progress=False)
    assert [v for v, _ in skipped] == [test_videos[0]] and "empty" in skipped[0][1]
    assert test_videos[0] in caplog.text
    assert set(frames.video_names) == set(test_videos[1:])


def test_resume_continues_the_run(setup, tmp_path):
    once = _train(setup, tmp_path / "straight", epochs=2)
    _train(setup, tmp_path / "resumed", epochs=1)
    resumed = _train(setup, tmp_path / "resumed", epochs=2, resume=True)
    assert resumed["epochs"] == 2 and [r["epoch"] for r in resumed["history"]] == [1, 2]
    assert resumed["history"][1]["loss"] == pytest.approx(once["history"][1]["loss"], rel=1e-5)
    a, b = load_weights(once["checkpoint"]), load_weights(resumed["checkpoint"])
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_annotated_frames(tmp_path):
    frames = np.zeros((3, 20, 30, 3), np.uint8)
    tube = Tube("v", 1, 0.8, np.array([[2, 5, 5, 15, 10]], np.float64))
    out = annotate_frames(frames, [tube], ["a", "b"], scale=2)
    assert out.shape == (3, 40, 60, 3)
    assert not out[0].any() and not out[2].any() and out[1].any()  # only frame 2 has the box
    assert (out[1, 19, 10:30] == [60, 180, 75]).all()  # class 1's colour: bottom edge, y2 = 20


def _lgdnet(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "lgdnet.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_detect(setup, tmp_path):
    root, gt_path, _ = setup
    checkpoint = _train(setup, tmp_path / "run", 1)["checkpoint"]
    gt = load_detection_gt(gt_path)
    video = gt.split_videos(1, "test")[0]
    path = root / "data" / "videos" / f"{video}.mp4"
    proposals = load_proposals(root / "data" / "proposals.json", gt)
    save_proposals({video: proposals[video]}, tmp_path / "one.json")
    done = _lgdnet("detect", path, "--checkpoint", checkpoint, "--proposals",
                   root / "data" / "proposals.json", "--out", tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    stem = Path(video).name
    tubes, frames = load_detections(tmp_path / "out" / f"{stem}.detections.json", gt)
    assert len(frames) == 2 * sum(len(b) for b in proposals[video].values())
    assert (tmp_path / "out" / f"{stem}.detections.mp4").stat().st_size > 0
    assert f"{stem}.detections.json" in done.stdout
    missing = _lgdnet("detect", path, "--checkpoint", checkpoint, "--proposals",
                      tmp_path / "nope.json", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "nope.json" in missing.stderr


def test_write_annotated_video(setup, tmp_path):
    root, gt_path, _ = setup
    gt = load_detection_gt(gt_path)
    video = gt.split_videos(1, "test")[0]
    (label, tubes), = gt.tubes[video].items()
    shown = [Tube(video, label, 0.9, tubes[0])]
    out = write_annotated_video(tmp_path / "v.mp4", root / "data" / "videos" / f"{video}.mp4",
                                shown, gt.labels, ground_truth=gt.tubes[video])
    from lgdnet.data.decoding import open_video

    with open_video(out) as source:
        assert (source.height, source.width) == (144, 192)  # 3x, for legible text
        assert source.num_frames == gt.nframes[video]
