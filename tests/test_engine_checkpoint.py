"""Checkpoints: safetensors weights + weights_only training state, atomic writes, clear errors."""

from __future__ import annotations

import io
import json
import os
import random

import numpy as np
import pytest
import torch

from lgdnet.engine import checkpoint as ckpt
from lgdnet.engine.config import Config, apply_overrides, config_to_dict
from lgdnet.errors import CheckpointError
from lgdnet.models import create_model

CLASSES = ["a", "b", "c"]
CONFIG = config_to_dict(apply_overrides(Config(), ["model.name=lgd3d_tiny", "optim.lr=0.5"]))


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(stage: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("lgd3d_tiny", len(CLASSES), base_width=4)
    if stage == 2:
        model.to_stage2(sketch_dim=32)
    # non-default BatchNorm statistics, so that buffers are checked too
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 8, 32, 32))
    return model.eval()


@pytest.mark.parametrize("stage", [1, 2])
def test_load_model_rebuilds_from_the_safetensors_file_alone(tmp_path, stage):
    model = tiny_model(stage)
    path = ckpt.save_checkpoint(tmp_path / "run" / "best", model, config=CONFIG, classes=CLASSES,
                                epoch=4)
    assert path == tmp_path / "run" / "best.safetensors"
    assert not (tmp_path / "run" / "best.state.pt").exists()  # weights only were asked for
    loaded, config, classes = ckpt.load_model(path)
    assert loaded.stage == stage and not loaded.training
    assert config == CONFIG and classes == CLASSES
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        expected, actual = model(x), loaded(x)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    metadata = ckpt.read_metadata(tmp_path / "run" / "best")  # the bare name works too
    assert metadata["epoch"] == 4 and metadata["stage"] == stage
    assert metadata["build_args"] == json.loads(json.dumps(model.build_args))


def test_training_state_round_trip_with_weights_only(tmp_path):
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 8, 32, 32)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "progress": {"epoch": 3, "history": [{"loss": 1.5}]}, "rng": ckpt.rng_state()}
    ckpt.save_checkpoint(tmp_path / "last", model, config=CONFIG, classes=CLASSES, epoch=3,
                         training_state=state)
    loaded = ckpt.load_training_state(tmp_path / "last.safetensors")
    assert loaded["progress"] == state["progress"]
    fresh = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fresh.load_state_dict(loaded["optimizer"])
    for key, value in optimizer.state_dict()["state"][0].items():
        torch.testing.assert_close(fresh.state_dict()["state"][0][key], value)


def test_rng_state_survives_weights_only_save_and_load():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    buffer = io.BytesIO()
    torch.save(ckpt.rng_state(), buffer)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    buffer.seek(0)
    ckpt.set_rng_state(torch.load(buffer, weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_state_file_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    model = tiny_model()
    ckpt.save_checkpoint(tmp_path / "last", model, config=CONFIG, classes=CLASSES, epoch=1,
                         training_state={"progress": {}})
    torch.save({"progress": Payload()}, tmp_path / "last.state.pt")  # a tampered state file
    with pytest.raises(CheckpointError, match=r"last\.state\.pt"):
        ckpt.load_training_state(tmp_path / "last")
    assert not marker.exists()


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "file.bin"
    ckpt.atomic_write(path, lambda handle: handle.write(b"old contents"))

    def half_then_crash(handle):
        handle.write(b"new con")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ckpt.atomic_write(path, half_then_crash)
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["file.bin"]  # no temporary file left behind


def test_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    old = tiny_model()
    ckpt.save_checkpoint(tmp_path / "last", old, config=CONFIG, classes=CLASSES, epoch=1)
    new = tiny_model()
    with torch.no_grad():
        for parameter in new.parameters():
            parameter.add_(1.0)

    def crash(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(ckpt.os, "fsync", crash)  # dies after the bytes went to the temp file
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path / "last", new, config=CONFIG, classes=CLASSES, epoch=2)
    monkeypatch.undo()
    loaded, _, _ = ckpt.load_model(tmp_path / "last")
    assert ckpt.read_metadata(tmp_path / "last")["epoch"] == 1
    for name, value in old.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert sorted(os.listdir(tmp_path)) == ["last.safetensors"]


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothing\.safetensors.*not found"):
        ckpt.load_model(tmp_path / "nothing.safetensors")
    with pytest.raises(CheckpointError, match=r"nothing\.state\.pt"):
        ckpt.load_training_state(tmp_path / "nothing")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "flip_header"])
def test_damaged_checkpoint_gives_checkpoint_error(tmp_path, damage):
    path = ckpt.save_checkpoint(tmp_path / "best", tiny_model(), config=CONFIG, classes=CLASSES,
                                epoch=1, training_state={"progress": {"epoch": 1}})
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # the 8-byte header length claims more than the file holds
        path.write_bytes((10**12).to_bytes(8, "little") + data[8:])
    with pytest.raises(CheckpointError, match=r"best\.safetensors"):
        ckpt.load_model(path)
    state = tmp_path / "best.state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"best\.state\.pt"):
        ckpt.load_training_state(path)


def test_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not an lgdnet checkpoint"):
        ckpt.load_model(tmp_path / "other.safetensors")


def test_weights_that_do_not_fit(tmp_path):
    model = tiny_model()
    path = ckpt.save_checkpoint(tmp_path / "best", model, config=CONFIG, classes=CLASSES, epoch=1)
    from safetensors.torch import load_file, save

    tensors = load_file(str(path))
    tensors.pop("conv1.weight")  # a missing weight
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    path.write_bytes(save(tensors, metadata=metadata))
    with pytest.raises(CheckpointError, match="do not fit"):
        ckpt.load_model(path)
