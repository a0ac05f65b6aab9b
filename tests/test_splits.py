"""The split runner (Table 6): UCF101/HMDB51 split files over embedded clips, resumable
runs, the averaged table, and bad split input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import tiny_training_config as tiny

from lgdnet.apps.splits import run_splits
from lgdnet.engine import stage as stage_module
from lgdnet.engine.config import apply_overrides, save_config
from lgdnet.errors import AnnotationError, ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["approach", "separate"]
CLIPS = 5  # per class in the two_class_dataset fixture


def test_clip(split, clip):
    """Split N tests on clip N - 1 of each class (the rest train)."""
    return clip == split - 1


test_clip.__test__ = False  # a helper, not a test


def write_ucf101(folder: Path, splits=(1, 2, 3)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASSES)))
    for split in splits:
        train, test = [], []
        for label, name in enumerate(CLASSES):
            for clip in range(CLIPS):
                path = f"{name}/{name}_{clip:04d}.mp4"
                (test if test_clip(split, clip) else train).append(
                    path if test_clip(split, clip) else f"{path} {label + 1}")
        (folder / f"trainlist{split:02d}.txt").write_text("\n".join(train) + "\n")
        (folder / f"testlist{split:02d}.txt").write_text("\n".join(test) + "\n")
    return folder


def write_hmdb51(folder: Path, splits=(1, 2, 3), extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        for name in CLASSES:
            lines = [f"{name}_{clip:04d}.mp4 {2 if test_clip(split, clip) else 1}"
                     for clip in range(CLIPS)]
            if extra and name == CLASSES[0]:
                lines.append(f"{extra} 1")
            (folder / f"{name}_test_split{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def split_config(dataset, tmp_path, fmt, folder, *extra):
    root = Path(dataset.train_list).parent / "videos"
    return tiny(dataset, tmp_path / "runs", "run.stages=[1]", "optim.epochs=1",
                "run.final_eval=true", f"data.train_list={folder}", f"data.val_list={folder}",
                f"data.root={root}", f"data.format={fmt}", "data.classes=", *extra)


def test_three_ucf101_splits_give_the_averaged_table(two_class_dataset, tmp_path, monkeypatch, caplog):
    folder = write_ucf101(tmp_path / "ucfTrainTestlist")
    rgb = split_config(two_class_dataset, tmp_path, "ucf101", folder)
    # a second stream: a flow network is out of reach of a seconds-long test, so another RGB
    # run (another seed) stands in for it; the fusion is the same code either way
    other = apply_overrides(rgb, ["run.seed=5"])

    calls = {"n": 0}
    real = stage_module.train_one_epoch

    def killed_once(*args, **kwargs):  # Ctrl-C in the 3rd run (rgb split 2)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(stage_module, "train_one_epoch", killed_once)
    with pytest.raises(KeyboardInterrupt):
        run_splits(rgb, "ucf101", (1, 2, 3), flow_config=other, out_dir=tmp_path / "out")
    monkeypatch.undo()
    out = tmp_path / "out"
    assert (out / "rgb" / "split1" / "summary.json").is_file()
    assert (out / "rgb" / "split2" / "stage1_last.state.pt").is_file()  # saved on the kill
    assert not (out / "rgb" / "split2" / "summary.json").exists()
    finished = (out / "rgb" / "split1" / "summary.json").stat().st_mtime_ns

    with caplog.at_level(logging.INFO, logger="lgdnet"):
        table = run_splits(rgb, "ucf101", (1, 2, 3), flow_config=other, out_dir=out)
    assert "split1: finished, skipped" in caplog.text and "split2: resuming" in caplog.text
    assert (out / "rgb" / "split1" / "summary.json").stat().st_mtime_ns == finished

    assert table["columns"] == ["rgb", "flow", "fused"] and [r["split"] for r in table["rows"]] == [1, 2, 3]
    for row in table["rows"]:
        for stream in ("rgb", "flow"):
            summary = json.loads((out / stream / f"split{row['split']}" / "summary.json").read_text())
            assert row[stream] == summary["stages"]["1"]["eval"]["top1"]
            # each split trained on its own list: 8 clips, tested on the 2 others
            assert summary["config"]["data"]["split"] == row["split"]
        assert row["fused"] in (0.0, 0.5, 1.0)  # 2 test videos
    for column in table["columns"]:
        assert table["mean"][column] == pytest.approx(sum(r[column] for r in table["rows"]) / 3)
    text = (out / "table6.md").read_text()
    assert "| **mean** |" in text and "Two-stream" in text and "RGB 1 : flow 1.5" in text
    assert json.loads((out / "table6.json").read_text())["mean"] == table["mean"]


def test_hmdb51_split_naming_absent_videos_is_a_named_warning(two_class_dataset, tmp_path, caplog):
    folder = write_hmdb51(tmp_path / "hmdb_splits", splits=(1,), extra="not_there.avi")
    config = split_config(two_class_dataset, tmp_path, "hmdb51", folder)
    with caplog.at_level(logging.WARNING, logger="lgdnet"):
        table = run_splits(config, "hmdb51", (1,), out_dir=tmp_path / "out")
    assert "rgb split 1: 1 of 9 train videos" in caplog.text and "not_there.avi" in caplog.text
    assert table["warnings"] and table["columns"] == ["rgb"]
    strict = apply_overrides(config, ["data.on_error=raise"])
    with pytest.raises(AnnotationError, match="not_there.avi"):
        run_splits(strict, "hmdb51", (1,), out_dir=tmp_path / "out2")
    wrong_root = apply_overrides(config, [f"data.root={tmp_path}"])
    with pytest.raises(AnnotationError, match="is data.root right"):
        run_splits(wrong_root, "hmdb51", (1,), out_dir=tmp_path / "out3")


def test_a_split_that_does_not_exist_stops_before_training(two_class_dataset, tmp_path, capsys):
    folder = write_ucf101(tmp_path / "ucf", splits=(1, 2))
    config = split_config(two_class_dataset, tmp_path, "ucf101", folder)
    with pytest.raises(ConfigError, match="ucf101 has splits 1, 2, 3, not 4"):
        run_splits(config, "ucf101", (1, 4), out_dir=tmp_path / "out")
    with pytest.raises(AnnotationError, match="bad split number 3"):  # no testlist03.txt
        run_splits(config, "ucf101", (1, 3), out_dir=tmp_path / "out")
    assert not (tmp_path / "out" / "rgb" / "split1").exists()  # nothing trained
    from lgdnet.cli import main as lgdnet_main

    save_config(config, tmp_path / "c.yaml")
    status = lgdnet_main(["splits", "--config", str(tmp_path / "c.yaml"), "--dataset", "hmdb51",
                          "--splits", "5", "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err
    assert status == 2 and "hmdb51 has splits 1, 2, 3, not 5" in err
