"""Heads of both stages: Tensor Sketch, combination classifier, losses, gradients, state."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lgdnet.models import TensorSketch, create_model, stage_loss
from lgdnet.models.heads import rfft


def sketches(c: int, d: int, seeds: range) -> list[TensorSketch]:
    return [TensorSketch(c, d, seed=s) for s in seeds]


def test_tensor_sketch_is_the_count_sketch_of_the_outer_product():
    """phi(v)[j] = sum over (i, k) with h1(i) + h2(k) = j (mod d) of s1(i) s2(k) v_i v_k."""
    c, d = 7, 11
    ts = TensorSketch(c, d, seed=5)
    v = torch.randn(3, c, dtype=torch.float64)
    expected = torch.zeros(3, d, dtype=torch.float64)
    for i in range(c):
        for k in range(c):
            j = int(ts.hash1[i] + ts.hash2[k]) % d
            expected[:, j] += ts.sign1[i] * ts.sign2[k] * v[:, i] * v[:, k]
    torch.testing.assert_close(ts(v), expected)


def estimates(sketch_fn, a: torch.Tensor, b: torch.Tensor, seeds: range, c: int, d: int):
    return torch.stack(
        [(sketch_fn(ts, a) * sketch_fn(ts, b)).sum() for ts in sketches(c, d, seeds)]
    )


def test_tensor_sketch_inner_product_is_unbiased_and_broken_sketches_fail():
    """Mean of <phi(a), phi(b)> over many independent sketches -> <a, b>^2.

    Negative controls, which the same tolerance must reject: signs all +1, and an
    element-wise product of the two count sketches instead of their FFT convolution.
    """
    torch.manual_seed(0)
    c, d, trials = 16, 16, 3000
    a = torch.rand(c, dtype=torch.float64) + 0.5
    b = a + 0.3 * torch.rand(c, dtype=torch.float64)
    truth = float(a @ b) ** 2
    seeds = range(trials)

    good = estimates(lambda ts, v: ts(v), a, b, seeds, c, d)
    stderr = float(good.std()) / trials**0.5
    tolerance = 4 * stderr
    assert tolerance < 0.1 * truth  # the test is sharp enough to mean something
    assert abs(float(good.mean()) - truth) < tolerance

    def unsigned(ts, v):
        ts.sign1.fill_(1.0)
        ts.sign2.fill_(1.0)
        return ts(v)

    def no_fft(ts, v):
        return ts.count_sketch(v, 1) * ts.count_sketch(v, 2)

    for broken in (unsigned, no_fft):
        assert abs(float(estimates(broken, a, b, seeds, c, d).mean()) - truth) > tolerance


def test_pooled_sketch_is_the_mean_of_position_sketches():
    ts = TensorSketch(6, 32, seed=1)
    v = torch.randn(2, 9, 6, dtype=torch.float64)
    torch.testing.assert_close(ts.pooled(v, dim=1), ts(v).mean(1))


def test_stage_loss_is_eq6_then_eq7():
    torch.manual_seed(0)
    target = torch.tensor([0, 2])
    out1 = {"logits": torch.randn(2, 3), "global_logits": torch.randn(2, 3),
            "local_logits": torch.randn(2, 3)}  # fmt: skip
    expected = F.cross_entropy(out1["global_logits"], target) + F.cross_entropy(
        out1["local_logits"], target
    )
    torch.testing.assert_close(stage_loss(out1, target), expected)
    out2 = {"logits": torch.randn(2, 3)}
    torch.testing.assert_close(stage_loss(out2, target), F.cross_entropy(out2["logits"], target))


def clip_for(model, n: int = 2) -> torch.Tensor:
    t = 4 if model.kind == "3d" else 2
    return torch.randn(n, model.in_channels, t, 32, 32)


@pytest.mark.parametrize("diffusion", ["lgd", "v1", "v2", "none"])
@pytest.mark.parametrize("name", ["lgd3d_tiny", "lgd2d_tiny"])
def test_every_parameter_gets_a_gradient_in_both_stages(name, diffusion):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, diffusion=diffusion)
    x, target = clip_for(model), torch.tensor([1, 3])
    for stage in (1, 2):
        if stage == 2:
            model.to_stage2(sketch_dim=128)
        model.zero_grad(set_to_none=True)
        outputs = model.forward_parts(x)
        assert set(outputs) == ({"logits", "global_logits", "local_logits"} if stage == 1
                                else {"logits"})  # fmt: skip
        stage_loss(outputs, target).backward()
        dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
        assert dead == [], f"stage {stage}: no gradient for {dead}"
    assert model.stage == 2


def test_stage1_logits_are_the_mean_of_the_two_classifiers():
    model = create_model("lgd3d_tiny", num_classes=5).eval()
    x = clip_for(model)
    out = model.forward_parts(x)
    torch.testing.assert_close(out["logits"], (out["global_logits"] + out["local_logits"]) / 2)
    torch.testing.assert_close(model(x), out["logits"])


def test_state_dict_round_trip_with_sketch_buffers():
    torch.manual_seed(0)
    model = create_model("lgd3d_tiny", num_classes=5, diffusion="v2").to_stage2(
        sketch_dim=64, seed=3
    )
    model.eval()
    x = clip_for(model)
    expected = model(x)
    assert "head.sketch.hash1" in model.state_dict() and "head.sketch.sign2" in model.state_dict()

    args = json.loads(json.dumps(model.build_args))  # survives a JSON trip (checkpoint metadata)
    rebuilt = create_model(**args)
    rebuilt.to_stage2(**{**model.stage2_args, "seed": 99})  # different hashes until loaded
    rebuilt.eval()
    assert not torch.allclose(rebuilt(x), expected)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(rebuilt(x), expected, rtol=0, atol=0)


def test_to_dtype_keeps_sketch_buffers():
    model = create_model("lgd2d_tiny", num_classes=3).to_stage2(sketch_dim=64).eval()
    x = clip_for(model)
    hashes = model.head.sketch.hash1.clone()
    signs = model.head.sketch.sign1.clone()
    reference = model(x)
    model.to(torch.float64)
    assert model.head.sketch.hash1.dtype == torch.int64
    assert torch.equal(model.head.sketch.hash1, hashes)
    assert torch.equal(model.head.sketch.sign1, signs.double())
    out = model(x.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), reference, rtol=1e-4, atol=1e-4)


def test_to_stage2_keeps_the_backbone():
    model = create_model("lgd3d_tiny", num_classes=3).eval()
    x = clip_for(model)
    before = model.forward_features(x)
    weights = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    model.to_stage2(sketch_dim=32)
    after = model.forward_features(x)
    for k, v in weights.items():
        assert torch.equal(model.state_dict()[k], v), k
    torch.testing.assert_close(after[0], before[0])
    assert model.stage2_args["sketch_dim"] == 32
    assert model(x).shape == (2, 3)


@pytest.mark.parametrize("n", [8, 9, 16])
def test_real_fft_backward_is_the_adjoint(n):
    """The sketch's rfft (one inverse real FFT in backward) against gradcheck and against
    PyTorch's own backward, for even and odd lengths."""
    x = torch.randn(3, 2, n, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rfft, (x,))
    grad = torch.randn(3, 2, n // 2 + 1, dtype=torch.complex128)
    (ours,) = torch.autograd.grad(rfft(x), x, grad)
    (theirs,) = torch.autograd.grad(torch.fft.rfft(x), x, grad)
    torch.testing.assert_close(ours, theirs)
    with torch.no_grad():
        torch.testing.assert_close(rfft(x), torch.fft.rfft(x))
