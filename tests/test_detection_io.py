"""The detections file (lgdnet.detection.io): exact round trip, and errors naming file and video."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lgdnet.data.detection_annotations import (
    DetectionGroundTruth,
    load_detection_gt,
    load_proposals,
)
from lgdnet.data.synthetic_detection import write_detection_dataset
from lgdnet.detection.evaluation import evaluate_detections
from lgdnet.detection.io import load_detections, save_detections
from lgdnet.detection.types import FrameDetection, FrameDetectionArrays, Tube
from lgdnet.errors import DetectionDataError


def _tube(first: int, last: int, box=(0.1, 0.2, 10.3, 20.7)) -> np.ndarray:
    return np.array([[f, *box] for f in range(first, last + 1)], dtype=np.float64)


def _gt() -> DetectionGroundTruth:
    tubes = {"a/v1": {0: [_tube(1, 4)]}, "b/v2": {1: [_tube(2, 5)]}}
    return DetectionGroundTruth(["a", "b"], tubes, {"a/v1": 4, "b/v2": 6},
                                {"a/v1": (40, 40), "b/v2": (40, 40)},
                                [["a/v1"]], [["b/v2"]], source="GT.pkl")


def _detections() -> tuple[list[Tube], list[FrameDetection]]:
    # Scores and coordinates with no short decimal form: a round trip through text must keep
    # every bit (1/3, 0.1 + 0.2, 2 ** -40).
    tubes = [Tube("a/v1", 0, 1 / 3, _tube(2, 4, (0.1 + 0.2, 1 / 7, 12.5, 2 ** 5 + 2 ** -40))),
             Tube("b/v2", 1, 0.9, _tube(2, 2))]
    frames = [FrameDetection("b/v2", 3, 1, 0.1 + 0.2, np.array([1 / 3, 0.0, 39.99, 40.0])),
              FrameDetection("a/v1", 1, 0, -2.5, np.array([0.0, 0.0, 0.0, 0.0]))]
    return tubes, frames


def _same_tubes(a: list[Tube], b: list[Tube]) -> None:
    assert [(t.video, t.label, t.score) for t in a] == [(t.video, t.label, t.score) for t in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.boxes, y.boxes)


def _same_frames(a: FrameDetectionArrays, b: FrameDetectionArrays) -> None:
    names_a = [a.video_names[i] for i in a.video_index]
    names_b = [b.video_names[i] for i in b.video_index]
    assert names_a == names_b
    for column in ("frames", "labels", "scores", "boxes"):
        np.testing.assert_array_equal(getattr(a, column), getattr(b, column))


def test_round_trip_is_exact(tmp_path):
    tubes, frames = _detections()
    path = tmp_path / "detections.json"
    save_detections(path, tubes, frames, meta={"checkpoint": "run/best.pt"})
    loaded_tubes, loaded_frames = load_detections(path, _gt())
    _same_tubes(loaded_tubes, tubes)
    _same_frames(loaded_frames, FrameDetectionArrays.from_detections(frames))
    data = json.loads(path.read_text())
    assert data["meta"] == {"checkpoint": "run/best.pt"}
    assert data["tubes"][0]["boxes"][0][0] == 2 and isinstance(data["tubes"][0]["boxes"][0][0], int)
    # One entry per line, so a JSON error's line number points at the entry.
    assert len(path.read_text().splitlines()) == 4 + len(tubes) + len(frames) + 1
    assert [p.name for p in tmp_path.iterdir()] == ["detections.json"]  # no temporary left


def test_round_trip_of_columns_and_of_one_kind_only(tmp_path):
    tubes, frames = _detections()
    columns = FrameDetectionArrays.from_detections(frames)
    save_detections(tmp_path / "frames.json", [], columns)
    no_tubes, loaded = load_detections(tmp_path / "frames.json")
    assert no_tubes == [] and len(loaded) == 2
    _same_frames(loaded, columns)
    save_detections(tmp_path / "tubes.json", tubes)
    loaded_tubes, no_frames = load_detections(tmp_path / "tubes.json")
    _same_tubes(loaded_tubes, tubes)
    assert len(no_frames) == 0


def test_integral_floats_are_integers_and_no_gt_means_no_gt_checks(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"frames": [{"video": "x/unknown", "frame": 12.0, "label": 7.0,
                                            "score": 1, "box": [0, 0, 1, 1]}]}))
    _, frames = load_detections(path)
    assert frames.frames.tolist() == [12] and frames.labels.tolist() == [7]
    with pytest.raises(DetectionDataError, match="'x/unknown': the video is not in the ground"):
        load_detections(path, _gt())


def _write(tmp_path, data) -> str:
    path = tmp_path / "bad.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _tube_entry(**changes) -> dict:
    return {"video": "a/v1", "label": 0, "score": 0.5, "boxes": [[1, 0, 0, 5, 5]], **changes}


def _frame_entry(**changes) -> dict:
    return {"video": "b/v2", "frame": 2, "label": 1, "score": 0.5, "box": [0, 0, 5, 5],
            **changes}


BAD = {
    "not_json": ('{"tubes": [\n{"video": "a/v1" "label": 0}]}', "not JSON: Expecting ',' "
                 "delimiter at line 2, column 18"),
    "empty_file": ("  \n", "the file is empty"),
    "empty_detections": ({"tubes": [], "meta": {}}, "no detections"),
    "not_an_object": ("[]", "got a JSON list"),
    "unknown_top_key": ({"tube": [_tube_entry()]}, "unknown key(s) 'tube'"),
    "tubes_not_list": ({"tubes": {"a/v1": []}}, '"tubes" must be a list, got dict'),
    "entry_not_object": ({"tubes": [[1, 2]]}, "tubes[0]: expected an object"),
    "missing_video": ({"tubes": [{"label": 0, "score": 1, "boxes": [[1, 0, 0, 1, 1]]}]},
                      "tubes[0]: missing key(s) video"),
    "video_not_string": ({"frames": [_frame_entry(video=3)]}, 'frames[0]: "video" must be'),
    "unknown_entry_key": ({"tubes": [_tube_entry(scores=[1])]},
                          "tubes[0]: video 'a/v1': unknown key(s) scores"),
    "label_string": ({"tubes": [_tube_entry(label="0")]}, "video 'a/v1': label '0' is not a"),
    "row_bool": ({"tubes": [_tube_entry(boxes=[[1, 0, 0, 5, 5], [2, 0, 0, False, 5]])]},
                 "tubes[0]: video 'a/v1': boxes[1] is [2, 0, 0, False, 5], expected 5 numbers"),
    "label_bool": ({"frames": [_frame_entry(label=True)]}, "label True is not a valid integer"),
    "score_string": ({"tubes": [_tube_entry(score="high")]}, "score 'high' is not a finite"),
    "score_infinite": ('{"tubes": [{"video": "a/v1", "label": 0, "score": Infinity, '
                       '"boxes": [[1, 0, 0, 1, 1]]}]}', "Infinity is not a JSON number"),
    "score_overflow": (json.dumps({"frames": [_frame_entry(score=7.0)]}).replace("7.0", "1e400"),
                       "frames[0]: video 'b/v2': score inf is not a finite"),
    "row_of_four": ({"tubes": [_tube_entry(boxes=[[1, 0, 0, 5, 5], [2, 0, 0, 5]])]},
                    "tubes[0]: video 'a/v1': boxes[1] is [2, 0, 0, 5], expected 5 numbers"),
    "empty_boxes": ({"tubes": [_tube_entry(boxes=[])]}, '"boxes" must be a non-empty list'),
    "box_strings": ({"frames": [_frame_entry(box=["0", 0, 5, 5])]}, "expected 4 numbers"),
    "frame_fraction": ({"frames": [_frame_entry(frame=2.5)]}, "frame 2.5 is not a valid integer"),
    "frame_huge": ({"frames": [_frame_entry(frame=2**70)]}, "frame 1180591620717411303424 is"),
    "box_bool_late": ({"frames": [_frame_entry()] * 1000 + [_frame_entry(box=[0, 0, True, 5])]},
                      "frames[1000]: video 'b/v2': box is [0, 0, True, 5], expected 4 numbers"),
    "score_null_late": ({"frames": [_frame_entry()] * 999 + [_frame_entry(score=None)]},
                        "frames[999]: video 'b/v2': score None is not a finite number"),
    "frame_zero": ({"frames": [_frame_entry(), _frame_entry(frame=0)]},
                   "frames[1]: video 'b/v2': frame 0 is not a 1-based"),
    "frame_after_end": ({"frames": [_frame_entry(frame=7)]},
                        "frames[0]: video 'b/v2': frame 7 outside the video's frames 1..6"),
    "frame_x2_below_x1": ({"frames": [_frame_entry(box=[5, 0, 4, 5])]},
                          "frames[0]: video 'b/v2': box [5, 0, 4, 5] needs finite x1 <= x2"),
    "frame_y2_below_y1": ({"frames": [_frame_entry(box=[0, 5, 4, 4])]}, "y1 <= y2"),
    "frame_unknown_video": ({"frames": [_frame_entry(video="b/none")]},
                            "frames[0]: video 'b/none': the video is not in the ground truth"),
    "frame_label_range": ({"frames": [_frame_entry(label=2)]},
                          "label 2 is out of range: the ground truth has 2 labels (0..1)"),
    "tube_label_negative": ({"tubes": [_tube_entry(label=-1)]}, "label -1 is out of range"),
    "tube_x2_below_x1": ({"tubes": [_tube_entry(boxes=[[1, 0, 0, 5, 5], [2, 6, 0, 5, 5]])]},
                         "tubes[0]: video 'a/v1': tube box 1 is [6.0, 0.0, 5.0, 5.0]"),
    "tube_gap": ({"tubes": [_tube_entry(), _tube_entry(boxes=[[1, 0, 0, 5, 5], [3, 0, 0, 5, 5]])]},
                 "tubes[1]: video 'a/v1': tube frames must be contiguous"),
    "tube_backwards": ({"tubes": [_tube_entry(boxes=[[2, 0, 0, 5, 5], [1, 0, 0, 5, 5]])]},
                       "contiguous and increasing, got frame 1 after frame 2"),
    "tube_after_end": ({"tubes": [_tube_entry(boxes=[[4, 0, 0, 5, 5], [5, 0, 0, 5, 5]])]},
                       "tubes[0]: video 'a/v1': frames 4..5 outside the video's frames 1..4"),
    "tube_unknown_video": ({"tubes": [_tube_entry(video="a/none")]},
                           "tubes[0]: video 'a/none': the video is not in the ground truth GT.pkl"),
    "tube_label_range": ({"tubes": [_tube_entry(label=5)]}, "label 5 is out of range"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_name_the_file_entry_and_video(case, tmp_path):
    data, expected = BAD[case]
    path = _write(tmp_path, data)
    with pytest.raises(DetectionDataError) as info:
        load_detections(path, _gt())
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_save_refuses_nothing_and_non_finite_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "detections.json"
    tubes, frames = _detections()
    save_detections(path, tubes, frames)
    before = path.read_bytes()
    with pytest.raises(DetectionDataError, match="without tubes or frames"):
        save_detections(path, [], [])
    with pytest.raises(DetectionDataError, match="must be finite"):
        save_detections(path, [Tube("a/v1", 0, float("inf"), _tube(1, 2))])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detections.json"]


def test_perfect_detections_on_the_embedded_dataset_score_one(tmp_path):
    # The synthetic dataset's GT.pkl and proposals: its tubes written as detections and its
    # ground-truth boxes as frame detections must read back and score 1 on every split.
    gt_path = write_detection_dataset(tmp_path / "data", videos_per_class=3, num_frames=(8, 10),
                                      size=(48, 48), classes=["jump", "walk"])
    gt = load_detection_gt(gt_path)
    proposals = load_proposals(gt_path.parent / "proposals.json", gt)
    assert set(proposals) == set(gt.nframes)
    tubes = [Tube(video, label, 1.0, tube) for video, per in gt.tubes.items()
             for label, video_tubes in per.items() for tube in video_tubes]
    frames = [FrameDetection(t.video, int(row[0]), t.label, 1.0, row[1:]) for t in tubes
              for row in t.boxes]
    save_detections(tmp_path / "detections.json", tubes, frames)
    loaded = load_detections(tmp_path / "detections.json", gt)
    for split in range(1, gt.num_splits + 1):
        result = evaluate_detections(gt, *loaded, split=split)
        assert result["frame_mAP"] == {"0.5": 1.0}
        assert result["video_mAP"] == {"0.2": 1.0, "0.5": 1.0}
        assert result["ignored"]["tubes"] == len(tubes) - result["num_tubes"] > 0
