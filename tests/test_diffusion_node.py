"""The diffusion of a block in training as one autograd node (``diffusion_kernel.diffuse``):
the module-by-module path's outputs and gradients, whatever is frozen, and the modules
wherever anything could see the difference."""

from __future__ import annotations

import pytest
import torch

# a block with non-zero projections, its local unit's input and g, in eval mode (BatchNorm
# without batch statistics, so both paths see the same numbers)
from test_diffusion_kernel import make_block as _make_block  # noqa: E402

import lgdnet
from lgdnet.models import diffusion_kernel, epilogue_kernel, low_rank_kernel
from lgdnet.models.lgd_block import LGDBlock


def make_block(layout: str, memory_format: str, clips: int = 2, dtype: torch.dtype = torch.float64,
               **options):
    return _make_block(layout, memory_format, clips=clips, dtype=dtype, **options)


TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-11, atol=1e-13)}


def run(block, x, g, fused: bool):
    """Outputs, the diffusion's grad_fn name and the gradients of x, g and every parameter,
    through the node (``fused``) or the modules."""
    x, g = x.detach().clone().requires_grad_(x.requires_grad), g.detach().clone().requires_grad_(g.requires_grad)
    for param in block.parameters():
        param.grad = None
    with pytest.MonkeyPatch.context() as patch:
        if not fused:
            patch.setattr(diffusion_kernel, "applies_in_training", lambda *args: False)
        y, g_out = block(x, g)
    generator = torch.Generator().manual_seed(1)
    weight_y = torch.randn(y.shape, generator=generator, dtype=y.dtype)
    weight_g = torch.randn(g_out.shape, generator=generator, dtype=y.dtype)
    ((y * weight_y).sum() + (g_out * weight_g).sum()).backward()
    grads = {name: param.grad for name, param in block.named_parameters()}
    grads.update(x=x.grad, g=g.grad)
    return y.detach(), g_out.detach(), type(g_out.grad_fn).__name__, grads


def assert_same(a, b, dtype):
    ya, ga, _, grads_a = a
    yb, gb, _, grads_b = b
    torch.testing.assert_close(ya, yb, **TOLERANCE[dtype])
    torch.testing.assert_close(ga, gb, **TOLERANCE[dtype])
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        if grads_a[name] is None or grads_b[name] is None:
            assert grads_a[name] is None and grads_b[name] is None, name
        else:
            torch.testing.assert_close(grads_a[name], grads_b[name], **TOLERANCE[dtype], msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("products", ["thin", "blas"])
@pytest.mark.parametrize("clips", [2, low_rank_kernel.MAX_ROWS + 4])
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("layout", ["clips", "frames"])
def test_gradients_equal_the_module_path(layout, memory_format, clips, products, dtype, monkeypatch):
    if products == "thin":  # the tests' factors are small: let the thin-product kernel take them
        monkeypatch.setattr(low_rank_kernel, "MIN_WEIGHT_ELEMENTS", 0)
    block, x, g = make_block(layout, memory_format, clips=clips, dtype=dtype)
    x.requires_grad_(), g.requires_grad_()
    fused, modules = run(block, x, g, fused=True), run(block, x, g, fused=False)
    assert fused[2] == "_DiffusionBackward" and modules[2] != fused[2]
    assert fused[0].stride() == modules[0].stride()
    assert_same(fused, modules, dtype)


@pytest.mark.parametrize("frozen", ["local_unit", "projections", "global_to_local", "g", "input"])
def test_whatever_is_frozen_gets_no_gradient_and_the_rest_the_module_paths(frozen):
    block, x, g = make_block("frames", "channels_last")
    x.requires_grad_(frozen != "input" and frozen != "local_unit")
    g.requires_grad_(frozen != "g")
    for name, param in block.named_parameters():
        if (frozen == "local_unit" and name.startswith("local_unit.")
                or frozen == "projections" and not name.startswith("local_unit.")
                or frozen == "global_to_local" and name.startswith("global_to_local.")):
            param.requires_grad_(False)
    fused, modules = run(block, x, g, fused=True), run(block, x, g, fused=False)
    assert fused[2] == "_DiffusionBackward"
    assert_same(fused, modules, torch.float64)
    # a frozen local unit: the six factors still learn (the epilogue is tracked through W^{x,g})
    if frozen == "local_unit":
        assert all(fused[3][f"{p}.{f}.weight"] is not None for p in diffusion_kernel.PROJECTIONS
                   for f in ("reduce", "expand"))


def test_one_node_per_block_and_not_twice_differentiable():
    block, x, g = make_block("clips", "contiguous")
    y, g_out = block(x.requires_grad_(), g)
    assert type(g_out.grad_fn).__name__ == "_DiffusionBackward"
    # the map and g leave the same node
    assert y.grad_fn is g_out.grad_fn
    # a squared loss: the node's incoming gradient depends on x, so a second order needs it
    (grad_x,) = torch.autograd.grad((g_out ** 2).sum() + y.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate twice"):
        grad_x.sum().backward()


@pytest.mark.parametrize("why", ["forward_hook", "backward_hook", "bias", "authors", "v2", "plain",
                                 "compiled_epilogue", "disabled", "half"])
def test_the_modules_run_where_the_node_does_not_apply(why):
    options = {"bias": why == "bias", "order": "authors" if why == "authors" else "paper",
               "diffusion": "v2" if why == "v2" else "lgd",
               "epilogue": {"plain": "plain", "compiled_epilogue": "compiled"}.get(why, "fused")}
    block, x, g = make_block("clips", "contiguous", dtype=torch.float32, **options)
    if why == "half":
        block, x, g = block.bfloat16(), x.bfloat16(), g.bfloat16()
    seen = []
    if why == "forward_hook":
        block.local_to_global.register_forward_hook(lambda module, args, out: seen.append(out))
    if why == "backward_hook":
        block.global_to_global.register_full_backward_hook(lambda module, gi, go: seen.append(go))
    x.requires_grad_()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(diffusion_kernel, "_Diffusion", None)  # would fail if it were taken
        if why == "compiled_epilogue":  # the compiled formula, without compiling it here
            patch.setattr("lgdnet.models.lgd_block.compiled_epilogue",
                          lambda out, r, layout: (torch.relu(out + r.view(*r.shape, 1, 1, 1)),
                                                  torch.relu(out + r.view(*r.shape, 1, 1, 1)).mean((2, 3, 4))))
        if why == "disabled":
            with epilogue_kernel.disabled():
                y, g_out = block(x, g)
        else:
            y, g_out = block(x, g)
    (y.float().sum() + g_out.float().sum()).backward()
    assert x.grad is not None
    assert len(seen) == (1 if why in ("forward_hook", "backward_hook") else 0)


@pytest.mark.parametrize("name", ["lgd2d_tiny", "lgd3d_tiny"])
def test_a_network_trains_as_with_the_modules(name):
    torch.manual_seed(0)
    model = lgdnet.create_model(name, num_classes=5).double()
    for param in model.parameters():
        if param.dim() == 2:
            param.data.normal_(0, 0.05)
    lgdnet.models.to_memory_format(model, "channels_last")
    t, h, w = model.default_input_size
    clips = torch.randn(2, model.in_channels, t, h, w, dtype=torch.float64)
    labels = torch.tensor([1, 3])
    blocks = [m for m in model.modules() if isinstance(m, LGDBlock) and m.diffusion == "lgd"]
    assert blocks

    def gradients(fused: bool) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        state = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm's running stats
        with pytest.MonkeyPatch.context() as patch:
            taken = [0]
            original = diffusion_kernel.diffuse

            def counted(*args):
                taken[0] += 1
                return original(*args)

            patch.setattr(diffusion_kernel, "diffuse", counted)
            if not fused:
                patch.setattr(diffusion_kernel, "applies_in_training", lambda *args: False)
            torch.nn.functional.cross_entropy(model(clips), labels).backward()
        model.load_state_dict(state)
        assert taken[0] == (len(blocks) if fused else 0)
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fused, modules = gradients(True), gradients(False)
    assert fused.keys() == modules.keys()
    for key in fused:
        torch.testing.assert_close(fused[key], modules[key], rtol=1e-9, atol=1e-12, msg=key)
