"""The SGD update kernels (lgdnet.engine.optimizer): one update, three implementations, and a
resume that keeps the configured one."""

import pytest
import torch

from lgdnet.engine.optimizer import SGD_KERNELS, load_sgd_state, make_sgd, sgd_kernel_flags


def _params(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator).requires_grad_()
            for shape in ((16, 8), (8,), (4, 3, 3, 3))]


def _run(kernel, steps=4, lr=0.05):
    params = _params()
    head, body = params[:1], params[1:]
    optimizer = make_sgd([{"params": head, "lr": lr}, {"params": body, "lr": lr * 0.1}],
                         lr=lr, momentum=0.9, weight_decay=1e-4, kernel=kernel)
    for step in range(steps):
        generator = torch.Generator().manual_seed(100 + step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()
    return params, optimizer


def test_auto_fuses_on_the_cpu_and_every_kernel_is_the_same_update():
    assert sgd_kernel_flags("auto", [{"params": _params()}]) == {"fused": True, "foreach": None}
    reference, _ = _run("for-loop")
    for kernel in SGD_KERNELS:
        params, optimizer = _run(kernel)
        assert optimizer.param_groups[0]["fused"] is (True if kernel in ("auto", "fused") else None)
        for got, want in zip(params, reference):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_auto_leaves_integer_or_unknown_parameters_to_pytorch():
    ints = [{"params": [torch.zeros(3, dtype=torch.int64)]}]
    assert sgd_kernel_flags("auto", ints) == {"fused": None, "foreach": None}
    with pytest.raises(ValueError, match="fast"):
        sgd_kernel_flags("fast", ints)


def test_a_loaded_state_keeps_the_configured_kernel_and_the_momentum():
    _, saved = _run("for-loop", steps=2)
    state = saved.state_dict()
    assert state["param_groups"][0]["foreach"] is False
    params = _params()
    fused = make_sgd([{"params": params[:1]}, {"params": params[1:]}], lr=0.05, momentum=0.9,
                     weight_decay=1e-4, kernel="fused")
    load_sgd_state(fused, state)
    assert [g["fused"] for g in fused.param_groups] == [True, True]
    assert [g["foreach"] for g in fused.param_groups] == [None, None]
    assert fused.param_groups[1]["lr"] == pytest.approx(0.005)  # the saved hyper-parameters
    for p, q in zip(fused.param_groups[0]["params"], saved.param_groups[0]["params"]):
        torch.testing.assert_close(fused.state[p]["momentum_buffer"],
                                   saved.state[q]["momentum_buffer"])



def _stage(tmp_path, kernel):
    """Stage 1 of ``lgdnet train`` set up for a tiny LGD-3D with ``optim.sgd_kernel=kernel``."""
    from lgdnet import create_model
    from lgdnet.engine import distributed
    from lgdnet.engine.config import Config, apply_overrides
    from lgdnet.engine.stage import StageContext, setup_stage

    config = apply_overrides(Config(), ["model.name=lgd3d_tiny", "data.num_workers=0",
                                        f"optim.sgd_kernel={kernel}", "run.device=cpu"])
    ctx = StageContext(config=config, dist=distributed.init_distributed("cpu"),
                       train_set=torch.utils.data.TensorDataset(torch.zeros(4)), val_set=None,
                       classes=["a", "b"], run_dir=tmp_path, batch_size=2)
    return setup_stage(create_model("lgd3d_tiny", 2, base_width=4), 1, ctx)


@pytest.mark.parametrize("kernel, other, flags", [("auto", "for-loop", (True, None)),
                                                  ("for-loop", "fused", (None, False))])
def test_a_training_stage_builds_and_resumes_with_the_configured_kernel(tmp_path, kernel, other,
                                                                        flags):
    from lgdnet.engine.checkpoint import rng_state
    from lgdnet.engine.stage import resume_stage

    run = _stage(tmp_path, kernel)
    assert [(g["fused"], g["foreach"]) for g in run.optimizer.param_groups] == [flags]
    # a training state written by another kernel resumes with this run's
    written = _stage(tmp_path, other)
    resume_stage(run, {"optimizer": written.optimizer.state_dict(),
                       "scheduler": written.scheduler.state_dict(), "scaler": {},
                       "progress": run.state.to_dict(), "rng": rng_state()})
    assert [(g["fused"], g["foreach"]) for g in run.optimizer.param_groups] == [flags]
