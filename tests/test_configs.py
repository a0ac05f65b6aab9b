"""The example configurations shipped in configs/ load, validate and build their models."""

from pathlib import Path

import pytest

from lgdnet.engine.config import load_config, validate_config
from lgdnet.models import create_model, list_models

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_there_are_example_configs():
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_is_valid(path):
    config = load_config(path)
    validate_config(config)
    assert config.model.name in list_models()
    assert config.optim.lr == pytest.approx(0.01)  # Sec. 5.2
    in_channels = config.model.in_channels or 3
    model = create_model(config.model.name, num_classes=5, in_channels=in_channels)
    assert model.in_channels == in_channels
    assert (config.data.modality == "flow") == (in_channels == 2)
