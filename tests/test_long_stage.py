"""Per-stage settings (Sec. 5.4, Table 3 "Long"): stage 2 on longer clips with pool1's
temporal stride 4, its own mini-batch and a fractional epoch count, resumed exactly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_training_config as tiny

from lgdnet.engine import stage as stage_module
from lgdnet.engine import training
from lgdnet.engine.checkpoint import load_model, load_training_state
from lgdnet.engine.config import load_config
from lgdnet.engine.records import read_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = Path(__file__).parents[1] / "configs"
LONG = ("data.stage2_num_frames=16", "model.stage2_temporal_pool=4", "optim.stage2_batch_size=2",
        "optim.stage2_micro_batch_size=1", "optim.stage2_epochs=1.5", "optim.epochs=1")


@pytest.fixture(scope="module")
def long_dataset(tmp_path_factory):
    """Two classes, 20-frame clips (long enough for 16-frame stage-2 clips)."""
    from lgdnet.data import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("long"), clips_per_class=4,
                                   classes=["approach", "separate"], num_frames=20, size=(48, 64),
                                   workers=1, progress=False)


class Recorder:
    """A loader that records the clip shapes and may stop the run before batch ``stop_at``."""

    def __init__(self, loader, shapes, stop_at=None):
        self.loader, self.shapes, self.stop_at = loader, shapes, stop_at

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.stop_at:
                raise KeyboardInterrupt
            self.shapes.append(tuple(batch["video"].shape))
            yield batch


def spy(monkeypatch, shapes, stop=None):
    real = training.train_one_epoch

    def recording(model, loader, *args, **kwargs):
        stop_at = None
        if stop is not None and kwargs["description"].startswith(stop[0]):
            stop_at = stop[1] - kwargs.get("start_batch", 0)
        key = kwargs["description"].split("/")[0]
        return real(model, Recorder(loader, shapes.setdefault(key, []), stop_at), *args, **kwargs)

    monkeypatch.setattr(stage_module, "train_one_epoch", recording)


@pytest.fixture(scope="module")
def straight(long_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    shapes: dict = {}
    with pytest.MonkeyPatch.context() as patch:
        spy(patch, shapes)
        summary = training.train(tiny(long_dataset, out, *LONG))
    return out, shapes, summary


def test_stage2_trains_longer_clips_with_pool1_stride_4_for_a_fractional_epoch(straight, long_dataset):
    out, shapes, _ = straight
    train_clips = len(Path(long_dataset.train_list).read_text().split("\n")) - 1
    # stage 1: 8-frame clips, micro-batches of 2; stage 2: 16 frames, micro-batches of 1
    assert {s[2] for s in shapes["stage 1 epoch 1"]} == {8} and shapes["stage 1 epoch 1"][0][0] == 2
    assert {s[2] for s in shapes["stage 2 epoch 1"]} == {16}
    assert {s[0] for s in shapes["stage 2 epoch 1"]} == {1}
    steps_per_epoch = math.ceil(train_clips / 2)  # batch 2 in stage 2
    assert len(shapes["stage 2 epoch 1"]) == train_clips
    assert len(shapes["stage 2 epoch 2"]) == 2 * round(0.5 * steps_per_epoch)  # half the steps
    records = read_jsonl(out / "metrics.jsonl")
    assert [(r["stage"], r["epoch"], r.get("fraction")) for r in records] == [
        (1, 1, None), (2, 1, None), (2, 2, 0.5)]
    steps = [s["step"] for s in read_jsonl(out / "steps.jsonl") if s["stage"] == 2]
    assert steps == list(range(1, steps_per_epoch + round(0.5 * steps_per_epoch) + 1))
    model, config, _ = load_model(out / "best")  # rebuilt in the long form
    assert model.stage == 2 and model.temporal_pool == 4 and model.pool1.kernel_size == (4, 1, 1)
    local, _ = model.forward_features(torch.randn(1, 3, 16, 32, 32))
    assert local.shape[2] == 2  # 16 frames / pool1 4 / pool2 2
    stage1, _, _ = load_model(out / "stage1_best")
    assert stage1.temporal_pool == 2  # stage 1 keeps the 16-frame form
    assert config["data"]["stage2_num_frames"] == 16


def test_resume_inside_the_fractional_epoch_is_exact(straight, long_dataset, tmp_path, monkeypatch):
    out, _, _ = straight
    config = tiny(long_dataset, tmp_path / "run", *LONG)
    spy(monkeypatch, {}, stop=("stage 2 epoch 2/", 3))  # in its second step
    with pytest.raises(KeyboardInterrupt):
        training.train(config)
    monkeypatch.undo()
    saved = load_training_state(tmp_path / "run" / "stage2_last")["progress"]
    assert (saved["epoch"], saved["batches_done"]) == (1, 2)  # inside the partial epoch
    training.train(config, resume=True)
    assert read_jsonl(tmp_path / "run" / "steps.jsonl", timing=False) == read_jsonl(out / "steps.jsonl", timing=False)
    a, _, _ = load_model(out / "best")
    b, _, _ = load_model(tmp_path / "run" / "best")
    for name, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[name], value), name


def test_the_long_recipe_config():
    """configs/lgd3d_r50_long_kinetics400.yaml is Table 3's Long row (Sec. 5.4)."""
    config = load_config(CONFIGS / "lgd3d_r50_long_kinetics400.yaml")
    assert config.model.name == "lgd3d_r50" and config.model.stage2_temporal_pool == 4
    assert config.data.num_frames in (None, 16) and config.data.stage2_num_frames == 128
    assert config.optim.stage2_batch_size == 16 and config.optim.stage2_epochs == 12.5
    assert config.run.stages == (1, 2)
    with torch.device("meta"):  # the stage-2 network on a 128-frame clip: local 16 x 7 x 7
        from lgdnet.engine import builders

        model = builders.build_model(config, num_classes=400).set_temporal_pool(4)
        local, _ = model.forward_features(torch.empty(1, 3, 128, 112, 112))
    assert tuple(local.shape[2:]) == (16, 7, 7)


def test_a_long_stage_checkpoint_is_tested_on_its_own_clips():
    """`lgdnet eval`/`predict`/`features` read a stage-2 checkpoint of the long recipe with
    its 128-frame clips, a stage-1 one with 16-frame clips."""
    from lgdnet.engine.config import config_to_dict
    from lgdnet.engine.predict import inference_sampling

    saved = config_to_dict(load_config(CONFIGS / "lgd3d_r50_long_kinetics400.yaml"))
    assert inference_sampling(saved, "3d", stage=2).num_frames == 128
    assert inference_sampling(saved, "3d", stage=1).num_frames == 16
