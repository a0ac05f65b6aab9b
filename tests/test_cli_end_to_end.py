"""The command line end to end on a tiny configuration: train (both stages), eval, fuse,
predict, features, and clear errors for bad checkpoints and score files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lgdnet.cli import main
from lgdnet.engine.metrics import classification_metrics, fuse_scores, load_scores

CLASSES = ["approach", "separate", "move_together"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A run of `lgdnet train` through both stages on a tiny synthetic dataset."""
    from lgdnet.data import write_synthetic_dataset

    base = tmp_path_factory.mktemp("e2e")
    dataset = write_synthetic_dataset(base / "data", clips_per_class=3, seed=1, num_frames=8,
                                      size=(32, 32), val_fraction=0.34, classes=CLASSES,
                                      workers=1, progress=False)
    config = base / "tiny.yaml"
    config.write_text(
        "model:\n  name: lgd3d_tiny\n  sketch_dim: 64\n"
        f"data:\n  train_list: {dataset.train_list}\n  val_list: {dataset.val_list}\n"
        "  num_frames: 4\n  train_resize: [32, 32]\n  crop_size: 32\n  test_short_side: 32\n"
        "  num_test_views: 2\n  num_workers: 0\n"
        "optim:\n  epochs: 1\n  batch_size: 3\n  lr: 0.01\n"
        f"run:\n  out_dir: {base / 'run'}\n  device: cpu\n  final_eval: false\n"
    )
    assert main(["train", "--config", str(config)]) == 0
    return {"base": base, "run": base / "run", "val": dataset.val_list, "root": dataset.root,
            "video": dataset.root / "videos" / "separate" / "separate_0000.mp4"}


def test_train_wrote_both_stages(trained):
    run = trained["run"]
    for name in ("stage1_best", "stage2_best", "best"):
        assert (run / f"{name}.safetensors").is_file()
    from lgdnet.engine.checkpoint import read_metadata

    assert read_metadata(run / "best.safetensors")["stage"] == 2
    assert read_metadata(run / "stage1_best.safetensors")["stage"] == 1


def test_eval_fuse(trained, capsys):
    run, out = trained["run"], trained["base"]
    for name, views in (("best", "3"), ("stage1_best", "2")):
        status = main(["eval", "--checkpoint", str(run / f"{name}.safetensors"),
                       "--list", str(trained["val"]), "--views", views, "--views-per-chunk", "2",
                       "--workers", "0", "--device", "cpu", "--out", str(out / f"eval_{name}"),
                       "--no-progress"])
        assert status == 0
        printed = capsys.readouterr().out
        assert "top-1" in printed and "chance 33.3%" in printed

        scores = load_scores(out / f"eval_{name}" / "scores.npz")
        assert scores.classes == CLASSES and len(scores.video_ids) == 3
        np.testing.assert_allclose(scores.scores.sum(1), 1.0, atol=1e-5)
        record = json.loads((out / f"eval_{name}" / "metrics.json").read_text())
        assert record["metrics"] == pytest.approx(classification_metrics(scores.scores,
                                                                         scores.labels))
        assert record["views"] == int(views) and record["config"]["model"]["name"] == "lgd3d_tiny"
        assert (out / f"eval_{name}" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"

    a, b = out / "eval_best" / "scores.npz", out / "eval_stage1_best" / "scores.npz"
    assert main(["fuse", str(a), str(b), "--weights", "1", "1.5", "--json",
                 "--out", str(out / "fused")]) == 0
    report = json.loads(capsys.readouterr().out)
    first, second = load_scores(a), load_scores(b)
    expected = classification_metrics(fuse_scores([first.scores, second.scores], [1, 1.5]),
                                       first.labels)
    assert report["fused"] == pytest.approx(expected)
    assert [entry["weight"] for entry in report["inputs"]] == [1.0, 1.5]
    fused = load_scores(out / "fused" / "scores.npz")
    np.testing.assert_allclose(fused.scores, (first.scores + 1.5 * second.scores) / 2.5,
                               rtol=1e-5)

    # a score file of other videos: exit status 2 and both files named
    other = out / "other.npz"
    np.savez(other, scores=first.scores[:2], labels=first.labels[:2],
             video_ids=np.array(first.video_ids[:2]), classes=np.array(first.classes))
    assert main(["fuse", str(a), str(other)]) == 2
    error = capsys.readouterr().err
    assert str(a) in error and str(other) in error and "different videos" in error
    assert main(["fuse", str(a), str(b), "--weights", "1"]) == 2
    assert "--weights" in capsys.readouterr().err


def test_predict_text_and_json(trained, capsys):
    checkpoint = str(trained["run"] / "best.safetensors")
    video = str(trained["video"])
    assert main(["predict", video, "--checkpoint", checkpoint, "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert video in lines[0]
    assert len(lines) == 1 + 3  # top 5 clipped to the 3 classes
    assert {line.split()[0] for line in lines[1:]} == set(CLASSES)

    assert main(["predict", video, "--checkpoint", checkpoint, "--json", "--top", "2"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["video"] == video and len(result["predictions"]) == 2
    probabilities = [p["probability"] for p in result["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1

    import lgdnet

    from_api = lgdnet.load(checkpoint).predict(video, top_k=2)
    assert [name for name, _ in from_api] == [p["class"] for p in result["predictions"]]
    assert [p for _, p in from_api] == pytest.approx(probabilities)


def test_features_command(trained, capsys):
    out = trained["base"] / "features"
    status = main(["features", str(trained["val"]), "--checkpoint",
                   str(trained["run"] / "best.safetensors"), "--out", str(out), "--workers", "0",
                   "--pool-local", "time", "--no-progress"])
    assert status == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["videos"]) == 3 and manifest["classes"] == CLASSES
    with np.load(out / (manifest["videos"][0]["file"])) as data:
        channels = data["global"].shape[0]
        assert data["local"].ndim == 3 and data["local"].shape[0] == channels  # (C, H', W')
    assert "3 videos" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["eval", "predict", "features"])
def test_missing_or_corrupt_checkpoint_exit_2_naming_the_file(trained, tmp_path, capsys, command):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"this is not a checkpoint at all")
    for checkpoint in (tmp_path / "missing.safetensors", corrupt):
        if command == "eval":
            argv = ["eval", "--checkpoint", str(checkpoint), "--list", str(trained["val"])]
        elif command == "predict":
            argv = ["predict", str(trained["video"]), "--checkpoint", str(checkpoint)]
        else:
            argv = ["features", str(trained["val"]), "--checkpoint", str(checkpoint), "--out",
                    str(tmp_path / "f")]
        assert main(argv + ["--device", "cpu"]) == 2
        error = capsys.readouterr().err
        assert str(checkpoint) in error and "Traceback" not in error
