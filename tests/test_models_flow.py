"""Flow models (issue: the optical-flow stream): every LGD-2D/3D network takes flow input,
the configuration builds a flow model with the cross-modality ImageNet initialisation, and
a tiny flow model learns from flow folders read by ``VideoDataset(modality="flow")``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lgdnet.data import SamplingSpec, VideoDataset
from lgdnet.data.flow import flow_frame_name
from lgdnet.engine.builders import build_model
from lgdnet.engine.config import Config, DataConfig, ModelConfig
from lgdnet.engine.loop import collate_train
from lgdnet.models import create_model, list_models
from lgdnet.models.heads import stage_loss

FLOW_STACK = 2  # consecutive flow frames per 2D segment in these tests (the default is 5)


pytestmark = pytest.mark.usefixtures("one_thread")


def flow_channels(kind: str, flow_stack: int) -> int:
    """Input channels of a flow model: x and y of one flow frame per time step for LGD-3D,
    x and y of ``flow_stack`` stacked frames per segment for LGD-2D (TSN)."""
    return 2 if kind == "3d" else 2 * flow_stack


@pytest.mark.parametrize("name", list_models())
def test_every_model_accepts_flow_input(name):
    """Built on the meta device (no memory, no arithmetic) so ResNet-101 costs nothing."""
    with torch.device("meta"):
        kind = create_model(name, num_classes=4).kind
        channels = flow_channels(kind, 5)
        model = create_model(name, num_classes=4, in_channels=channels)
        out = model.forward_parts(torch.empty(2, channels, *model.default_input_size))
        assert model.in_channels == channels and model.conv1.weight.shape[1] == channels
        assert {key: tuple(v.shape) for key, v in out.items()} == {
            "logits": (2, 4), "global_logits": (2, 4), "local_logits": (2, 4)}
        with pytest.raises(RuntimeError):  # an RGB clip no longer fits the flow stem
            model(torch.empty(2, 3, *model.default_input_size))
        model.to_stage2(sketch_dim=64)
        assert tuple(model(torch.empty(2, channels, *model.default_input_size)).shape) \
            == (2, 4)


def write_rgb_resnet(path: Path) -> dict[str, torch.Tensor]:
    """A torchvision-format 2D ResNet state dict (the tiny TSN's shapes, random weights and an
    ImageNet-style 1000-way ``fc``), standing in for ImageNet weights."""
    torch.manual_seed(3)
    net = create_model("tsn_tiny", num_classes=7)
    state = {k.replace(".local_unit.", "."): v  # torchvision's names
             for k, v in net.state_dict().items() if not k.startswith("head.")}
    state["fc.weight"] = torch.randn(1000, net.feature_dim)
    state["fc.bias"] = torch.zeros(1000)
    torch.save(state, path)
    return state


@pytest.mark.parametrize("name", ["lgd3d_tiny", "lgd2d_tiny"])
def test_config_builds_flow_model_with_cross_modality_init(tmp_path, name):
    """``model.in_channels`` + ``model.init=imagenet``: conv1 holds the RGB kernels averaged
    over colour and replicated over every flow channel (TSN's cross-modality init); the rest
    of the backbone is the file's."""
    path = tmp_path / "rgb_resnet.pth"
    write_rgb_resnet(path)
    channels = flow_channels("3d" if "3d" in name else "2d", FLOW_STACK)
    config = Config(model=ModelConfig(name=name, num_classes=3, in_channels=channels,
                                      init="imagenet", pretrained=str(path)),
                    data=DataConfig(modality="flow", flow_stack=FLOW_STACK))
    model = build_model(config)
    saved = torch.load(path, weights_only=True)  # read back what the file holds
    averaged = saved["conv1.weight"].mean(dim=1)  # (C_out, 7, 7)
    conv1 = model.conv1.weight.detach()
    assert conv1.shape[1] == channels
    conv1 = conv1.reshape(conv1.shape[0], channels, *averaged.shape[-2:])  # drops 3D's T=1
    for channel in range(channels):
        torch.testing.assert_close(conv1[:, channel], averaged)
    assert not torch.allclose(saved["conv1.weight"][:, 0], averaged)  # averaging did something
    assert model.init_report.missing == [] and model.init_report.unexpected == []
    torch.testing.assert_close(model.layer2[0].local_unit.bn1.running_var,
                               saved["layer2.0.bn1.running_var"])


def write_flow_folder(folder: Path, vertical: float, num_frames: int, seed: int) -> Path:
    """A flow folder of ``num_frames`` PNG pairs: noisy x, and y coding a uniform vertical
    motion (``vertical`` in [-1, 1] of the bound). Vertical motion survives the horizontal
    flip, so the class stays learnable under augmentation."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for index in range(num_frames):
        x = rng.integers(96, 160, size=(24, 32), dtype=np.uint8)
        y = np.clip(127.5 + 100 * vertical + rng.normal(0, 12, size=(24, 32)), 0, 255)
        cv2.imwrite(str(folder / flow_frame_name("x", index, ".png")), x)
        cv2.imwrite(str(folder / flow_frame_name("y", index, ".png")), y.astype(np.uint8))
    return folder


class Record:
    """The fields of ``VideoRecord`` that ``VideoDataset`` reads."""

    def __init__(self, path: Path, label: int, video_id: str, num_frames: int) -> None:
        self.path, self.label, self.video_id, self.num_frames = str(path), label, video_id, num_frames


@pytest.mark.parametrize("name,spec", [
    ("lgd3d_tiny", SamplingSpec.for_3d(num_frames=4, train_resize=(24, 32), crop_size=24)),
    ("lgd2d_tiny", SamplingSpec.for_2d(num_frames=3, flow_stack=FLOW_STACK,
                                       train_resize=(24, 32), crop_size=24)),
])  # fmt: skip
def test_tiny_flow_model_trains_on_flow_folders(tmp_path, name, spec):
    """Flow folders -> dataset items of the model's channel count -> training steps that
    reach every flow channel of the stem and fit the tiny batch."""
    torch.manual_seed(0)
    records = []
    for i in range(4):  # class 0 moves down, class 1 moves up
        label = i % 2
        folder = write_flow_folder(tmp_path / f"video{i}", 0.6 if label == 0 else -0.6, 9, i)
        records.append(Record(folder, label, f"video{i}", 9))
    dataset = VideoDataset(records, spec, mode="train", modality="flow", seed=0)
    kind = "3d" if spec.scheme == "clip" else "2d"
    channels = flow_channels(kind, FLOW_STACK)
    batch = collate_train([dataset[i] for i in range(len(dataset))])
    assert tuple(batch["video"].shape) == (4, channels, spec.num_frames, 24, 24)
    assert batch["video"].min() >= -1 and batch["video"].max() <= 1  # v / 127.5 - 1

    model = create_model(name, num_classes=2, in_channels=channels).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    losses = []
    for step in range(6):
        optimizer.zero_grad()
        loss = stage_loss(model.forward_parts(batch["video"]), batch["label"])  # Eq. (6)
        loss.backward()
        if step == 0:
            grad = model.conv1.weight.grad
            per_channel = grad.transpose(0, 1).reshape(channels, -1).abs().sum(1)
            assert torch.all(per_channel > 0)  # every flow channel reaches the loss
            assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses
