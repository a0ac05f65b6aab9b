"""Configuration: files, overrides, strict keys and types, the paper's defaults."""

from __future__ import annotations

import json
import re

import pytest

from lgdnet.engine.config import (
    Config,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
    stage_settings,
)
from lgdnet.errors import ConfigError


def test_defaults_are_the_papers_sec_5_2():
    optim = Config().optim
    assert (optim.lr, optim.momentum, optim.lr_step, optim.lr_gamma, optim.epochs) == (
        0.01, 0.9, 20, 0.1, 50)
    assert Config().run.stages == (1, 2)
    # each stage of Sec. 4.3 gets the same schedule unless set apart
    assert stage_settings(optim, 1) == stage_settings(optim, 2) == (50, 0.01, 20)


def test_stage2_settings_can_differ():
    optim = apply_overrides(Config(), ["optim.stage2_epochs=5", "optim.stage2_lr=0.001"]).optim
    assert stage_settings(optim, 1) == (50, 0.01, 20)
    assert stage_settings(optim, 2) == (5, 0.001, 20)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_file_round_trip(tmp_path, suffix):
    config = apply_overrides(Config(), [
        "model.name=lgd3d_tiny", "data.train_resize=40,48", "run.stages=1", "optim.lr=0.5",
        "model.options.base_width=4",
    ])
    path = tmp_path / f"run{suffix}"
    save_config(config, path)
    loaded = load_config(path)
    assert loaded == config
    assert loaded.data.train_resize == (40, 48)
    assert loaded.model.options == {"base_width": 4}
    assert config_from_dict(config_to_dict(config)) == config


def test_missing_keys_keep_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 0.1\nrun:\n  seed: 3\n")
    config = load_config(path)
    assert config.optim.lr == 0.1 and config.run.seed == 3
    assert config.optim.momentum == 0.9 and config.model == Config().model


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*optim\.learning_rate"):
        load_config(path)


def test_unknown_section_in_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"optimizer": {"lr": 0.1}}))
    with pytest.raises(ConfigError, match=r"bad\.json.*'optimizer'"):
        load_config(path)


@pytest.mark.parametrize("text, key", [
    ("optim:\n  lr: fast\n", "optim.lr"),
    ("optim:\n  epochs: many\n", "optim.epochs"),
    ("run:\n  tensorboard: 1\n", "run.tensorboard"),
    ("optim:\n  epochs: true\n", "optim.epochs"),  # a bool is not an int here
    ("data:\n  train_resize: [1, 2, 3]\n", "data.train_resize"),
    ("data:\n  train_list: null\n", "data.train_list"),
])
def test_wrong_type_in_file_names_key_and_file(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"bad\.yaml.*" + re.escape(key)):
        load_config(path)


def test_out_of_range_value(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  precision: fp8\n")
    with pytest.raises(ConfigError, match="optim.precision"):
        load_config(path)
    with pytest.raises(ConfigError, match="run.stages"):
        apply_overrides(Config(), ["run.stages=2,1"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "broken.yaml"
    path.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(path)


def test_overrides_parse_by_field_type():
    config = apply_overrides(Config(), [
        "optim.lr=1e-3", "optim.epochs=7", "run.tensorboard=yes", "run.stages=[2]",
        "model.dropout=0.5", "model.num_segments=none", "data.train_resize=[128, 171]",
        "data.root=/videos/k400", "model.options.layers=[1,1,1,1]",
    ])
    assert config.optim.lr == 0.001 and isinstance(config.optim.lr, float)
    assert config.optim.epochs == 7
    assert config.run.tensorboard is True
    assert config.run.stages == (2,)
    assert config.model.dropout == 0.5 and config.model.num_segments is None
    assert config.data.train_resize == (128, 171)
    assert config.data.root == "/videos/k400"
    assert config.model.options == {"layers": [1, 1, 1, 1]}
    # the original is frozen and unchanged
    assert Config().optim.lr == 0.01


@pytest.mark.parametrize("override, pattern", [
    ("optim.learning_rate=0.1", "optim.learning_rate"),
    ("optimizer.lr=0.1", "optimizer.lr"),
    ("lr=0.1", "lr"),
    ("optim.lr", "section.key=value"),
    ("optim.lr=fast", "optim.lr"),
    ("optim.epochs=2.5x", "optim.epochs"),
    ("optim.freeze_bn=some", "optim.freeze_bn"),
    ("optim.backbone_lr_mult=-1", "optim.backbone_lr_mult"),
    ("optim.freeze_backbone_epochs=-1", "optim.freeze_backbone_epochs"),
    ("optim.sgd_kernel=fast", "optim.sgd_kernel"),
    ("model.stage2_temporal_pool=0", "model.stage2_temporal_pool"),
    ("data.stage2_num_frames=0", "data.stage2_num_frames"),
    ("optim.stage2_epochs=0", "optim.stage2_epochs"),
    ("run.tensorboard=maybe", "run.tensorboard"),
    ("data.train_resize=1,2,3", "data.train_resize"),
])
def test_bad_overrides_name_the_key(override, pattern):
    with pytest.raises(ConfigError, match=re.escape(pattern)):
        apply_overrides(Config(), [override])


@pytest.mark.parametrize("name, stack, channels", [("lgd3d_tiny", None, 2), ("lgd2d_tiny", None, 10),
                                                   ("lgd2d_tiny", 3, 6)])
def test_flow_input_channels_follow_the_modality(name, stack, channels):
    from lgdnet.engine.builders import build_model

    overrides = [f"model.name={name}", "data.modality=flow"]
    if stack is not None:
        overrides.append(f"data.flow_stack={stack}")
    config = apply_overrides(Config(), overrides)
    assert build_model(config, num_classes=4).in_channels == channels
    wrong = apply_overrides(config, [f"model.in_channels={channels + 1}"])
    with pytest.raises(ConfigError, match="in_channels"):
        build_model(wrong, num_classes=4)


def test_fractional_epochs_and_stage2_batches():
    """Sec. 5.4's long stage: 12.5 epochs, 16 clips per mini-batch, in stage 2 only."""
    from lgdnet.engine.config import epoch_plan, stage_batch

    optim = apply_overrides(Config(), ["optim.stage2_epochs=12.5", "optim.batch_size=64",
                                       "optim.micro_batch_size=8", "optim.stage2_batch_size=16",
                                       "optim.stage2_micro_batch_size=2"]).optim
    assert stage_settings(optim, 2)[0] == 12.5 and stage_settings(optim, 1)[0] == 50
    assert epoch_plan(12.5) == (13, 0.5) and epoch_plan(50.0) == (50, 1.0)
    assert epoch_plan(0.25) == (1, 0.25)
    assert stage_batch(optim, 1) == (64, 8) and stage_batch(optim, 2) == (16, 2)
    # null: the stage-1 value
    assert stage_batch(Config().optim, 2) == stage_batch(Config().optim, 1) == (0, 0)


def test_stage2_temporal_pool_needs_a_3d_model():
    from lgdnet.engine.builders import build_model

    config = apply_overrides(Config(), ["model.name=lgd2d_tiny", "model.stage2_temporal_pool=4"])
    with pytest.raises(ConfigError, match="model.stage2_temporal_pool"):
        build_model(config, num_classes=3)
