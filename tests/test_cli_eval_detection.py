"""``lgdnet eval-detection`` and :func:`evaluate_detections`: hand-computed mAPs, bad input."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from lgdnet.cli import main
from lgdnet.data.detection_annotations import DetectionGroundTruth, save_detection_gt
from lgdnet.detection.evaluation import evaluate_detections
from lgdnet.detection.io import load_detections, save_detections
from lgdnet.detection.types import FrameDetection, Tube
from lgdnet.errors import ConfigError, LgdnetError

A = [0.0, 0.0, 10.0, 10.0]
A_SHIFTED = [5.0, 0.0, 15.0, 10.0]  # IoU with A: 50 / 150 = 1/3
B = [20.0, 20.0, 30.0, 30.0]


def _tube(first: int, last: int, box: list[float]) -> np.ndarray:
    return np.array([[f, *box] for f in range(first, last + 1)], dtype=np.float64)


def _gt() -> DetectionGroundTruth:
    """3 classes, 5 videos of 3 frames, 3 splits (so J-HMDB's thresholds 0.2 and 0.5 apply).

    Split 1 tests a/v1 (a: frames 1-2, box A), a/v2 (a: 1-3, B) and b/v3 (b: 1-2, A); b/v4
    and c/v5 are training videos, so class c has no ground truth in split 1's test videos.
    """
    tubes = {"a/v1": {0: [_tube(1, 2, A)]}, "a/v2": {0: [_tube(1, 3, B)]},
             "b/v3": {1: [_tube(1, 2, A)]}, "b/v4": {1: [_tube(1, 3, A)]},
             "c/v5": {2: [_tube(1, 3, A)]}}
    return DetectionGroundTruth(
        labels=["a", "b", "c"], tubes=tubes, nframes=dict.fromkeys(tubes, 3),
        resolution=dict.fromkeys(tubes, (40, 40)),
        train_videos=[["b/v4", "c/v5"], ["a/v1", "a/v2", "b/v3"], ["a/v1", "b/v3"]],
        test_videos=[["a/v1", "a/v2", "b/v3"], ["b/v4", "c/v5"], ["a/v2", "b/v4", "c/v5"]])


# Hand computation, split 1 (VOC all-point AP = sum over recall steps of the precision there,
# made monotone from the right).
#
# frame-mAP@0.5. Class a has 5 GT boxes (a/v1 frames 1-2, a/v2 frames 1-3), ranked:
#   0.9 a/v1 f1 A TP; 0.8 a/v1 f1 A duplicate FP; 0.7 a/v2 f1 B TP; 0.6 a/v1 f2 IoU 1/3 FP.
#   recall .2 .2 .4 .4, precision 1 1/2 2/3 1/2 -> AP = .2 * 1 + .2 * 2/3 = 1/3.
#   (a/v1 f2 and a/v2 f2, f3 are missed.)
# Class b has 2 GT boxes (b/v3 frames 1-2): 0.99 b/v4 f1 is on a training video (ignored);
#   0.95 a/v1 f1 FP (no b in a/v1); 0.5 b/v3 f1 TP; 0.4 b/v3 f2 TP.
#   recall 0 .5 1, precision 0 1/2 2/3 -> AP = .5 * 2/3 + .5 * 2/3 = 2/3.
# Class c has no GT in split 1: its detection is left out. frame-mAP = (1/3 + 2/3) / 2 = 1/2.
#
# video-mAP. Class a has 2 GT tubes: 0.9 a/v1 1-2 A (IoU 1) TP; 0.8 the same again,
#   duplicate FP; 0.7 a/v2 frame 1 only, B (temporal IoU 1/3 x box IoU 1 = 1/3).
#   delta 0.2: TP FP TP, recall .5 .5 1, precision 1 1/2 2/3 -> AP = .5 + .5 * 2/3 = 5/6.
#   delta 0.5: TP FP FP -> AP = .5 * 1 = 1/2.
# Class b has 1 GT tube (b/v3): two tubes tie at 0.6 and keep file order: a/v1 (FP, wrong
#   video) first, then b/v3 1-2 A_SHIFTED (IoU 1 x 1/3 = 1/3); 0.99 b/v4 is ignored.
#   delta 0.2: FP TP -> recall 0 1, precision 0 1/2 -> AP = 1/2. delta 0.5: FP FP -> AP = 0.
# video-mAP@0.2 = (5/6 + 1/2) / 2 = 2/3; video-mAP@0.5 = (1/2 + 0) / 2 = 1/4.
EXPECTED = {"frame_mAP": {"0.5": 1 / 2}, "video_mAP": {"0.2": 2 / 3, "0.5": 1 / 4}}
EXPECTED_PER_CLASS = {"a": {"0.5": 1 / 3, "0.2": 5 / 6, "video 0.5": 1 / 2},
                      "b": {"0.5": 2 / 3, "0.2": 1 / 2, "video 0.5": 0.0}}


def _detections() -> tuple[list[Tube], list[FrameDetection]]:
    tubes = [Tube("a/v1", 0, 0.9, _tube(1, 2, A)), Tube("a/v1", 0, 0.8, _tube(1, 2, A)),
             Tube("a/v2", 0, 0.7, _tube(1, 1, B)),
             Tube("a/v1", 1, 0.6, _tube(1, 2, A)), Tube("b/v3", 1, 0.6, _tube(1, 2, A_SHIFTED)),
             Tube("b/v4", 1, 0.99, _tube(1, 3, A)), Tube("a/v1", 2, 0.5, _tube(1, 2, A))]
    frames = [FrameDetection("a/v1", 1, 0, 0.9, A), FrameDetection("a/v1", 1, 0, 0.8, A),
              FrameDetection("a/v2", 1, 0, 0.7, B), FrameDetection("a/v1", 2, 0, 0.6, A_SHIFTED),
              FrameDetection("b/v4", 1, 1, 0.99, A), FrameDetection("a/v1", 1, 1, 0.95, A),
              FrameDetection("b/v3", 1, 1, 0.5, A), FrameDetection("b/v3", 2, 1, 0.4, A),
              FrameDetection("a/v2", 1, 2, 0.3, B)]
    return tubes, frames


@pytest.fixture()
def files(tmp_path):
    gt_path, det_path = tmp_path / "GT.pkl", tmp_path / "detections.json"
    save_detection_gt(_gt(), gt_path)
    save_detections(det_path, *_detections())
    return gt_path, det_path


def test_cli_reproduces_the_hand_computed_maps(files, capsys):
    gt_path, det_path = files
    assert main(["eval-detection", str(gt_path), str(det_path), "--split", "1", "--json",
                 "--per-class"]) == 0
    out, err = capsys.readouterr()
    last = json.loads(out.strip().splitlines()[-1])
    assert set(last) == {"frame_mAP", "video_mAP"}
    assert last == EXPECTED  # exactly: these sums happen to be exact in binary floating point
    assert "6 tubes and 8 frame detections on test videos (1 tube and 1 frame detection" in out
    assert "(1 of 3 classes have no ground truth in this split: left out)" in out
    assert "1 tube and 1 frame detection are on videos outside" in err  # b/v4's
    table = {line.split()[0]: line.split()[2:] for line in out.splitlines()[:-1]
             if line.split()[:1] in (["a"], ["b"], ["c"])}
    assert set(table) == {"a", "b"}
    assert [float(v) for v in table["a"]] == pytest.approx([100 / 3, 500 / 6, 50], abs=0.006)


def test_evaluate_detections_per_class_and_counts():
    tubes, frames = _detections()
    result = evaluate_detections(_gt(), tubes, frames, split=1)
    assert {key: result[key] for key in EXPECTED} == EXPECTED
    # Per class, the float sums round differently from the fractions (1/3 comes out as
    # 0.33333333333333337): equal to one unit in the last place.
    assert set(result["per_class"]) == {"a", "b"}  # c has no ground truth in split 1
    for name, expected in EXPECTED_PER_CLASS.items():
        entry = result["per_class"][name]
        assert entry["frame_AP"]["0.5"] == pytest.approx(expected["0.5"], abs=1e-15)
        assert entry["video_AP"]["0.2"] == pytest.approx(expected["0.2"], abs=1e-15)
        assert entry["video_AP"]["0.5"] == pytest.approx(expected["video 0.5"], abs=1e-15)
    assert result["per_class"]["a"]["num_gt_tubes"] == 2
    assert result["per_class"]["a"]["num_gt_boxes"] == 5
    assert result["num_test_videos"] == 3 and result["thresholds"] == [0.2, 0.5]
    assert result["ignored"] == {"tubes": 1, "frames": 1}


def test_detections_outside_the_split_are_ignored_with_a_warning(caplog):
    tubes, frames = _detections()
    # On the module's own logger: `lgdnet` CLI runs in this process stop propagation to root.
    logger = logging.getLogger("lgdnet.detection.evaluation")
    logger.addHandler(caplog.handler)
    try:
        result = evaluate_detections(_gt(), tubes, frames, split=1)
    finally:
        logger.removeHandler(caplog.handler)
    assert "1 tube and 1 frame detection are on videos outside" in caplog.text
    # Counted, b/v4's 0.99 tube would be a false positive ranked first: class b's video AP
    # at 0.2 would drop from 1/2 to 1/3 (FP FP TP).
    assert result["per_class"]["b"]["video_AP"]["0.2"] == pytest.approx(1 / 2)


def test_thresholds_default_per_dataset_and_can_be_given():
    gt = _gt()
    one_split = DetectionGroundTruth(gt.labels, gt.tubes, gt.nframes, gt.resolution,
                                     gt.train_videos[:1], gt.test_videos[:1])
    tubes, frames = _detections()
    ucf = evaluate_detections(one_split, tubes, frames, split=1)
    assert list(ucf["video_mAP"]) == ["0.05", "0.1", "0.2", "0.3"]
    # class a: IoUs 1, 1, 1/3 -> 5/6 at every threshold <= 1/3; class b: 1/2 -> mean 2/3.
    assert ucf["video_mAP"]["0.3"] == pytest.approx(2 / 3, abs=1e-15)
    given = evaluate_detections(gt, tubes, frames, split=1, thresholds=[0.4, 0.4])
    assert list(given["video_mAP"]) == ["0.4"]
    with pytest.raises(ConfigError, match="outside"):
        evaluate_detections(gt, tubes, frames, split=1, thresholds=[0.0])


def test_empty_kinds_score_zero_not_nan():
    tubes, _ = _detections()
    result = evaluate_detections(_gt(), tubes, [], split=1)
    assert result["frame_mAP"]["0.5"] == 0.0
    assert not any(np.isnan(v) for v in result["video_mAP"].values())


def test_split_without_ground_truth_is_refused():
    gt = _gt()
    empty = DetectionGroundTruth(gt.labels, {**gt.tubes, "c/v6": {}}, {**gt.nframes, "c/v6": 3},
                                 gt.resolution, [["a/v1"]], [["c/v6"]], source="GT.pkl")
    with pytest.raises(LgdnetError, match="GT.pkl.*split 1.*no|none"):
        evaluate_detections(empty, *_detections(), split=1)


def test_thresholds_option(files, capsys):
    gt_path, det_path = files
    assert main(["eval-detection", str(gt_path), str(det_path), "--split", "1", "--json",
                 "--thresholds", "0.3"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["video_mAP"] == pytest.approx({"0.3": 2 / 3}, abs=1e-15)


# ------------------------------------------------------------------ bad input, as a user meets it
def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lgdnet.cli", "eval-detection", *map(str, args)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _gt_dict() -> dict:
    gt = _gt()
    return {"labels": gt.labels, "gttubes": gt.tubes, "nframes": gt.nframes,
            "train_videos": gt.train_videos, "test_videos": gt.test_videos,
            "resolution": gt.resolution}


def _entry(video: str = "a/v1", boxes=None) -> dict:
    return {"video": video, "label": 0, "score": 0.5,
            "boxes": boxes if boxes is not None else [[1, *A], [2, *A]]}


BAD_GT = {
    "missing_keys": (lambda d: d.pop("resolution"), ["missing key", "resolution"]),
    "split_video_without_tubes": (lambda d: d["test_videos"][0].append("a/v9"),
                                  ["'a/v9'", "absent from gttubes"]),
}

# Run as the user runs them (a subprocess: exit code, stderr, no traceback)...
BAD_DETECTIONS = {
    "non_contiguous": ({"tubes": [_entry(boxes=[[1, *A], [3, *A]])]},
                       ["'a/v1'", "tubes[0]", "contiguous"]),
    "x2_below_x1": ({"tubes": [_entry(), _entry(boxes=[[1, 10, 0, 5, 10]])]},
                    ["'a/v1'", "tubes[1]", "x1 <= x2"]),
    "unknown_video": ({"tubes": [_entry("a/nowhere")]},
                      ["'a/nowhere'", "not in the ground truth"]),
    "empty_object": ({}, ["no detections"]),
    "not_json": ('{"tubes": [\n  {"video": "a/v1",, }\n]}', ["not JSON", "line 2, column 20"]),
    "empty_file": ("", ["the file is empty"]),
}
# ... and, to keep the suite fast, more of the same through main() in this process.
MORE_BAD_DETECTIONS = {
    "frame_box_x2_below_x1": ({"frames": [{"video": "b/v3", "frame": 1, "label": 1,
                                           "score": 0.1, "box": [9, 0, 2, 4]}]},
                              ["'b/v3'", "frames[0]", "x1 <= x2"]),
    "empty_lists": ({"tubes": [], "frames": []}, ["no detections"]),
    "label_out_of_range": ({"tubes": [{**_entry(), "label": 3}]},
                           ["'a/v1'", "label 3 is out of range"]),
    "frame_outside_video": ({"tubes": [_entry(boxes=[[3, *A], [4, *A]])]},
                            ["'a/v1'", "frames 3..4 outside", "1..3"]),
    "missing_key": ({"tubes": [{"video": "a/v1", "label": 0, "boxes": [[1, *A]]}]},
                    ["'a/v1'", "missing key(s) score"]),
    "nan_score": ('{"tubes": [{"video": "a/v1", "label": 0, "score": NaN, "boxes": [[1, 0, 0, '
                  "1, 1]]}]}", ["NaN is not a JSON number"]),
}


def _assert_one_line_error(returncode: int, stderr: str, *needles: str) -> None:
    assert returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("lgdnet eval-detection: error: ")
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _write(path, data) -> None:
    path.write_text(data if isinstance(data, str) else json.dumps(data))


@pytest.mark.parametrize("case", sorted(BAD_GT))
def test_bad_ground_truth_exits_2_naming_the_file(case, files):
    gt_path, det_path = files
    data = _gt_dict()
    BAD_GT[case][0](data)
    gt_path.write_bytes(pickle.dumps(data, protocol=2))
    result = _run(gt_path, det_path, "--split", 1)
    _assert_one_line_error(result.returncode, result.stderr, str(gt_path), *BAD_GT[case][1])


@pytest.mark.parametrize("case", sorted(BAD_DETECTIONS))
def test_bad_detections_exit_2_naming_file_and_video(case, files):
    gt_path, det_path = files
    data, needles = BAD_DETECTIONS[case]
    _write(det_path, data)
    result = _run(gt_path, det_path, "--split", 1)
    _assert_one_line_error(result.returncode, result.stderr, str(det_path), *needles)


@pytest.mark.parametrize("case", sorted(MORE_BAD_DETECTIONS))
def test_more_bad_detections_in_process(case, files, capsys):
    gt_path, det_path = files
    data, needles = MORE_BAD_DETECTIONS[case]
    _write(det_path, data)
    code = main(["eval-detection", str(gt_path), str(det_path), "--split", "1"])
    _assert_one_line_error(code, capsys.readouterr().err, str(det_path), *needles)


def test_split_that_does_not_exist_exits_2(files, capsys):
    gt_path, det_path = files
    result = _run(gt_path, det_path, "--split", 4)
    _assert_one_line_error(result.returncode, result.stderr, str(gt_path),
                           "split 4 does not exist", "splits 1..3")
    code = main(["eval-detection", str(gt_path), str(det_path), "--split", "0"])
    _assert_one_line_error(code, capsys.readouterr().err, "split 0 does not exist")
    code = main(["eval-detection", str(gt_path), str(det_path), "--split", "1",
                 "--thresholds", "0.5", "1.5"])
    _assert_one_line_error(code, capsys.readouterr().err, "IoU threshold 1.5 is outside (0, 1]")


def test_subprocess_json_last_line(files):
    gt_path, det_path = files
    result = _run(gt_path, det_path, "--split", 1, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == EXPECTED


def test_round_trip_keeps_the_metrics(files):
    gt_path, det_path = files
    tubes, frames = load_detections(det_path)
    direct = evaluate_detections(_gt(), *_detections(), split=1)
    assert evaluate_detections(_gt(), tubes, frames, split=1) == direct
