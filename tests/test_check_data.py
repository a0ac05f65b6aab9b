"""``lgdnet check-data`` finds every planted problem, and passes a clean dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lgdnet.cli import main as cli_main
from lgdnet.data.annotations import VideoRecord, save_classes
from lgdnet.data.checking import check_dataset, check_video
from lgdnet.data.synthetic import render_clip, write_synthetic_dataset, write_video

CLIPS = Path(__file__).parent / "data" / "clips"
REAL = ["v_SoccerJuggling_g23_c01.avi", "RATRACE_wave_f_nm_np1_fr_goo_37.avi", "R6llTwEh07w.mp4"]


@pytest.fixture
def clean_root(tmp_path) -> Path:
    """The three real clips (UCF101 Xvid, HMDB51 DivX, Kinetics H.264 + audio), listed by name."""
    root = tmp_path / "data"
    (root / "videos").mkdir(parents=True)
    for name in REAL:
        shutil.copy(CLIPS / name, root / "videos" / name)
    save_classes(root / "classes.txt", ["juggle", "wave", "other"])
    (root / "clean.txt").write_text("".join(f"videos/{name} {label}\n" for label, name in enumerate(REAL)))
    return root


def test_clean_real_clips_pass(clean_root, capsys):
    report = check_dataset(clean_root / "clean.txt", workers=2, progress=False)
    assert report.ok and report.num_videos_checked == 3, report.problems
    assert cli_main(["check-data", str(clean_root / "clean.txt"), "--quiet"]) == 0
    assert "no problems" in capsys.readouterr().out


def test_every_planted_problem_is_reported(clean_root, capsys):
    videos = clean_root / "videos"
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "notes.mp4").write_text("these are my holiday notes, not a video\n" * 20)
    head = (CLIPS / REAL[0]).read_bytes()
    (videos / "truncated.avi").write_bytes(head[: len(head) * 2 // 5])
    write_video(videos / "short.mp4", render_clip("approach", np.random.default_rng(0), 8, (48, 64)))
    lines = [
        f"videos/{REAL[0]} juggle",          # 1 fine
        "videos/missing.mp4 wave",           # 2 missing
        "videos/empty.mp4 wave",             # 3 zero bytes
        "videos/notes.mp4 other",            # 4 text as video
        "videos/short.mp4 juggle",           # 5 8 frames < 16
        f"videos/{REAL[1]} dance",           # 6 unknown label
        f"videos/{REAL[0]} juggle",          # 7 duplicate of line 1
        "videos/truncated.avi juggle",       # 8 truncated
        f"videos/{REAL[2]} 7",               # 9 label out of range
    ]
    annotations = clean_root / "planted.txt"
    annotations.write_text("\n".join(lines) + "\n")
    report = check_dataset(annotations, workers=3, progress=False)
    assert not report.ok
    found = {(p.kind, Path(p.path).name if p.kind != "annotation" else p.where.rsplit(":", 1)[1]) for p in report.problems}
    assert found == {
        ("annotation", "6"), ("annotation", "9"), ("duplicate", REAL[0]), ("missing", "missing.mp4"),
        ("unreadable", "empty.mp4"), ("unreadable", "notes.mp4"), ("unreadable", "truncated.avi"),
        ("too-short", "short.mp4")}
    reasons = {Path(p.path).name: p.detail for p in report.problems}
    assert "empty" in reasons["empty.mp4"] and "truncated" in reasons["truncated.avi"]
    assert "8 frames" in reasons["short.mp4"]
    duplicate = next(p for p in report.problems if p.kind == "duplicate")
    assert duplicate.where.endswith("planted.txt:7") and duplicate.detail.endswith("planted.txt:1")
    assert report.counts() == {"annotation": 2, "duplicate": 1, "missing": 1, "unreadable": 3, "too-short": 1}

    assert cli_main(["check-data", str(annotations), "--root", str(clean_root), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "unknown class name 'dance'" in out and "8 problems" in out
    assert cli_main(["check-data", str(annotations), "--quiet", "--json", "--min-frames", "4"]) == 1
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["ok"] is False and "too-short" not in parsed["counts"]  # 8 frames >= 4
    assert len(parsed["problems"]) == 7


def test_rawframes_count_mismatch_and_missing_annotation_file(tmp_path, capsys):
    folder = tmp_path / "frames" / "clip"
    folder.mkdir(parents=True)
    import cv2

    for i in range(1, 21):
        cv2.imwrite(str(folder / f"img_{i:05d}.jpg"), np.full((16, 16, 3), i * 10, np.uint8))
    records = {"right": VideoRecord(str(folder), 0, "clip", 20), "wrong": VideoRecord(str(folder), 0, "clip", 24)}
    assert check_video(records["right"]) == []
    assert check_video(records["wrong"]) == [("frame-count", "the list says 24 frames, the video has 20")]
    # A list that cannot be read at all is an error (status 2), not a report.
    assert cli_main(["check-data", str(tmp_path / "nothing.txt"), "--quiet"]) == 2
    assert "nothing.txt" in capsys.readouterr().err


def test_small_synthetic_set_is_clean_until_a_video_goes(tmp_path):
    dataset = write_synthetic_dataset(tmp_path / "s", clips_per_class=1, num_frames=16, size=(32, 48),
                                      val_fraction=0.0, workers=1, progress=False)
    report = check_dataset(dataset.train_list, progress=False)
    assert report.ok and report.num_videos_checked == 8
    shutil.rmtree(dataset.root / "videos" / "pass_by")
    report = check_dataset(dataset.train_list, progress=False)
    assert [(p.kind, Path(p.path).name) for p in report.problems] == [("missing", "pass_by_0000.mp4")]


def test_ucf101_splits_folder_with_one_clip_present(tmp_path):
    (tmp_path / "SoccerJuggling").mkdir()
    shutil.copy(CLIPS / REAL[0], tmp_path / "SoccerJuggling" / REAL[0])
    splits = Path(__file__).parent / "data" / "annotations" / "ucf101"
    report = check_dataset(splits, root=tmp_path, progress=False)
    assert [p.kind for p in report.problems] == ["missing"] * 3
    assert all(p.where.startswith(str(splits / "trainlist01.txt")) for p in report.problems)
    assert REAL[0] not in {Path(p.path).name for p in report.problems}
