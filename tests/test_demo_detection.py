"""``lgdnet demo --task detection``: the pipeline runs (tiny), and learns (quick, slow)."""

from __future__ import annotations

import json

import pytest

from lgdnet.cli import main


def _results(out):
    return json.loads((out / "results" / "metrics.json").read_text())


def test_tiny_detection_demo_runs_through(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--task", "detection", "--mode", "tiny", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "frame-mAP@0.5" in printed and "baseline: proposal scores" in printed
    record = _results(out)
    for name in ("detector", "baseline"):
        values = [record[name]["frame_mAP"]["0.5"], *record[name]["video_mAP"].values()]
        assert all(0.0 <= v <= 1.0 for v in values)
    assert (out / "results" / "detections.json").is_file()
    assert list((out / "results").glob("*.mp4"))
    assert (out / "detector" / "stage1_best.safetensors").is_file()
    # the classification demo is still the default task
    assert not (out / "run").exists()


@pytest.mark.slow
def test_quick_detection_demo_beats_the_baseline(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--task", "detection", "--quick", "--out", str(out),
                 "--no-progress"]) == 0
    record = _results(out)
    assert record["detector"]["video_mAP"]["0.5"] > record["baseline"]["video_mAP"]["0.5"]
    assert record["detector"]["frame_mAP"]["0.5"] > record["baseline"]["frame_mAP"]["0.5"]
