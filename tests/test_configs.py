"""The example configurations shipped in configs/ load, validate and build their models."""

import dataclasses
from pathlib import Path

import pytest
import torch

from lgdnet.engine import builders
from lgdnet.engine.config import load_config, validate_config
from lgdnet.models import list_models

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_there_are_example_configs():
    assert len(CONFIGS) >= 3


def imagenet_state_dict(path: Path, name: str) -> Path:
    """A torchvision-format ResNet state dict standing in for the user's ImageNet file."""
    from lgdnet.models import create_model

    net = create_model(name, num_classes=1000)
    state = {k.replace(".local_unit.", "."): v for k, v in net.state_dict().items()
             if not k.startswith("head.")}
    torch.save(state, path)
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_is_valid(path, tmp_path):
    config = load_config(path)
    if config.model.pretrained:  # the user's file: one of the right shapes stands in
        assert "r50" in config.model.name  # a ResNet-50 file fits
        weights = imagenet_state_dict(tmp_path / "resnet.pth", "tsn_r50")
        config = dataclasses.replace(
            config, model=dataclasses.replace(config.model, pretrained=str(weights)))
    validate_config(config)
    assert config.model.name in list_models()
    if config.model.init_checkpoint:  # fine-tuning (Sec. 5.6): TSN/TSM's recipe
        assert config.optim.lr == pytest.approx(0.001) and config.run.final_eval
        assert config.data.format in ("ucf101", "hmdb51") and config.data.val_list
    else:
        assert config.optim.lr == pytest.approx(0.01)  # Sec. 5.2
    # through the builder training uses (on the meta device: shapes, no arithmetic)
    with torch.device("meta"):
        model = builders.build_model(config, num_classes=5)
        local, global_ = model.forward_features(
            torch.empty(1, model.in_channels, *model.default_input_size))
    assert model.num_classes == (config.model.num_classes or 5)
    assert model.build_args["name"] == config.model.name
    assert (config.data.modality == "flow") == (model.in_channels == 2)
    assert local.shape[1] == global_.shape[1] == model.num_features
