"""The two-stream recipe of docs/two_stream.md end to end through the command line, on a tiny
configuration: extract TV-L1 flow, train an RGB and a flow LGD-3D (both from the same 2D
ResNet weights, the flow one with the cross-modality initialisation), evaluate both on the
validation list, fuse their scores with weights, and check every file the recipe promises."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lgdnet.cli import main
from lgdnet.data import load_annotations
from lgdnet.data.flow import count_flow_frames
from lgdnet.engine.checkpoint import load_model, read_metadata
from lgdnet.engine.metrics import classification_metrics, load_scores
from lgdnet.models import create_model

CLASSES = ["approach", "separate", "move_together"]
FRAMES = 10  # frames per synthetic clip, so 9 flow frames
RGB_WEIGHT, FLOW_WEIGHT = 1.0, 1.5

# The shared settings of both streams: tiny clips, stage 1 only, no final evaluation (the
# recipe evaluates with `lgdnet eval`). Paths are filled in by the fixture.
CONFIG = """\
model:
  name: lgd3d_tiny
  init: imagenet
  pretrained: {pretrained}
data:
  train_list: {train_list}
  val_list: {val_list}
  num_frames: 4
  train_resize: [32, 32]
  crop_size: 32
  test_short_side: 32
  num_test_views: 2
  num_workers: 0
optim:
  epochs: 1
  batch_size: 3
run:
  out_dir: {out_dir}
  device: cpu
  stages: [1]
  final_eval: false
  progress: false
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def eval_args(checkpoint: Path, val_list: Path, out: Path) -> list[str]:
    return ["eval", "--checkpoint", str(checkpoint), "--list", str(val_list), "--views", "2",
            "--workers", "0", "--device", "cpu", "--no-progress", "--out", str(out)]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> dict[str, Path]:
    """Every step of the recipe, run once; the tests below check what each step left."""
    base = tmp_path_factory.mktemp("two_stream")
    data = base / "data"
    assert main(["synthetic", str(data), "--clips-per-class", "3", "--seed", "1", "--frames",
                 str(FRAMES), "--size", "32x32", "--val-fraction", "0.34", "--classes",
                 ",".join(CLASSES), "--workers", "1", "--quiet"]) == 0
    train_list, val_list = data / "train.txt", data / "val.txt"
    # stands in for a torchvision ImageNet ResNet state dict (same names, tiny widths)
    torch.manual_seed(0)
    resnet = create_model("tsn_tiny", num_classes=2)
    state = {k: v for k, v in resnet.state_dict().items() if not k.startswith("head.")}
    state["fc.weight"] = torch.randn(1000, resnet.feature_dim)  # skipped by the loader
    state["fc.bias"] = torch.zeros(1000)
    pretrained = base / "resnet_imagenet.pth"
    torch.save(state, pretrained)

    # 1. flow of the training and validation videos (3D models: the size of the RGB stream)
    flow = base / "flow"
    for video_list in (train_list, val_list):
        assert main(["extract-flow", str(video_list), "--root", str(data), "--out",
                     str(flow), "--short-side", "32", "--fast", "--workers", "1",
                     "--no-progress"]) == 0

    # 2. the RGB stream, then the flow stream from the same file with overrides
    config = base / "rgb.yaml"
    config.write_text(CONFIG.format(pretrained=pretrained, train_list=train_list,
                                    val_list=val_list, out_dir=base / "runs" / "rgb"))
    assert main(["train", "--config", str(config)]) == 0
    assert main(["train", "--config", str(config),
                 "--set", "data.modality=flow", "--set", "model.in_channels=2",
                 "--set", f"data.train_list={flow / 'flow_list_train.txt'}",
                 "--set", f"data.val_list={flow / 'flow_list_val.txt'}",
                 "--out", str(base / "runs" / "flow")]) == 0

    # 3. both evaluated on the validation videos, 4. fused
    runs, evals = base / "runs", base / "eval"
    assert main(eval_args(runs / "rgb" / "best.safetensors", val_list, evals / "rgb")) == 0
    assert main(eval_args(runs / "flow" / "best.safetensors", flow / "flow_list_val.txt",
                          evals / "flow")) == 0
    assert main(["fuse", str(evals / "rgb" / "scores.npz"), str(evals / "flow" / "scores.npz"),
                 "--weights", str(RGB_WEIGHT), str(FLOW_WEIGHT),
                 "--out", str(evals / "two_stream")]) == 0
    return {"base": base, "train_list": train_list, "val_list": val_list, "flow": flow,
            "runs": runs, "eval": evals}


def test_flow_lists_match_the_videos(recipe):
    flow = recipe["flow"]
    assert (flow / "classes.txt").read_text().split() == CLASSES
    for subset, rgb_list in (("train", recipe["train_list"]), ("val", recipe["val_list"])):
        rgb = load_annotations(rgb_list)
        flow_records = load_annotations(flow / f"flow_list_{subset}.txt").records
        assert [r.video_id for r in flow_records] == [r.video_id for r in rgb.records]
        assert [r.label for r in flow_records] == [r.label for r in rgb.records]
        for record in flow_records:  # the list's frame count is that of the flow folder
            assert record.num_frames == count_flow_frames(record.path) == FRAMES - 1


def test_streams_are_trained_on_their_modality(recipe):
    for stream, modality, channels in (("rgb", "rgb", 3), ("flow", "flow", 2)):
        checkpoint = recipe["runs"] / stream / "best.safetensors"
        config = read_metadata(checkpoint)["config"]
        assert config["data"]["modality"] == modality and config["model"]["init"] == "imagenet"
        assert config["data"]["train_list"].endswith("flow_list_train.txt") == (stream == "flow")
        model, _, classes = load_model(checkpoint)
        assert classes == CLASSES
        assert model.in_channels == channels and model.conv1.weight.shape[1] == channels


def test_each_stream_is_evaluated_on_its_own_input(recipe):
    rgb = load_scores(recipe["eval"] / "rgb" / "scores.npz")
    flow = load_scores(recipe["eval"] / "flow" / "scores.npz")
    for stream, scores in (("rgb", rgb), ("flow", flow)):
        record = json.loads((recipe["eval"] / stream / "metrics.json").read_text())
        assert record["skipped_videos"] == 0 and record["metrics"]["num_videos"] == 3
        assert record["config"]["data"]["modality"] == stream
        assert scores.classes == CLASSES and len(scores.video_ids) == 3
        np.testing.assert_allclose(scores.scores.sum(1), 1.0, atol=1e-5)
    assert sorted(rgb.video_ids) == sorted(flow.video_ids)
    assert not np.allclose(rgb.scores, flow.scores)  # two different networks and inputs


def test_fused_scores_are_the_weighted_average(recipe):
    evals = recipe["eval"]
    rgb = load_scores(evals / "rgb" / "scores.npz")
    flow = load_scores(evals / "flow" / "scores.npz")
    fused = load_scores(evals / "two_stream" / "scores.npz")
    flow_rows = {video: row for video, row in zip(flow.video_ids, flow.scores)}
    rgb_rows = {video: row for video, row in zip(rgb.video_ids, rgb.scores)}
    assert sorted(fused.video_ids) == sorted(rgb.video_ids)
    expected = np.stack([(RGB_WEIGHT * rgb_rows[v] + FLOW_WEIGHT * flow_rows[v])
                         / (RGB_WEIGHT + FLOW_WEIGHT) for v in fused.video_ids])
    np.testing.assert_allclose(fused.scores, expected, rtol=1e-5, atol=1e-7)

    record = json.loads((evals / "two_stream" / "metrics.json").read_text())
    assert record["classes"] == CLASSES
    assert [entry["weight"] for entry in record["inputs"]] == [RGB_WEIGHT, FLOW_WEIGHT]
    assert record["metrics"] == pytest.approx(classification_metrics(expected, fused.labels))
    top1 = float(np.mean(expected.argmax(1) == fused.labels))
    assert record["metrics"]["top1"] == pytest.approx(top1)
    assert (evals / "two_stream" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_lgd2d_flow_stream_stacks_five_flow_frames(recipe):
    """LGD-2D's flow input stacks ``flow_stack`` (5) consecutive flow frames per segment, so
    the model takes 2 x 5 = 10 channels."""
    base = recipe["base"]
    flow = recipe["flow"]
    assert main(["train", "--config", str(base / "rgb.yaml"),
                 "--set", "model.name=lgd2d_tiny", "--set", "data.num_frames=3",
                 "--set", "data.modality=flow", "--set", "model.in_channels=10",
                 "--set", f"data.train_list={flow / 'flow_list_train.txt'}",
                 "--set", f"data.val_list={flow / 'flow_list_val.txt'}",
                 "--out", str(base / "runs" / "flow2d")]) == 0
    checkpoint = base / "runs" / "flow2d" / "best.safetensors"
    out = recipe["eval"] / "flow2d"
    assert main(eval_args(checkpoint, flow / "flow_list_val.txt", out)) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["skipped_videos"] == 0 and record["metrics"]["num_videos"] == 3
    model, _, _ = load_model(checkpoint)
    assert model.kind == "2d" and model.conv1.weight.shape[1] == 10
