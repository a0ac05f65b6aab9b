"""CUDA: the models, mixed precision, training, evaluation and DDP on a GPU.

These tests run where a CUDA device is present (the CPU suite covers the same code paths on
the CPU). They check that a GPU computes what the CPU computes, so that a model trained on one
device behaves the same on the other.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import tiny_training_config
from test_engine_distributed import free_port

from lgdnet.engine import training
from lgdnet.engine.builders import build_val_dataset
from lgdnet.engine.checkpoint import load_model
from lgdnet.engine.config import save_config
from lgdnet.engine.evaluate import evaluate
from lgdnet.models import create_model, to_memory_format
from lgdnet.models.heads import stage_loss

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_fp32():
    """Full fp32 on the GPU (no TF32), so that CUDA and CPU results can be compared closely."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _model_and_clips(name: str, stage: int):
    torch.manual_seed(0)
    model = create_model(name, 5, base_width=4, memory_format="contiguous")
    if stage == 2:
        model.to_stage2(sketch_dim=64)
    frames = 8 if "3d" in name else 3
    clips = torch.randn(2, 3, frames, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, clips


@pytest.mark.parametrize("name, stage", [("lgd3d_tiny", 1), ("lgd2d_tiny", 1), ("lgd3d_tiny", 2)])
def test_forward_matches_cpu(name, stage):
    model, clips = _model_and_clips(name, stage)
    model.eval()
    with torch.no_grad():
        expected = model.forward_parts(clips)
        got = model.to(CUDA).forward_parts(clips.to(CUDA))
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key].cpu(), expected[key], rtol=1e-4, atol=1e-4, msg=key)


@pytest.mark.parametrize("name, stage, memory_format",
                         [("lgd3d_tiny", 1, "contiguous"), ("lgd3d_tiny", 2, "contiguous"),
                          ("lgd3d_tiny", 1, "channels_last"), ("lgd2d_tiny", 1, "channels_last")])
def test_gradients_match_cpu(name, stage, memory_format):
    """Backward of the LGD block (with its fused residual/ReLU/pool node) and of the Tensor
    Sketch head (FFTs) on the GPU, in either memory layout, equals the CPU's (contiguous)."""
    model, clips = _model_and_clips(name, stage)
    labels = torch.tensor([1, 3])
    grads = []
    for device in (torch.device("cpu"), CUDA):
        copy = _model_and_clips(name, stage)[0].to(device).train()
        copy.load_state_dict(model.state_dict())
        if device == CUDA:
            to_memory_format(copy, memory_format)
        stage_loss(copy.forward_parts(clips.to(device)), labels.to(device)).backward()
        grads.append({n: p.grad.cpu() for n, p in copy.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    assert any("diffusion" in n or "global" in n for n in grads[0])
    # Compared relative to each gradient's norm: elementwise, sums of many terms of both signs
    # can cancel below any fixed tolerance. Measured on an H200: at most 1.4e-3, in stage 2,
    # whose sketch multiplies two projections of the features.
    errors = {n: float((grads[1][n] - grads[0][n]).norm() / grads[0][n].norm().clamp_min(1e-12))
              for n in grads[0]}
    print("largest relative gradient differences:", sorted(errors.items(), key=lambda e: -e[1])[:3])
    assert max(errors.values()) < 5e-3, errors


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_learns_a_fixed_batch(precision):
    torch.manual_seed(0)
    model = create_model("lgd3d_tiny", 3, base_width=4)
    batch = {"video": torch.randn(6, 3, 8, 32, 32), "label": torch.tensor([0, 1, 2, 0, 1, 2])}
    optimizer = torch.optim.SGD(model.to(CUDA).parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    steps = []
    training.train_one_epoch(model, [batch] * 12, optimizer, device=CUDA, precision=precision,
                             scaler=scaler, on_step=steps.append)
    losses = [s["loss"] for s in steps]
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < 0.5 * losses[0], losses


def test_train_on_cuda_then_use_the_checkpoint_on_cpu(two_class_dataset, tmp_path):
    """Both stages on the GPU in bf16; the saved model loads on a CPU-only host and scores the
    held-out videos as it does on the GPU."""
    config = tiny_training_config(two_class_dataset, tmp_path / "run", "run.device=cuda",
                                  "optim.precision=bf16", "optim.stage2_epochs=1",
                                  "run.final_eval=true")
    training.train(config)
    model, saved_config, classes = load_model(tmp_path / "run" / "stage2_last", device="cpu")
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert saved_config["run"]["device"] == "cuda" and len(classes) == 2
    videos = build_val_dataset(config, "3d", classes)
    on_cpu = evaluate(model, videos, device="cpu", progress=False)
    on_gpu = evaluate(model, videos, device=CUDA, progress=False)
    assert on_cpu.metrics["num_videos"] == 2
    torch.testing.assert_close(torch.from_numpy(on_gpu.scores), torch.from_numpy(on_cpu.scores),
                               rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("mode", ["epilogue", "model"])
def test_compiled_training_on_cuda_has_the_eager_losses(two_class_dataset, tmp_path, mode):
    """``run.compile`` on the GPU (Triton; ``model`` with CUDA graphs): the first steps'
    losses as in eager mode (with eager's dropout masks, ``fallback_random``), the later
    ones within the drift that SGD on 2-clip batches amplifies."""
    import torch._inductor.config

    settings = ("run.device=cuda", "run.stages=[1]")
    training.train(tiny_training_config(two_class_dataset, tmp_path / "eager", *settings))
    with torch._inductor.config.patch(fallback_random=True):
        training.train(tiny_training_config(two_class_dataset, tmp_path / mode, *settings,
                                            f"run.compile={mode}"))
    from lgdnet.engine.records import read_jsonl

    eager = [s["loss"] for s in read_jsonl(tmp_path / "eager" / "steps.jsonl")]
    compiled = [s["loss"] for s in read_jsonl(tmp_path / mode / "steps.jsonl")]
    assert compiled[:2] == pytest.approx(eager[:2], rel=1e-4)
    assert compiled == pytest.approx(eager, rel=1e-2)


def test_torchrun_single_gpu_uses_nccl(two_class_dataset, tmp_path):
    """`torchrun` with one process per GPU: the process group is NCCL's and training runs."""
    config_path = tmp_path / "config.json"
    config = tiny_training_config(two_class_dataset, tmp_path / "run", "run.device=cuda",
                                  "run.stages=[1]", "optim.epochs=1")
    save_config(config, config_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--master_addr=127.0.0.1",
         f"--master_port={free_port()}", "-m", "lgdnet.cli", "train", "--config", str(config_path)],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "run" / "stage1_last.safetensors").is_file()
