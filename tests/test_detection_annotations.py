"""Detection annotations: ACT ground-truth pickles (safe loading, checks) and proposals files."""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct

import numpy as np
import pytest

from lgdnet.data.detection_annotations import (
    DetectionAnnotationError,
    DetectionGroundTruth,
    UnsafePickleError,
    load_detection_gt,
    load_mmaction_proposals,
    load_proposals,
    safe_load_pickle,
    save_detection_gt,
    save_proposals,
)
from lgdnet.errors import AnnotationError


def _tube(first: int, last: int, x: float = 10.0) -> np.ndarray:
    frames = np.arange(first, last + 1, dtype=np.float32)
    constant = np.ones_like(frames)
    return np.stack([frames, x + frames, 20 * constant, x + 30 + frames, 60.5 * constant], axis=1)


def _raw_gt() -> dict:
    """A J-HMDB-like file (3 splits) with one UCF-like video holding two tubes of its label."""
    return {
        "labels": ["brush_hair", "catch"],
        "gttubes": {"brush_hair/a": {0: [_tube(1, 5)]},
                    "catch/b": {1: [_tube(2, 4), _tube(3, 7, x=100.25)]},
                    "catch/c": {1: [_tube(1, 3)]}},
        "nframes": {"brush_hair/a": 5, "catch/b": 8, "catch/c": 3},
        "train_videos": [["brush_hair/a", "catch/b"], ["catch/b", "catch/c"], ["brush_hair/a"]],
        "test_videos": [["catch/c"], ["brush_hair/a"], ["catch/b", "catch/c"]],
        "resolution": {"brush_hair/a": (240, 320), "catch/b": (240, 320), "catch/c": (120, 160)},
    }


def _dump(data: object, path, protocol: int = 2):
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


class _Python2Pickler(pickle._Pickler):
    """Writes what Python 2 wrote: str and bytes as (SHORT_)BINSTRING, so numpy buffers are raw
    strings rather than ``_codecs.encode`` calls; module names are fixed up afterwards."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        head = (pickle.SHORT_BINSTRING + bytes([len(data)]) if len(data) < 256
                else pickle.BINSTRING + struct.pack("<i", len(data)))
        self.write(head + data)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def _python2_pickle(data: object) -> bytes:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(data)
    # numpy 1 (the only numpy of Python 2) lived under numpy.core.
    return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def _assert_same_gt(gt: DetectionGroundTruth, raw: dict) -> None:
    assert gt.labels == raw["labels"] and gt.nframes == raw["nframes"]
    assert gt.train_videos == raw["train_videos"] and gt.test_videos == raw["test_videos"]
    assert gt.resolution == raw["resolution"]
    assert gt.tubes.keys() == raw["gttubes"].keys()
    for video, by_label in raw["gttubes"].items():
        assert gt.tubes[video].keys() == by_label.keys()
        for label, tubes in by_label.items():
            assert len(gt.tubes[video][label]) == len(tubes)
            for got, expected in zip(gt.tubes[video][label], tubes):
                assert got.dtype == np.float32
                np.testing.assert_array_equal(got, expected)


def test_ground_truth_round_trip_writes_protocol_2(tmp_path):
    raw = _raw_gt()
    gt = load_detection_gt(_dump(raw, tmp_path / "JHMDB-GT.pkl"))
    _assert_same_gt(gt, raw)
    save_detection_gt(gt, tmp_path / "again.pkl")
    assert (tmp_path / "again.pkl").read_bytes()[:2] == b"\x80\x02"  # protocol 2, like ACT's
    again = load_detection_gt(tmp_path / "again.pkl")
    _assert_same_gt(again, raw)
    assert again.num_splits == 3 and again.source == str(tmp_path / "again.pkl")
    assert again.split_videos(2, "train") == ["catch/b", "catch/c"]
    assert again.split_videos(3, "test") == ["catch/b", "catch/c"]


def test_python2_pickle_with_numpy_arrays_and_scalars_loads(tmp_path):
    raw = _raw_gt()
    raw["nframes"] = {video: np.int64(count) for video, count in raw["nframes"].items()}
    data = _python2_pickle(raw)
    assert b"numpy.core.multiarray\n_reconstruct" in data and b"_codecs" not in data
    assert b"numpy.core.multiarray\nscalar" in data
    path = tmp_path / "UCF101v2-GT.pkl"
    path.write_bytes(data)
    gt = load_detection_gt(path)
    _assert_same_gt(gt, _raw_gt())
    assert all(isinstance(count, int) for count in gt.nframes.values())


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo pwned > {self.marker}",)


@pytest.mark.parametrize("payload", ["os.system", "OrderedDict", "inside a tube"])
def test_unsafe_pickle_is_refused_naming_the_file_and_class(tmp_path, payload):
    marker = tmp_path / "pwned"
    if payload == "os.system":
        data, named = _RunsCommand(marker), f"{os.system.__module__}.system"
    elif payload == "OrderedDict":
        data, named = collections.OrderedDict(_raw_gt()), "collections.OrderedDict"
    else:
        data = _raw_gt()
        data["gttubes"]["catch/c"][1] = [_RunsCommand(marker)]
        named = f"{os.system.__module__}.system"
    path = _dump(data, tmp_path / "evil.pkl")
    with pytest.raises(UnsafePickleError) as caught:
        load_detection_gt(path)
    assert str(path) in str(caught.value) and named in str(caught.value)
    assert isinstance(caught.value, AnnotationError)
    assert not marker.exists()  # nothing ran
    with pytest.raises(UnsafePickleError, match="refusing to load"):
        safe_load_pickle(path)


def test_truncated_and_missing_pickles_name_the_file(tmp_path):
    good = _dump(_raw_gt(), tmp_path / "good.pkl")
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(good.read_bytes()[:100])
    with pytest.raises(DetectionAnnotationError, match=r"cut\.pkl: not a readable pickle"):
        load_detection_gt(cut)
    with pytest.raises(DetectionAnnotationError, match=r"absent\.pkl: cannot read"):
        load_detection_gt(tmp_path / "absent.pkl")


def _missing_key(raw):
    del raw["nframes"]


def _absent_from_gttubes(raw):
    raw["test_videos"][1].append("catch/ghost")
    raw["nframes"]["catch/ghost"] = 4


def _gap_in_frames(raw):
    tube = _tube(1, 6)
    raw["gttubes"]["catch/b"][1][1] = np.delete(tube, 3, axis=0)  # frames 1, 2, 3, 5, 6


def _x2_below_x1(raw):
    raw["gttubes"]["catch/b"][1][0][1, 3] = 5.0  # x2 = 5 < x1 = 13 at frame 3


def _y2_below_y1(raw):
    raw["gttubes"]["catch/b"][1][0][2, 4] = 19.0


def _past_the_last_frame(raw):
    raw["gttubes"]["catch/b"][1][1] = _tube(4, 9)  # the video has 8 frames


def _frame_zero(raw):
    raw["gttubes"]["catch/b"][1][0] = _tube(0, 3)  # frames are 1-based


def _label_out_of_range(raw):
    raw["gttubes"]["catch/b"] = {2: raw["gttubes"]["catch/b"][1]}


def _tubes_without_nframes(raw):
    del raw["nframes"]["catch/b"]


@pytest.mark.parametrize("corrupt, video, reason", [
    (_missing_key, None, "missing key(s) nframes"),
    (_absent_from_gttubes, "catch/ghost", "in test_videos of split 2 but absent from gttubes"),
    (_gap_in_frames, "catch/b", "tube frames 1..6 are not contiguous"),
    (_x2_below_x1, "catch/b", "box at frame 3 has x2 < x1 or y2 < y1"),
    (_y2_below_y1, "catch/b", "box at frame 4 has x2 < x1 or y2 < y1"),
    (_past_the_last_frame, "catch/b", "tube frames 4..9 are outside 1..8"),
    (_frame_zero, "catch/b", "tube frames 0..3 are outside 1..8"),
    (_label_out_of_range, "catch/b", "label index 2 is outside 0..1"),
    (_tubes_without_nframes, "catch/b", "no entry in nframes"),
])
def test_bad_ground_truth_names_the_file_and_the_video(tmp_path, corrupt, video, reason):
    raw = _raw_gt()
    corrupt(raw)
    path = _dump(raw, tmp_path / "GT.pkl")
    with pytest.raises(DetectionAnnotationError) as caught:
        load_detection_gt(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and reason in message, message
    assert caught.value.video == video
    if video is not None:
        assert f"video {video!r}" in message
    # save_detection_gt refuses the same data rather than writing a bad file.
    if video is not None:
        with pytest.raises(DetectionAnnotationError, match="video"):
            bad = DetectionGroundTruth(raw["labels"], raw["gttubes"], raw["nframes"],
                                       raw["resolution"], raw["train_videos"], raw["test_videos"])
            save_detection_gt(bad, tmp_path / "never.pkl")
        assert not (tmp_path / "never.pkl").exists()


def test_bad_split_number_names_the_file(tmp_path):
    path = _dump(_raw_gt(), tmp_path / "JHMDB-GT.pkl")
    gt = load_detection_gt(path)
    for split in (0, 4):
        expected = rf"JHMDB-GT\.pkl: split {split} does not exist; the file has splits 1\.\.3"
        with pytest.raises(DetectionAnnotationError, match=expected):
            gt.split_videos(split, "test")
    with pytest.raises(ValueError, match="subset"):
        gt.split_videos(1, "val")


def _proposals() -> dict:
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 300, size=(3, 4)).astype(np.float32)
    boxes[:, 2:] += boxes[:, :2]  # x2 >= x1, y2 >= y1
    rows = np.concatenate([boxes, rng.uniform(0, 1, size=(3, 1)).astype(np.float32)], axis=1)
    return {"catch/b": {1: rows, 2: rows[:1], 8: rows[::-1].copy()},
            "brush_hair/a": {5: rows[1:], 3: np.zeros((0, 5), np.float32)}}


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_proposals_round_trip_is_exact(tmp_path, suffix):
    proposals, gt = _proposals(), load_detection_gt(_dump(_raw_gt(), tmp_path / "GT.pkl"))
    save_proposals(proposals, tmp_path / f"proposals{suffix}")
    loaded = load_proposals(tmp_path / f"proposals{suffix}", gt)
    # A frame without boxes survives in JSON; in .npz it has no rows, hence no entry.
    expected = {v: {f: b for f, b in frames.items() if len(b) or suffix == ".json"}
                for v, frames in proposals.items()}
    assert {v: sorted(f) for v, f in loaded.items()} == {v: sorted(f) for v, f in expected.items()}
    for video, frames in expected.items():
        for frame, boxes in frames.items():
            assert loaded[video][frame].dtype == np.float32 and loaded[video][frame].shape[1] == 5
            np.testing.assert_array_equal(loaded[video][frame], boxes)


def test_proposals_json_layout_is_the_documented_one(tmp_path):
    save_proposals({"catch/b": {2: np.array([[1.5, 2, 3.25, 4, 0.5]])}}, tmp_path / "p.json")
    written = json.loads((tmp_path / "p.json").read_text())
    assert written == {"catch/b": {"2": [[1.5, 2, 3.25, 4, 0.5]]}}


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_proposals_for_unknown_videos_or_frames_are_refused(tmp_path, suffix, caplog):
    gt = load_detection_gt(_dump(_raw_gt(), tmp_path / "GT.pkl"))
    box = np.array([[1, 2, 3, 4, 0.9]], np.float32)
    path = tmp_path / f"p{suffix}"
    save_proposals({"catch/b": {1: box}, "walk/nobody": {1: box}}, path)
    with pytest.raises(DetectionAnnotationError) as caught:
        load_proposals(path, gt)
    assert str(path) in str(caught.value) and "'walk/nobody'" in str(caught.value)
    assert "not in the ground truth" in str(caught.value)
    assert set(load_proposals(path, gt, strict=False)) == {"catch/b"}
    assert "dropped" in caplog.text
    assert set(load_proposals(path)) == {"catch/b", "walk/nobody"}  # no ground truth, no check
    save_proposals({"catch/b": {9: box}}, path)  # catch/b has 8 frames
    with pytest.raises(DetectionAnnotationError, match=r"'catch/b': frame 9 is outside 1\.\.8"):
        load_proposals(path, gt)
    assert load_proposals(path, gt, strict=False) == {"catch/b": {}}


def test_malformed_proposals_name_the_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"catch/b": {"1": [[1, 2, 3]]}}))
    with pytest.raises(DetectionAnnotationError, match=r"p\.json: video 'catch/b': frame 1"):
        load_proposals(path)
    path.write_text(json.dumps({"catch/b": {"1": [[5, 2, 3, 4, 0.5]]}}))  # x2 < x1
    with pytest.raises(DetectionAnnotationError, match="x2 >= x1"):
        load_proposals(path)
    path.write_text("[1, 2")
    with pytest.raises(DetectionAnnotationError, match=r"p\.json: not a proposals file"):
        load_proposals(path)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_mmaction_proposals_convert_to_pixels(tmp_path, protocol):
    gt = load_detection_gt(_dump(_raw_gt(), tmp_path / "GT.pkl"))
    data = {"catch/c,0001": np.array([[0.1, 0.25, 0.5, 0.75, 0.9], [0, 0, 1, 1, 0.2]], np.float32),
            "catch/c,0003": np.array([[0.5, 0.5, 0.625, 1.0]], np.float32),  # no score column
            "catch/b,0008": np.array([[0.25, 0.5, 0.5, 1.0, 0.3]], np.float32)}
    path = _dump(data, tmp_path / "dense_proposals.pkl", protocol)
    loaded = load_mmaction_proposals(path, gt)
    # catch/c is 120 high and 160 wide, catch/b 240 x 320: x scales by the width.
    np.testing.assert_allclose(loaded["catch/c"][1], [[16, 30, 80, 90, 0.9], [0, 0, 160, 120, 0.2]])
    np.testing.assert_allclose(loaded["catch/c"][3], [[80, 60, 100, 120, 1.0]])
    np.testing.assert_allclose(loaded["catch/b"][8], [[80, 120, 160, 240, 0.3]])
    assert sorted(loaded) == ["catch/b", "catch/c"] and loaded["catch/c"][1].dtype == np.float32
    override = load_mmaction_proposals(path, resolution={"catch/c": (10, 20), "catch/b": (1, 1)})
    np.testing.assert_allclose(override["catch/c"][1][0], [2, 2.5, 10, 7.5, 0.9])


def test_mmaction_proposals_unknown_video_unnormalised_or_unsafe_are_refused(tmp_path):
    gt = load_detection_gt(_dump(_raw_gt(), tmp_path / "GT.pkl"))
    row = np.array([[0.1, 0.1, 0.2, 0.2, 0.5]], np.float32)
    path = _dump({"catch/c,0001": row, "-5KQ66BBWC4,0902": row}, tmp_path / "ava.pkl")
    with pytest.raises(DetectionAnnotationError, match=r"ava\.pkl: video '-5KQ66BBWC4'"):
        load_mmaction_proposals(path, gt)
    assert list(load_mmaction_proposals(path, gt, strict=False)) == ["catch/c"]
    _dump({"catch/c,0004": row}, path)  # catch/c has 3 frames
    with pytest.raises(DetectionAnnotationError, match=r"'catch/c': frame 4 is outside 1\.\.3"):
        load_mmaction_proposals(path, gt)
    _dump({"catch/c,0001": row * 100}, path)
    with pytest.raises(DetectionAnnotationError, match="not normalised"):
        load_mmaction_proposals(path, gt)
    _dump(collections.OrderedDict({"catch/c,0001": row}), path)
    with pytest.raises(UnsafePickleError, match=r"ava\.pkl: .*collections\.OrderedDict"):
        load_mmaction_proposals(path, gt)
    with pytest.raises(ValueError, match="resolution"):
        load_mmaction_proposals(path)
