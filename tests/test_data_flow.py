"""TV-L1 flow: accuracy on a known motion, quantisation, extraction, resuming, reading, CLI."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lgdnet.cli import main as cli_main
from lgdnet.data import flow_extraction
from lgdnet.data.annotations import load_annotations
from lgdnet.data.decoding import open_video
from lgdnet.data.flow import (
    FLOW_ZERO_LEVEL,
    TVL1_DEFAULT,
    TVL1_FAST,
    compute_tvl1_flow,
    dequantize_flow,
    flow_frame_name,
    open_flow,
    quantize_flow,
    tvl1_flow,
)
from lgdnet.data.flow_extraction import extract_flow_dataset, extract_video_flow, extraction_size
from lgdnet.errors import ConfigError, VideoReadError

CLIPS = Path(__file__).parent / "data" / "clips"
UCF_CLIP = CLIPS / "v_SoccerJuggling_g23_c01.avi"
HMDB_CLIP = CLIPS / "RATRACE_wave_f_nm_np1_fr_goo_37.avi"
TINY = (24, 32)  # extraction size that keeps real-clip tests to a fraction of a second


@dataclass(frozen=True)
class Record:  # the fields of lgdnet.data.VideoRecord that extraction uses
    path: str
    label: int
    video_id: str


def translating_pair(dx: int, dy: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Two gray frames of a smooth random texture whose content moves by (dx, dy) pixels."""
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.random((size + 40, size + 40)).astype(np.float32), (0, 0), 2.5)
    texture = (texture - texture.min()) / (texture.max() - texture.min()) * 255
    texture = texture.astype(np.uint8)
    first = texture[20:20 + size, 20:20 + size]
    # content at (x, y) in the first frame is at (x + dx, y + dy) in the second
    second = texture[20 - dy:20 - dy + size, 20 - dx:20 - dx + size]
    return np.stack([first, second])


@pytest.mark.parametrize("params", [TVL1_DEFAULT, TVL1_FAST], ids=["default", "fast"])
@pytest.mark.parametrize("dx, dy", [(3, -2), (-2, 4)])
def test_tvl1_recovers_a_translation_with_x_positive_rightward(params, dx, dy):
    frames = translating_pair(dx, dy)
    flow = tvl1_flow(frames, params)
    assert flow.shape == (1, 64, 64, 2) and flow.dtype == np.float32
    interior = flow[0, 12:-12, 12:-12]
    assert abs(np.median(interior[..., 0]) - dx) < 0.3
    assert abs(np.median(interior[..., 1]) - dy) < 0.3
    # the stored (quantised) flow says the same within one 8-bit step
    stored = dequantize_flow(compute_tvl1_flow(frames, bound=20, params=params), bound=20)
    assert abs(np.median(stored[0, 12:-12, 12:-12, 0]) - dx) < 0.3 + 40 / 255


def test_tvl1_accepts_rgb_torch_frames_and_gives_no_flow_on_a_still_clip():
    still = torch.from_numpy(np.repeat(translating_pair(0, 0)[:1, ..., None], 3, -1)).repeat(3, 1, 1, 1)
    quantized = compute_tvl1_flow(still)
    assert quantized.shape == (2, 64, 64, 2) and quantized.dtype == np.uint8
    assert np.all(np.abs(quantized.astype(int) - FLOW_ZERO_LEVEL) <= 0.5)


def test_quantisation_round_trip_within_one_step_and_zero_at_127_5():
    bound = 20.0
    flow = np.random.default_rng(1).uniform(-bound, bound, size=(5, 7, 9, 2)).astype(np.float32)
    quantized = quantize_flow(flow, bound)
    assert quantized.dtype == np.uint8
    step = 2 * bound / 255
    assert np.abs(dequantize_flow(quantized, bound) - flow).max() <= step / 2 + 1e-5
    assert dequantize_flow(np.float32(FLOW_ZERO_LEVEL), bound) == 0.0
    assert quantize_flow(np.zeros(1), bound)[0] == 128  # 127.5 rounds half to even: 128
    assert np.array_equal(quantize_flow(np.array([-bound, bound]), bound), [0, 255])


def test_quantisation_clips_to_the_bound():
    flow = np.array([-100.0, -5.0, 5.0, 100.0], dtype=np.float32)
    restored = dequantize_flow(quantize_flow(flow, bound=5.0), bound=5.0)
    np.testing.assert_allclose(restored, [-5.0, -5.0, 5.0, 5.0], atol=1e-5)
    with pytest.raises(ValueError):
        quantize_flow(flow, bound=0)


def test_extraction_size_keeps_the_aspect_like_the_rgb_stream():
    assert extraction_size(240, 320, short_side=256) == (256, 341)
    assert extraction_size(320, 240, short_side=128) == (171, 128)
    assert extraction_size(240, 560, short_side=None) == (240, 560)
    assert extraction_size(240, 320, short_side=256, size=(112, 112)) == (112, 112)


def test_tvl1_on_real_clip_frames_finds_motion():
    with open_video(UCF_CLIP) as video:
        frames = video.get_frames(range(6), size=(60, 80))
    flow = tvl1_flow(frames, TVL1_FAST)
    assert flow.shape == (5, 60, 80, 2)
    magnitude = np.sqrt((flow ** 2).sum(-1))
    assert magnitude.mean() > 0.05  # the juggler moves
    assert np.isfinite(flow).all()


@pytest.fixture(scope="module")
def ten_frame_folder(tmp_path_factory) -> Path:
    """The first 10 frames of a real UCF101 clip as a frame folder (img_00001.jpg, ...)."""
    folder = tmp_path_factory.mktemp("frames") / "soccer10"
    folder.mkdir()
    with open_video(UCF_CLIP) as video:
        frames = video.get_frames(range(10), size=(48, 64)).numpy()
    for index, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"img_{index + 1:05d}.jpg"), frame[..., ::-1])
    return folder


def test_extract_video_flow_writes_the_tsn_layout(ten_frame_folder, tmp_path):
    out = tmp_path / "soccer10"
    count = extract_video_flow(ten_frame_folder, out, flow_extraction.FlowExtractionConfig(
        short_side=None, tvl1=TVL1_FAST))
    assert count == 9
    names = sorted(os.listdir(out))
    assert names == sorted([flow_frame_name(c, i) for c in "xy" for i in range(9)])
    assert names[0] == "flow_x_00001.jpg" and names[-1] == "flow_y_00009.jpg"
    image = cv2.imread(str(out / "flow_x_00001.jpg"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (48, 64) and image.dtype == np.uint8
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no partial left


def test_png_flow_reads_back_exactly_what_was_computed(ten_frame_folder, tmp_path):
    config = flow_extraction.FlowExtractionConfig(short_side=None, tvl1=TVL1_FAST,
                                                  image_format="png")
    extract_video_flow(ten_frame_folder, tmp_path / "v", config)
    with open_video(ten_frame_folder) as video:
        expected = compute_tvl1_flow(video.get_frames(range(10)), 20.0, TVL1_FAST)
    with open_flow(tmp_path / "v") as flow:
        assert (flow.num_frames, flow.height, flow.width, flow.fps) == (9, 48, 64, None)
        frames = flow.get_frames([0, 8, 0])
        assert frames.dtype == torch.uint8 and frames.shape == (3, 48, 64, 2)
        assert torch.equal(frames[0], torch.from_numpy(expected[0]))
        assert torch.equal(frames[1], torch.from_numpy(expected[8]))
        assert torch.equal(frames[2], frames[0])
        assert flow.get_frames([1], size=(24, 32)).shape == (1, 24, 32, 2)


def _write_flow_folder(folder: Path, frames: np.ndarray, prefixes=("flow_x_", "flow_y_")) -> None:
    folder.mkdir(parents=True)
    for index, pair in enumerate(frames):
        for channel, prefix in enumerate(prefixes):
            cv2.imwrite(str(folder / f"{prefix}{index + 1:05d}.png"), pair[..., channel])


def test_open_flow_returns_x_then_y_and_reads_the_short_layout(tmp_path):
    frames = np.random.default_rng(2).integers(0, 256, size=(4, 6, 5, 2), dtype=np.uint8)
    for name, prefixes in [("long", ("flow_x_", "flow_y_")), ("short", ("x_", "y_"))]:
        _write_flow_folder(tmp_path / name, frames, prefixes)
        with open_flow(tmp_path / name) as flow:
            assert len(flow) == 4 and (flow.height, flow.width) == (6, 5)
            assert np.array_equal(flow.get_frames([3, 1]).numpy(), frames[[3, 1]])


def test_open_flow_rejects_bad_folders(tmp_path):
    with pytest.raises(VideoReadError, match="does not exist"):
        open_flow(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoReadError, match="no flow frames"):
        open_flow(tmp_path / "empty")
    frames = np.full((3, 4, 4, 2), 128, dtype=np.uint8)
    _write_flow_folder(tmp_path / "unpaired", frames)
    (tmp_path / "unpaired" / "flow_y_00003.png").unlink()
    with pytest.raises(VideoReadError, match="pair"):
        open_flow(tmp_path / "unpaired")
    _write_flow_folder(tmp_path / "gap", frames)
    for component in "xy":
        (tmp_path / "gap" / f"flow_{component}_00002.png").unlink()
    with pytest.raises(VideoReadError, match="contiguous"):
        open_flow(tmp_path / "gap")
    _write_flow_folder(tmp_path / "ok", frames)
    with pytest.raises(VideoReadError, match="out of range"):
        open_flow(tmp_path / "ok").get_frames([3])
    cv2.imwrite(str(tmp_path / "ok" / "flow_y_00002.png"), np.zeros((5, 4), np.uint8))
    with pytest.raises(VideoReadError, match="first is"):
        open_flow(tmp_path / "ok").get_frames([1])


def test_dataset_extraction_reports_bad_videos_and_writes_a_loadable_list(tmp_path):
    (tmp_path / "empty.avi").write_bytes(b"")
    records = [
        Record(str(HMDB_CLIP), 0, "../escape"),
        Record(str(HMDB_CLIP), 1, "wave/RATRACE"),  # a real DivX AVI; nested id as in HMDB51
        Record(str(tmp_path / "missing.avi"), 0, "missing"),
        Record(str(tmp_path / "empty.avi"), 0, "empty"),
    ]
    out = tmp_path / "flow"
    report = extract_flow_dataset(records, out, size=TINY, tvl1=TVL1_FAST, progress=False,
                                  classes=["brush_hair", "wave"])
    assert report.extracted == ["wave/RATRACE"]
    assert sorted(v for v, _ in report.failed) == ["../escape", "empty", "missing"]
    assert "file not found" in dict(report.failed)["missing"]
    assert not report.ok
    with open_video(HMDB_CLIP) as video:
        expected = video.num_frames - 1
    with open_flow(out / "wave" / "RATRACE") as flow:
        assert (flow.num_frames, flow.height, flow.width, flow.bound) == (expected, *TINY, 20.0)
    annotations = load_annotations(report.list_path, root=out)
    assert annotations.classes == ["brush_hair", "wave"]
    (record,) = annotations.records
    assert (record.video_id, record.label, record.num_frames) == ("wave/RATRACE", 1, expected)
    assert open_flow(record.path).num_frames == expected
    assert json.loads((out / "flow_info.json").read_text())["tvl1"]["warps"] == TVL1_FAST.warps


def test_extraction_resumes_and_never_takes_a_partial_folder_as_done(
    ten_frame_folder, tmp_path, monkeypatch
):
    records = [Record(str(ten_frame_folder), 0, "a"), Record(str(ten_frame_folder), 1, "b")]
    out = tmp_path / "flow"
    options = dict(short_side=None, tvl1=TVL1_FAST, progress=False)
    # an earlier run died while writing "b": a hidden partial folder with some frames
    partial = out / ".b.partial"
    partial.mkdir(parents=True)
    (partial / "flow_x_00001.jpg").write_bytes(b"half")
    # and this run is interrupted inside "a" after two flow frames
    write_pair = flow_extraction._write_pair
    calls = {"n": 0}

    def failing_write(folder, index, pair, config):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        write_pair(folder, index, pair, config)

    monkeypatch.setattr(flow_extraction, "_write_pair", failing_write)
    first = extract_flow_dataset(records, out, **options)
    assert [v for v, _ in first.failed] == ["a"] and "disk full" in first.failed[0][1]
    assert first.extracted == ["b"]
    assert not (out / "a").exists() and not (out / ".a.partial").exists()
    assert not partial.exists() and open_flow(out / "b").num_frames == 9

    monkeypatch.setattr(flow_extraction, "_write_pair", write_pair)
    second = extract_flow_dataset(records, out, **options)
    assert second.extracted == ["a"] and second.skipped == ["b"] and second.ok
    third = extract_flow_dataset(records, out, **options)
    assert third.extracted == [] and third.skipped == ["a", "b"]
    assert third.num_flow_frames == {"a": 9, "b": 9}
    assert (out / "flow_list.txt").read_text() == "a 9 0\nb 9 1\n"
    with pytest.raises(ConfigError, match="bound"):
        extract_flow_dataset(records, out, **{**options, "bound": 10.0})
    from lgdnet.locking import LOCK_NAME, FolderLockedError

    with open(out / LOCK_NAME, "w") as lock:  # another run holds the folder
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(FolderLockedError, match="in use by another lgdnet process"):
            extract_flow_dataset(records, out, **options)


@pytest.mark.slow
def test_parallel_extraction_matches_the_serial_one(ten_frame_folder, tmp_path):
    records = [Record(str(ten_frame_folder), i, f"v{i}") for i in range(3)]
    records.append(Record(str(tmp_path / "missing.avi"), 0, "missing"))
    options = dict(short_side=None, tvl1=TVL1_FAST, progress=False, image_format="png")
    serial = extract_flow_dataset(records[:1], tmp_path / "serial", workers=1, **options)
    parallel = extract_flow_dataset(records, tmp_path / "parallel", workers=2, **options)
    assert serial.ok and sorted(parallel.extracted) == ["v0", "v1", "v2"]
    assert [v for v, _ in parallel.failed] == ["missing"]
    expected = open_flow(tmp_path / "serial" / "v0").get_frames(range(9))
    for video_id in ("v0", "v1", "v2"):
        assert torch.equal(open_flow(tmp_path / "parallel" / video_id).get_frames(range(9)),
                           expected)


def test_cli_extracts_a_list_and_exits_1_listing_failures(ten_frame_folder, tmp_path, capsys):
    root = tmp_path / "videos"
    shutil.copytree(ten_frame_folder, root / "clip_a")
    shutil.copy(HMDB_CLIP, root / "clip_b.avi")
    annotations = tmp_path / "videos.txt"
    annotations.write_text("clip_a 0\nclip_b.avi 1\n")
    out = tmp_path / "flow"
    args = ["extract-flow", str(annotations), "--root", str(root), "--out", str(out),
            "--size", "24x32", "--fast", "--workers", "1", "--no-progress"]
    assert cli_main(args) == 0
    with open_video(HMDB_CLIP) as video:
        clip_b_flow_frames = video.num_frames - 1
    listed = load_annotations(out / "flow_list_videos.txt", root=out)
    assert [(r.video_id, r.num_frames) for r in listed.records] == [
        ("clip_a", 9), ("clip_b", clip_b_flow_frames)]
    assert open_flow(out / "clip_b").get_frames([0]).shape == (1, 24, 32, 2)

    annotations.write_text("clip_a 0\nnot_there.avi 1\n")
    capsys.readouterr()
    assert cli_main(args) == 1
    captured = capsys.readouterr()
    assert "skipped 1" in captured.out
    assert "not_there" in captured.err and "file not found" in captured.err
    assert cli_main(args[:-3] + ["--size", "8x8", "--workers", "1", "--no-progress"]) == 2


def test_extracted_flow_feeds_the_flow_dataset(ten_frame_folder, tmp_path):
    from lgdnet.data import SamplingSpec, VideoDataset

    out = tmp_path / "flow"
    report = extract_flow_dataset([Record(str(ten_frame_folder), 0, "soccer")], out,
                                  short_side=None, tvl1=TVL1_FAST, progress=False)
    records = load_annotations(report.list_path, root=out).records
    spec = SamplingSpec.for_3d(num_frames=4, train_resize=(48, 64), crop_size=32,
                               test_short_side=48, num_test_views=2)
    train = VideoDataset(records, spec, mode="train", modality="flow")[0]["video"]
    assert train.shape == (2, 4, 32, 32) and train.dtype == torch.float32
    assert train.abs().max() <= 1.0 and train.abs().max() > 0  # normalised, not all zero
    test = VideoDataset(records, spec, mode="test", modality="flow")[0]["video"]
    assert test.shape == (2, 2, 4, 48, 64)
