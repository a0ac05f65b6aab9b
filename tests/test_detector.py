"""LGDDetector (Sec. 5.6): shapes, the kept backbone, the loss interface, checkpoints."""

from __future__ import annotations

import pytest
import torch

from lgdnet.detection.training import load_detector
from lgdnet.engine.checkpoint import read_metadata, save_checkpoint
from lgdnet.engine.distributed import ForwardParts
from lgdnet.errors import CheckpointError
from lgdnet.models import create_model
from lgdnet.models.detector import LGDDetector, build_detector


def _rois(*rows):
    return torch.tensor(rows, dtype=torch.float32)


@torch.no_grad()
def test_shapes_at_the_paper_size():
    # Table 1: 16 x 112 x 112 -> x_L 4 x 7 x 7 with C = 2048; one row of logits per ROI.
    torch.manual_seed(0)
    detector = LGDDetector(create_model("lgd3d_r50", 400), num_classes=21).eval()
    clip = torch.randn(1, 3, 16, 112, 112)
    local, global_ = detector.forward_features(clip)
    assert local.shape == (1, 2048, 4, 7, 7) and global_.shape == (1, 2048)
    logits = detector(clip, _rois([0, 0, 0, 112, 112], [0, 30, 20, 60, 90]))
    assert logits.shape == (2, 22)  # 21 classes + background


@torch.no_grad()
def test_shapes_of_whole_frames_and_a_batch():
    detector = LGDDetector(create_model("lgd3d_tiny", 5), num_classes=4).eval()
    clips = torch.randn(2, 3, 8, 96, 128)
    assert detector.forward_features(clips)[0].shape == (2, 256, 2, 6, 8)  # stride 16
    rois = _rois([0, 0, 0, 40, 40], [1, 10, 10, 90, 60], [1, 0, 0, 128, 96])
    logits = detector(clips, rois)
    assert logits.shape == (3, 5)
    # each ROI reads its own clip: changing clip 0 leaves clip 1's ROIs unchanged
    other = clips.clone()
    other[0] = torch.randn_like(other[0])
    again = detector(other, rois)
    assert torch.allclose(again[1:], logits[1:], atol=1e-6)
    assert not torch.allclose(again[:1], logits[:1])


def test_from_classifier_keeps_the_backbone_weights():
    torch.manual_seed(0)
    network = create_model("lgd3d_tiny", 7)
    before = {k: v.clone() for k, v in network.state_dict().items() if not k.startswith("head.")}
    detector = LGDDetector.from_classifier(network, num_classes=3, dropout=0.2)
    after = detector.backbone.state_dict()
    assert set(after) == set(before)  # the classification head is gone, nothing else
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert detector.head.num_classes == 3 and detector.head.dropout.p == 0.2
    assert detector.build_args["backbone"]["name"] == "lgd3d_tiny"
    assert detector.build_args["detector"]["num_classes"] == 3


def test_forward_parts_is_what_training_calls_and_every_parameter_learns():
    torch.manual_seed(0)
    detector = LGDDetector(create_model("lgd3d_tiny", 4), num_classes=2)
    batch = {"video": torch.randn(2, 3, 8, 64, 64), "label": torch.tensor([0, 2, 1]),
             "rois": _rois([0, 0, 0, 32, 32], [1, 16, 16, 64, 64], [1, 0, 0, 64, 64])}
    outputs = ForwardParts(detector)(batch)  # as engine/loop.py calls it
    assert set(outputs) == {"logits"} and outputs["logits"].shape == (3, 3)
    detector.eval()
    assert torch.allclose(detector.forward_parts(batch["video"], batch["rois"])["logits"],
                          detector(batch["video"], batch["rois"]))
    detector.train()
    loss = torch.nn.functional.cross_entropy(ForwardParts(detector)(batch)["logits"],
                                             batch["label"])
    loss.backward()
    # no parameter without a gradient (DDP would stall on one): the unused head is removed
    missing = [n for n, p in detector.named_parameters() if p.grad is None]
    assert not missing


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    detector = LGDDetector(create_model("lgd3d_tiny", 4, base_width=4), num_classes=3,
                           roi_size=5, use_global=True).eval()
    path = save_checkpoint(tmp_path / "det", detector, config={"data": {"num_frames": 4}},
                           classes=["a", "b", "c"], epoch=2)
    assert read_metadata(path)["build_args"]["detector"]["use_global"] is True
    loaded, config, classes = load_detector(path)
    assert classes == ["a", "b", "c"] and config["data"]["num_frames"] == 4
    assert loaded.head.roi_size == 5 and loaded.backbone.build_args["base_width"] == 4
    clip, rois = torch.randn(1, 3, 4, 64, 64), _rois([0, 4, 4, 40, 50])
    with torch.no_grad():
        assert torch.equal(loaded(clip, rois), detector(clip, rois))


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="LGD-3D"):
        LGDDetector(create_model("lgd2d_tiny", 4), num_classes=2)
    with pytest.raises(ValueError, match="unknown detector argument"):
        build_detector({"detector": {"num_classes": 2, "colour": 1},
                        "backbone": {"name": "lgd3d_tiny", "num_classes": 2}})
    classifier = save_checkpoint(tmp_path / "clf", create_model("lgd3d_tiny", 2), config={},
                                 classes=["a", "b"], epoch=1)
    with pytest.raises(CheckpointError, match="not a detector checkpoint"):
        load_detector(classifier)
