"""Training: the two stages of Sec. 4.3 end to end, gradient accumulation, resume exactness."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest
import torch
from conftest import tiny_training_config as tiny

from lgdnet.cli import main as lgdnet_main
from lgdnet.engine import stage as stage_module
from lgdnet.engine import training
from lgdnet.engine.checkpoint import load_model, load_training_state, read_metadata
from lgdnet.engine.config import load_config
from lgdnet.engine.records import read_jsonl
from lgdnet.errors import CheckpointError, ConfigError
from lgdnet.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_batch_plan():
    assert training.batch_plan(64, 0, 1) == (64, 1)
    assert training.batch_plan(64, 8, 2) == (8, 4)  # 2 processes x 8 clips x 4 accumulations
    with pytest.raises(ConfigError, match="micro_batch_size"):
        training.batch_plan(64, 24, 1)
    with pytest.raises(ConfigError, match="batch_size"):
        training.batch_plan(64, 0, 3)


class LinearNet(torch.nn.Module):
    """No BatchNorm, so micro-batches and one big batch must give the same gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3 * 2 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(x.flatten(1))

    def forward_parts(self, x):
        return {"logits": self(x)}


def test_accumulation_equals_one_big_batch():
    torch.manual_seed(0)
    batches = [{"video": torch.randn(2, 3, 2, 4, 4), "label": torch.randint(5, (2,))} for _ in range(6)]
    big = [{"video": torch.cat([b["video"] for b in batches[i:i + 3]]),
            "label": torch.cat([b["label"] for b in batches[i:i + 3]])} for i in (0, 3)]
    results = []
    for loader, accumulation in ((batches, 3), (big, 1)):
        torch.manual_seed(1)
        model = LinearNet()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        steps = []
        metrics = training.train_one_epoch(model, loader, optimizer, device=torch.device("cpu"),
                                           accumulation=accumulation, on_step=steps.append)
        results.append((model.fc.weight.detach().clone(), steps, metrics))
    (w_micro, steps_micro, m_micro), (w_big, steps_big, m_big) = results
    torch.testing.assert_close(w_micro, w_big)
    assert len(steps_micro) == len(steps_big) == 2
    for a, b in zip(steps_micro, steps_big):
        assert a["step"] == b["step"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert m_micro["loss"] == pytest.approx(m_big["loss"], rel=1e-5)
    assert m_micro["clips"] == 12


def test_short_last_group_is_averaged_over_its_own_length():
    torch.manual_seed(0)
    batches = [{"video": torch.randn(2, 3, 2, 4, 4), "label": torch.randint(5, (2,))} for _ in range(5)]
    model = LinearNet()
    steps = []
    training.train_one_epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.1),
                             device=torch.device("cpu"), accumulation=2, on_step=steps.append)
    assert [s["step"] for s in steps] == [1, 2, 3]  # groups of 2, 2 and 1 micro-batches


def test_step_records_time_the_step_and_the_loader_wait():
    torch.manual_seed(0)
    batches = [{"video": torch.randn(2, 3, 2, 4, 4), "label": torch.randint(5, (2,))} for _ in range(4)]

    class SlowLoader:
        def __len__(self):
            return len(batches)

        def __iter__(self):
            for batch in batches:
                time.sleep(0.05)
                yield batch

    model = LinearNet()
    steps = []
    training.train_one_epoch(model, SlowLoader(), torch.optim.SGD(model.parameters(), lr=0.1),
                             device=torch.device("cpu"), accumulation=2, on_step=steps.append)
    assert len(steps) == 2
    for step in steps:  # two micro-batches a step, each 50 ms late
        assert step["data_seconds"] >= 0.1
        assert step["seconds"] >= step["data_seconds"]


# bf16 with 16 frames: CPU bf16 Conv3d backward returns garbage weight gradients for
# 3x1x1 kernels on 2-frame inputs (PyTorch 2.13), which 8-frame clips reach in res3-res5
@pytest.mark.parametrize("precision, frames", [("fp32", 8), ("bf16", 16)])
def test_tiny_lgd3d_overfits_a_fixed_batch(precision, frames):
    torch.manual_seed(0)
    model = create_model("lgd3d_tiny", 3, base_width=4)
    batch = {"video": torch.randn(6, 3, frames, 32, 32), "label": torch.tensor([0, 1, 2, 0, 1, 2])}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    steps = []
    metrics = training.train_one_epoch(model, [batch] * 12, optimizer, device=torch.device("cpu"),
                                       precision=precision, on_step=steps.append)
    losses = [s["loss"] for s in steps]
    assert len(losses) == 12
    # Eq. (6): the stage-1 loss is the sum of the global and the local cross-entropies
    for s in steps:
        assert s["loss"] == pytest.approx(s["global_loss"] + s["local_loss"], rel=1e-4)
    assert losses[-1] < 0.5 * losses[0], losses
    assert set(metrics) >= {"loss", "global_loss", "local_loss", "accuracy", "clips_per_s"}


def test_non_finite_loss_stops_training():
    model = LinearNet()
    with torch.no_grad():
        model.fc.weight.fill_(float("nan"))
    batch = {"video": torch.randn(2, 3, 2, 4, 4), "label": torch.tensor([0, 1])}
    with pytest.raises(FloatingPointError, match="loss is nan"):
        training.train_one_epoch(model, [batch], torch.optim.SGD(model.parameters(), lr=0.1),
                                 device=torch.device("cpu"))


def test_train_both_stages_end_to_end(two_class_dataset, tmp_path):
    config = tiny(two_class_dataset, tmp_path / "run", "run.final_eval=true", "optim.stage2_epochs=1")
    summary = training.train(config)
    run = tmp_path / "run"
    records = read_jsonl(run / "metrics.jsonl")
    assert [(r["stage"], r["epoch"]) for r in records] == [(1, 1), (1, 2), (2, 1)]
    assert all("global_loss" in r and "local_loss" in r for r in records if r["stage"] == 1)
    assert all("global_loss" not in r for r in records if r["stage"] == 2)
    assert all(0.0 <= r["val_accuracy"] <= 1.0 for r in records)
    assert (run / "metrics.csv").read_text().count("\n") == 4  # header + 3 epochs
    steps = read_jsonl(run / "steps.jsonl")
    assert [s["step"] for s in steps if s["stage"] == 1] == [1, 2, 3, 4]  # 8 clips / batch 4, 2 epochs
    for name in ("stage1_last", "stage1_best", "stage2_last", "stage2_best", "best"):
        assert (run / f"{name}.safetensors").is_file(), name
    assert (run / "best.safetensors").read_bytes() == (run / "stage2_best.safetensors").read_bytes()
    model, saved_config, classes = load_model(run / "best.safetensors")
    assert model.stage == 2 and classes == ["approach", "separate"]
    assert saved_config["optim"]["stage2_epochs"] == 1
    assert load_config(run / "config.yaml") == config
    assert (run / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["best_checkpoint"] == str(run / "best.safetensors")
    for stage in (1, 2):  # the multi-view evaluation at the end of each stage
        assert 0.0 <= summary["stages"][stage]["eval"]["top1"] <= 1.0
        assert (run / f"stage{stage}_eval" / "metrics.json").is_file()
    state = load_training_state(run / "stage1_last")
    assert state["progress"]["epoch"] == 2 and len(state["progress"]["history"]) == 2


def test_stage2_starts_from_the_stage1_best_weights(two_class_dataset, tmp_path, monkeypatch):
    training.train(tiny(two_class_dataset, tmp_path / "run", "run.stages=[1]"))
    stage1, _, _ = load_model(tmp_path / "run" / "stage1_best")
    seen = {}
    real_fit = training.fit_stage

    def spy(model, stage, ctx, resume=None):
        seen[stage] = {k: v.clone() for k, v in model.state_dict().items()}
        return real_fit(model, stage, ctx, resume)

    monkeypatch.setattr(training, "fit_stage", spy)
    init = tmp_path / "run" / "stage1_best.safetensors"
    training.train(tiny(two_class_dataset, tmp_path / "run2", "run.stages=[2]", "optim.epochs=1",
                        f"model.init_checkpoint={init}"))
    backbone = {k: v for k, v in stage1.state_dict().items() if not k.startswith("head.")}
    assert backbone and all(torch.equal(seen[2][k], v) for k, v in backbone.items())
    assert read_metadata(tmp_path / "run2" / "best")["stage"] == 2


def test_cli_train_with_config_file_and_overrides(two_class_dataset, tmp_path, capsys):
    config_path = tmp_path / "run.yaml"
    config_path.write_text(
        "model:\n  name: lgd3d_tiny\n  options: {base_width: 4}\n  sketch_dim: 32\n"
        "data:\n  num_frames: 8\n  train_resize: [40, 48]\n  crop_size: 32\n  test_short_side: 32\n"
        "  num_test_views: 1\n  num_workers: 0\n"
        "optim:\n  epochs: 1\n  batch_size: 6\n"
        "run:\n  progress: false\n  final_eval: false\n"
    )
    status = lgdnet_main(["train", "--config", str(config_path), "--set", "run.stages=1",
                          "--train-list", str(two_class_dataset.train_list), "--out", str(tmp_path / "out")])
    assert status == 0
    assert "best model:" in capsys.readouterr().out
    metadata = read_metadata(tmp_path / "out" / "best.safetensors")
    assert metadata["stage"] == 1 and metadata["config"]["optim"]["batch_size"] == 6
    assert metadata["config"]["run"]["stages"] == [1]


def test_cli_reports_bad_settings(two_class_dataset, tmp_path, capsys):
    status = lgdnet_main(["train", "--train-list", str(two_class_dataset.train_list),
                          "--set", "optim.learning_rate=0.1", "--out", str(tmp_path)])
    assert status == 2
    assert "optim.learning_rate" in capsys.readouterr().err
    status = lgdnet_main(["train", "--resume", "--out", str(tmp_path / "empty")])
    assert status == 2
    assert "no stage1_last or stage2_last" in capsys.readouterr().err


def test_resume_without_checkpoint_is_an_error(two_class_dataset, tmp_path):
    with pytest.raises(CheckpointError, match="resume"):
        training.train(tiny(two_class_dataset, tmp_path / "run"), resume=True)


# ---------------------------------------------------------------- resume exactness


class Interrupt:
    """A loader that stops the run before its ``at``-th micro-batch, by Ctrl-C
    (KeyboardInterrupt) or by SIGTERM (how job schedulers stop a job)."""

    def __init__(self, loader, at, how):
        self.loader, self.at, self.how = loader, at, how

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.at:
                if self.how == "sigterm":
                    os.kill(os.getpid(), signal.SIGTERM)
                raise KeyboardInterrupt
            yield batch


@pytest.fixture(scope="module")
def uninterrupted(two_class_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    training.train(tiny(two_class_dataset, out))
    return out


@pytest.mark.parametrize("stage, epoch, batch, how", [
    (1, 2, 0, "ctrl-c"),  # at an epoch boundary
    (1, 1, 3, "sigterm"),  # in the middle of an accumulation group (one step of epoch 1 done)
    (2, 2, 2, "ctrl-c"),  # in stage 2, right after a step
])
def test_resumed_run_reproduces_the_uninterrupted_run(two_class_dataset, tmp_path, monkeypatch, uninterrupted,
                                                      stage, epoch, batch, how):
    real = training.train_one_epoch

    def interrupted(model, loader, *args, **kwargs):
        if kwargs["description"].startswith(f"stage {stage} epoch {epoch}/"):
            loader = Interrupt(loader, batch - kwargs.get("start_batch", 0), how)
        return real(model, loader, *args, **kwargs)

    config = tiny(two_class_dataset, tmp_path / "run")
    monkeypatch.setattr(stage_module, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        training.train(config)
    monkeypatch.undo()
    saved = load_training_state(tmp_path / "run" / f"stage{stage}_last")["progress"]
    assert (saved["epoch"], saved["batches_done"]) == (epoch - 1, batch // 2 * 2)
    training.train(config, resume=True)

    straight, resumed = uninterrupted, tmp_path / "run"
    for name in ("steps.jsonl", "metrics.jsonl"):
        assert read_jsonl(resumed / name, timing=False) == read_jsonl(straight / name, timing=False)
    a, _, _ = load_model(straight / "best")
    b, _, _ = load_model(resumed / "best")
    for name, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[name], value), name


def test_resume_from_an_explicit_checkpoint_path(two_class_dataset, tmp_path, uninterrupted):
    # a copy of the uninterrupted run's stage-1 checkpoint, resumed through the command line
    run = tmp_path / "moved"
    run.mkdir()
    for name in ("stage1_last.safetensors", "stage1_last.state.pt", "stage1_best.safetensors"):
        shutil.copy(uninterrupted / name, run / name)
    status = lgdnet_main(["train", "--resume", str(run / "stage1_last.safetensors")])
    assert status == 0
    records = read_jsonl(run / "metrics.jsonl")
    assert [(r["stage"], r["epoch"]) for r in records] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    expected = [s for s in read_jsonl(uninterrupted / "steps.jsonl", timing=False) if s["stage"] == 2]
    assert [s for s in read_jsonl(run / "steps.jsonl", timing=False) if s["stage"] == 2] == expected
    assert json.loads((run / "summary.json").read_text())["config"]["run"]["out_dir"] == str(run)


def test_metrics_logger_restart_drops_records_after_the_checkpoint(tmp_path):
    from lgdnet.engine.records import MetricsLogger, plot_training_curves

    logger = MetricsLogger(tmp_path)
    epochs = [{"stage": 1, "epoch": e, "lr": 0.01, "loss": 2.0 / e, "global_loss": 1.0 / e,
               "local_loss": 1.0 / e, "accuracy": 0.1 * e, "clips_per_s": 5.0} for e in (1, 2, 3)]
    for record in epochs:
        logger.log_epoch(record)
        for step in (2 * record["epoch"] - 1, 2 * record["epoch"]):
            logger.log_step({"stage": 1, "epoch": record["epoch"], "step": step, "loss": 1.0})
    with (tmp_path / "steps.jsonl").open("a") as handle:
        handle.write('{"stage": 1, "ste')  # a line cut short by a kill
    # the checkpoint had seen 2 epochs (4 steps)
    logger.restart(epochs[:2], {1: 4})
    logger.close()
    assert read_jsonl(tmp_path / "metrics.jsonl") == epochs[:2]
    assert [s["step"] for s in read_jsonl(tmp_path / "steps.jsonl")] == [1, 2, 3, 4]
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("stage,epoch,lr,loss,global_loss,local_loss") and len(lines) == 3
    png = plot_training_curves(epochs, tmp_path / "curves.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("layout, channels_last", [("auto", True), ("contiguous", False)])
def test_training_runs_in_the_configured_memory_layout(two_class_dataset, tmp_path, monkeypatch,
                                                       layout, channels_last):
    """run.memory_format reaches the network being trained ("auto" is channels-last on the
    CPU), with loader workers kept across the epochs; checkpoints load either way."""
    from lgdnet.models import is_channels_last, to_memory_format

    seen = []
    real = training.train_one_epoch

    def spy(net, *args, **kwargs):
        seen.append(is_channels_last(net))
        return real(net, *args, **kwargs)

    monkeypatch.setattr(stage_module, "train_one_epoch", spy)
    config = tiny(two_class_dataset, tmp_path / "run", "run.stages=[1]", "data.num_workers=2",
                  f"run.memory_format={layout}")
    training.train(config)
    assert seen == [channels_last, channels_last]  # both epochs
    model, _, _ = load_model(tmp_path / "run" / "stage1_last")  # values, not layouts
    model.load_state_dict(to_memory_format(model, "contiguous").state_dict())


def test_unknown_memory_format_is_a_config_error(two_class_dataset, tmp_path):
    with pytest.raises(ConfigError, match="run.memory_format"):
        tiny(two_class_dataset, tmp_path / "run", "run.memory_format=nhwc")


def test_persistent_workers_skip_bad_files_among_real_clips(two_class_dataset, tmp_path):
    """A missing file, a zero-byte file and a real UCF101 clip in the training list: the
    loader's workers, kept across epochs, skip the two broken ones every epoch and the run
    finishes both epochs."""
    from pathlib import Path

    empty = tmp_path / "empty.avi"
    empty.touch()
    real = Path(__file__).parent / "data" / "clips" / "v_SoccerJuggling_g23_c01.avi"
    train_list = tmp_path / "train.txt"
    lines = Path(two_class_dataset.train_list).read_text().splitlines()
    root = Path(two_class_dataset.train_list).parent
    lines = [f"{root / line.split()[0]} {line.split()[1]}" for line in lines if line.strip()]
    lines += [f"{tmp_path / 'missing.avi'} 0", f"{empty} 1", f"{real} 0"]
    train_list.write_text("\n".join(lines) + "\n")
    config = tiny(two_class_dataset, tmp_path / "run", "run.stages=[1]", "data.num_workers=2",
                  f"data.train_list={train_list}", "data.on_error=skip")
    result = training.train(config)
    history = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["epoch"] for r in history if r.get("stage") == 1] == [1, 2], result
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in history)
