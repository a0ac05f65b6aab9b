"""The tools people use on a network accept every zoo model: ``torch.fx.symbolic_trace``,
``torch.compile`` (CPU inductor, tiny size) and ``torch.onnx.export`` checked with
onnxruntime; and ``lgdnet export`` as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.fx

from lgdnet.models import create_model, fold_batchnorm, list_models

BIG = {name for name in list_models() if not name.endswith("_tiny")}
CLIPS = Path(__file__).parent / "data" / "clips"  # copies of ../shared/data/clips
LEGACY = Path(__file__).parent / "data" / "legacy_checkpoints"


def small_clip(model, n: int = 2) -> torch.Tensor:
    frames = 8 if model.kind == "3d" else 2
    if model.temporal_pool == 4 if model.kind == "3d" else False:
        frames = 16
    return torch.randn(n, model.in_channels, frames, 32, 32,
                       generator=torch.Generator().manual_seed(0))


def build(name: str, stage: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=5)
    if stage == 2:
        model.to_stage2(sketch_dim=64)
    return model.eval()


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("name", list_models())
def test_fx_symbolic_trace(name, stage):
    """Every network traces; the tiny ones' traced graphs compute what the module does."""
    if name in BIG:
        with torch.device("meta"):
            model = build(name, stage)
        graph = torch.fx.symbolic_trace(model)
        assert any(node.op == "call_module" for node in graph.graph.nodes)
        return
    model = build(name, stage)
    graph = torch.fx.symbolic_trace(model)
    x = small_clip(model)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x))


def onnx_parity(model: torch.nn.Module, x: torch.Tensor, path: Path) -> float:
    import numpy as np
    import onnxruntime

    folded = fold_batchnorm(model)
    with torch.no_grad():
        torch.onnx.export(folded, (x,), str(path), dynamo=True, verbose=False,
                          dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}})
        expected = folded(x).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # the batch is dynamic: a batch of another size runs too
    other = session.run(None, {session.get_inputs()[0].name: x[:1].numpy()})[0]
    assert other.shape == (1, expected.shape[1])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return float(np.abs(got - expected).max())


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in list_models()])
def test_onnx_export_runs_in_onnxruntime(name, tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra (installed by make test)")
    model = build(name, 1)
    difference = onnx_parity(model, small_clip(model), tmp_path / f"{name}.onnx")
    assert difference < 1e-4, difference


@pytest.mark.parametrize("name", ["lgd3d_tiny", "lgd2d_tiny"])
def test_onnx_export_of_the_combination_classifier(name, tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra (installed by make test)")
    model = build(name, 2)
    assert onnx_parity(model, small_clip(model), tmp_path / "stage2.onnx") < 1e-4


def test_torch_compile_trains_like_eager():
    """CPU inductor at tiny size: the same logits and gradients as eager mode (the plain
    formula of Eq. 2-3 is what the compiler sees)."""
    torch.manual_seed(0)
    model = create_model("lgd3d_tiny", num_classes=3).train()
    x, y = small_clip(model), torch.tensor([0, 2])
    compiled = torch.compile(model, backend="inductor")

    def step(net):
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    state = {k: v.clone() for k, v in model.state_dict().items()}
    eager_loss, eager_grads = step(model)
    model.load_state_dict(state)  # BatchNorm statistics as before the eager step
    compiled_loss, compiled_grads = step(compiled)
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-4, atol=1e-5)
    for key, grad in eager_grads.items():
        scale = grad.abs().max().clamp_min(1e-6)
        assert (compiled_grads[key] - grad).abs().max() / scale < 1e-3, key


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lgdnet.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_export_verifies_on_a_real_clip(tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra (installed by make test)")
    clip = CLIPS / "v_SoccerJuggling_g23_c01.avi"
    out = tmp_path / "model.onnx"
    result = run_cli("export", str(LEGACY / "lgd3d_tiny_stage1.safetensors"), "--format", "onnx",
                     "--out", str(out), "--video", str(clip), "--views", "1")
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 100_000
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith(f"onnxruntime vs PyTorch on {clip}: largest difference ")
    assert float(line.rsplit(" ", 1)[1]) < 1e-4
    assert not list(tmp_path.glob(".*partial"))


def test_cli_export_of_a_missing_checkpoint_is_one_line(tmp_path):
    result = run_cli("export", str(tmp_path / "nothing.safetensors"), "--out",
                     str(tmp_path / "m.onnx"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"lgdnet export: error: {tmp_path / 'nothing.safetensors'}: checkpoint not found")
    assert not (tmp_path / "m.onnx").exists()
