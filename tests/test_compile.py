"""``run.compile``: compiled training gives eager's losses, resumes exactly, and falls back
to eager with one warning where no compiler is available."""

from __future__ import annotations

import logging

import pytest
import torch
import torch._inductor.config
from conftest import tiny_training_config as tiny

from lgdnet.engine import compilation, training
from lgdnet.engine import stage as stage_module
from lgdnet.engine.checkpoint import load_model
from lgdnet.engine.records import read_jsonl
from lgdnet.errors import ConfigError
from lgdnet.models import FrameBottleneck, LGDBlock, P3DBottleneck

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

# compiled and eager code sum in different orders: the first steps' losses agree to float32
# rounding; SGD on 2-clip batches amplifies the difference step by step (1e-3 by the fourth)
FIRST_STEPS_RTOL = 1e-5
LOSS_RTOL = 1e-2


def losses(run) -> list[float]:
    return [record["loss"] for record in read_jsonl(run / "steps.jsonl")]


def test_an_unknown_mode_is_a_config_error(two_class_dataset, tmp_path):
    with pytest.raises(ConfigError, match="run.compile"):
        training.train(tiny(two_class_dataset, tmp_path / "run", "run.compile=fast"))


@pytest.mark.parametrize("unit_type", [P3DBottleneck, FrameBottleneck])
def test_the_compiled_epilogue_equals_the_plain_formula(unit_type):
    torch.manual_seed(0)
    layout = "frames" if unit_type is FrameBottleneck else "clips"
    plain = LGDBlock(unit_type(8, 2), 8, 8, "lgd", 4, layout=layout, epilogue="plain")
    compiled = LGDBlock(unit_type(8, 2), 8, 8, "lgd", 4, layout=layout, epilogue="compiled")
    compiled.load_state_dict(plain.state_dict())
    x = torch.randn(2, 8, 4, 6, 6)
    if layout == "frames":
        x = x.transpose(1, 2).reshape(8, 8, 6, 6)
    g = torch.randn(2, 8)
    results = []
    for block in (plain, compiled):
        inputs = x.clone().requires_grad_(True)
        y, g_out = block(inputs, g)
        (y.square().mean() + g_out.square().mean()).backward()
        results.append((y.detach(), g_out.detach(), inputs.grad,
                        block.global_to_local.expand.weight.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def eager_run(two_class_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("eager")
    training.train(tiny(two_class_dataset, out, "run.stages=[1]"))
    return out


@pytest.mark.parametrize("mode", ["epilogue", "model"])
def test_compiled_training_has_the_eager_losses(two_class_dataset, tmp_path, eager_run, mode):
    # inductor draws dropout masks from its own generator; eager's, for the comparison
    run = tmp_path / mode
    with torch._inductor.config.patch(fallback_random=True):
        training.train(tiny(two_class_dataset, run, "run.stages=[1]", f"run.compile={mode}"))
    expected = losses(eager_run)
    assert len(losses(run)) == len(expected) > 2
    assert losses(run)[:2] == pytest.approx(expected[:2], rel=FIRST_STEPS_RTOL)
    assert losses(run) == pytest.approx(expected, rel=LOSS_RTOL)
    a, _, _ = load_model(eager_run / "best")
    b, _, _ = load_model(run / "best")  # state-dict keys unchanged by compilation
    assert a.state_dict().keys() == b.state_dict().keys()


def test_a_compiled_run_resumes_exactly(two_class_dataset, tmp_path, monkeypatch):
    config = ("run.stages=[1]", "run.compile=model")
    straight = tmp_path / "straight"
    training.train(tiny(two_class_dataset, straight, *config))
    real = training.train_one_epoch

    def interrupted(model, loader, *args, **kwargs):
        if kwargs["description"].startswith("stage 1 epoch 2/"):
            raise KeyboardInterrupt
        return real(model, loader, *args, **kwargs)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(stage_module, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        training.train(tiny(two_class_dataset, resumed, *config))
    monkeypatch.undo()
    training.train(tiny(two_class_dataset, resumed, *config), resume=True)
    assert read_jsonl(resumed / "steps.jsonl", timing=False) == read_jsonl(straight / "steps.jsonl", timing=False)
    a, _, _ = load_model(straight / "best")
    b, _, _ = load_model(resumed / "best")
    for name, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[name], value), name


def test_no_compiler_means_one_warning_and_eager_training(two_class_dataset, tmp_path, monkeypatch,
                                                          caplog):
    compilation.compiler_missing.cache_clear()
    compilation._warn_once.cache_clear()
    monkeypatch.setattr(compilation.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    try:
        with caplog.at_level(logging.WARNING, logger="lgdnet.engine"):
            training.train(tiny(two_class_dataset, tmp_path / "run", "run.compile=model"))
    finally:
        compilation.compiler_missing.cache_clear()
        compilation._warn_once.cache_clear()
    warnings = [r.getMessage() for r in caplog.records if "run.compile" in r.getMessage()]
    assert warnings == ["run.compile=model: no C++ compiler on PATH (inductor's CPU code needs "
                        "one; set CXX); training runs eagerly"]
    assert (tmp_path / "run" / "summary.json").is_file()
