"""``lgdnet extract-frames``: TSN/MMAction2 layout, resizing, resuming, bad videos reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from lgdnet.cli import main as cli_main
from lgdnet.data.annotations import VideoRecord, load_annotations, save_classes
from lgdnet.data.decoding import open_video
from lgdnet.data.frame_extraction import FrameExtractionConfig, extract_frames, extract_video_frames
from lgdnet.data.synthetic import render_clip, write_video
from lgdnet.errors import ConfigError

CLIPS = Path(__file__).parent / "data" / "clips"
HMDB = "RATRACE_wave_f_nm_np1_fr_goo_37.avi"  # 560x240, non-UTF-8 metadata


def _hmdb_frames() -> int:
    with open_video(CLIPS / HMDB) as video:
        return video.num_frames


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A list with a real HMDB51 clip, a small synthetic clip and a text file posing as a video."""
    root = tmp_path / "data"
    (root / "wave").mkdir(parents=True)
    (root / "toy").mkdir()
    shutil.copy(CLIPS / HMDB, root / "wave" / HMDB)
    write_video(root / "toy" / "orbit.mp4", render_clip("orbit_clockwise", np.random.default_rng(0), 20, (48, 64)))
    (root / "toy" / "broken.mp4").write_text("not a video\n")
    save_classes(root / "classes.txt", ["toy", "wave"])
    (root / "train.txt").write_text(f"wave/{HMDB} wave\ntoy/orbit.mp4 toy\ntoy/broken.mp4 toy\n")
    return root


def test_layout_list_and_bad_video(dataset, tmp_path, capsys):
    out = tmp_path / "frames"
    status = cli_main(["extract-frames", str(dataset / "train.txt"), "--out", str(out), "--short-side", "64",
                       "--workers", "1", "--quiet"])
    assert status == 1  # the broken video is reported, the others are written
    printed = capsys.readouterr().out
    assert "2 extracted" in printed and "1 failed" in printed and "toy/broken" in printed
    wave = out / "wave" / HMDB.removesuffix(".avi")
    names = sorted(p.name for p in wave.iterdir())
    count = _hmdb_frames()
    assert count > 60 and names == [f"img_{i:05d}.jpg" for i in range(1, count + 1)]
    assert cv2.imread(str(wave / "img_00001.jpg")).shape == (64, 149, 3)  # 240x560, shorter side 64
    assert not (out / "toy" / "broken").exists() and not list(out.rglob("*.partial"))

    # The rawframes list reads back with the list loader, and the folders with open_video.
    listed = load_annotations(out / "train_rawframes.txt", root=out)
    assert listed.classes == ["toy", "wave"]
    assert [(r.video_id, r.num_frames, r.label) for r in listed.records] == [
        (f"wave/{HMDB.removesuffix('.avi')}", count, 1), ("toy/orbit", 20, 0)]
    with open_video(listed.records[0].path) as frames, open_video(dataset / "wave" / HMDB) as video:
        assert frames.num_frames == count and (frames.height, frames.width) == (64, 149)
        from_jpeg = frames.get_frames([0, 40, count - 1]).numpy().astype(np.int16)
        from_video = video.get_frames([0, 40, count - 1], size=(64, 149)).numpy().astype(np.int16)
    assert np.abs(from_jpeg - from_video).mean() < 4  # same frames, up to JPEG loss


def test_second_run_skips_finished_videos(dataset, tmp_path):
    records = load_annotations(dataset / "train.txt").records
    out = tmp_path / "frames"
    first = extract_frames(records, out, short_side=32, progress=False)
    assert sorted(first.extracted) == ["toy/orbit", f"wave/{HMDB.removesuffix('.avi')}"]
    assert [video_id for video_id, _ in first.failed] == ["toy/broken"]
    stamp = (out / "toy" / "orbit" / "img_00001.jpg").stat().st_mtime_ns

    shutil.rmtree(out / "wave")
    (out / "toy" / ".broken.partial").mkdir()  # as an interrupted run leaves it
    second = extract_frames(records, out, short_side=32, progress=False)
    assert second.skipped == ["toy/orbit"] and second.num_frames["toy/orbit"] == 20
    assert second.extracted == [f"wave/{HMDB.removesuffix('.avi')}"]
    assert (out / "toy" / "orbit" / "img_00001.jpg").stat().st_mtime_ns == stamp
    assert not (out / "toy" / ".broken.partial").exists()
    assert (out / "rawframes.txt").read_text().splitlines() == [
        f"wave/{HMDB.removesuffix('.avi')} {_hmdb_frames()} 1", "toy/orbit 20 0"]


def test_exact_size_template_and_interrupted_video(tmp_path):
    video = tmp_path / "clip.mp4"
    write_video(video, render_clip("pass_by", np.random.default_rng(1), 10, (48, 64)))
    config = FrameExtractionConfig(size=(30, 40), template="frame{:03d}.jpg", quality=80, chunk_frames=4)
    assert extract_video_frames(video, tmp_path / "out" / "clip", config) == 10
    names = sorted(p.name for p in (tmp_path / "out" / "clip").iterdir())
    assert names == [f"frame{i:03d}.jpg" for i in range(1, 11)]
    assert cv2.imread(str(tmp_path / "out" / "clip" / "frame010.jpg")).shape == (30, 40, 3)
    with pytest.raises(ConfigError, match="template"):
        FrameExtractionConfig(template="img.jpg")
    # A failure mid-video leaves no folder behind.
    (tmp_path / "bad.mp4").write_bytes(video.read_bytes()[:200])
    report = extract_frames([VideoRecord(str(tmp_path / "bad.mp4"), 0, "bad")], tmp_path / "out", progress=False)
    assert not report.ok and not (tmp_path / "out" / "bad").exists()
    assert report.failed[0][1].startswith(str(tmp_path / "bad.mp4"))


def test_unsafe_video_ids_are_refused(tmp_path):
    video = tmp_path / "clip.mp4"
    write_video(video, render_clip("approach", np.random.default_rng(1), 4, (32, 32)))
    records = [VideoRecord(str(video), 0, "../escape"), VideoRecord(str(video), 0, "fine")]
    report = extract_frames(records, tmp_path / "out", progress=False)
    assert [video_id for video_id, _ in report.failed] == ["../escape"] and report.extracted == ["fine"]
    assert not (tmp_path / "escape").exists()


@pytest.mark.slow
def test_parallel_workers_write_the_same_frames(dataset, tmp_path):
    records = load_annotations(dataset / "train.txt").records
    serial = extract_frames(records, tmp_path / "serial", short_side=48, progress=False)
    parallel = extract_frames(records, tmp_path / "parallel", short_side=48, workers=2, progress=False)
    assert serial.num_frames == parallel.num_frames and len(parallel.failed) == 1
    for jpeg in (tmp_path / "serial").rglob("*.jpg"):
        assert jpeg.read_bytes() == (tmp_path / "parallel" / jpeg.relative_to(tmp_path / "serial")).read_bytes()
