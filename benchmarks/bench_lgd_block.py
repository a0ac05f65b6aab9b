"""Block-level cost of diffusion and prototypes of cheaper LGD blocks (part of issue item 2).

One LGD block (Eq. 2-3) around a P3D-A bottleneck, forward + backward at batch 2 with the
feature-map sizes of LGD-3D ResNet-50 (Table 1), against the same residual unit without
diffusion. The arms are interleaved round-robin; each arm's time is reported relative to the
plain unit of the same round.

Arms:

* ``none``: ``ReLU(F(x))``, the P3D baseline block.
* ``lgd``: the library's :class:`~lgdnet.models.lgd_block.LGDBlock`.
* ``lgd_sumpool``: the library's block with P(x_l) computed as ``sum / M`` (see
  :class:`SumPoolLGDBlock`): a one-line change.
* ``lgd_fused``: a prototype whose epilogue ``x_l = ReLU(F + US(b)); P(x_l)`` is one autograd
  node (:class:`GlobalResidualReLUPool`) whose backward writes the ReLU gradient into the
  buffer that already holds ``dL/dx_l + US(dL/dP / M)``: one full-size allocation in backward
  instead of two.
* ``lgd_fused_inplace``: the same, adding into the incoming gradient buffer in place (no
  full-size allocation; only safe when the engine hands over a buffer nobody else reads).
* ``none_cl`` / ``lgd_cl``: both blocks with ``channels_last_3d`` activations and weights.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BenchOptions,
    count_traffic,
    fmt_ratio,
    fmt_seconds,
    time_round_robin,
)

from lgdnet.models.lgd_block import LGDBlock  # noqa: E402
from lgdnet.models.units import EXPANSION, P3DBottleneck  # noqa: E402

MIB = 2**20
BATCH = 2  # res2 forward + backward at batch 2 is ~130 GFLOPs, about a second per arm
# (name, C_in, width, T, H): the second block of res2 and of res4 in LGD-3D R50, 16x112x112.
BLOCKS = (("res2", 256, 64, 8, 56), ("res4", 1024, 256, 4, 14))
QUICK_BLOCKS = (("res2_small", 64, 16, 4, 28),)


class GlobalResidualReLUPool(torch.autograd.Function):
    """``y = ReLU(out + US(bias))`` (Eq. 2) and ``P(y)`` (Eq. 3) as one autograd node.

    ``out`` is the local unit's fresh output and is overwritten (no copy in forward). In
    backward, ``dL/dpre = (dL/dy + US(dL/dP) / M) * [y > 0]`` is formed in one buffer
    (``threshold_backward`` writes in place), and ``dL/dbias`` is its sum over positions.
    """

    inplace_grad = False

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = out.add_(bias[:, :, None, None, None]).relu_()
        pooled = y.mean((2, 3, 4))
        ctx.mark_dirty(out)
        ctx.save_for_backward(y)
        return y, pooled

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor | None, grad_pooled: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        (y,) = ctx.saved_tensors
        positions = y[0, 0].numel()
        if grad_y is None:
            grad = torch.zeros_like(y)
        elif GlobalResidualReLUPool.inplace_grad and grad_y.is_contiguous() and grad_y.stride()[-1] != 0:
            grad = grad_y
        else:
            grad = None
        spread = None if grad_pooled is None else (grad_pooled / positions)[:, :, None, None, None]
        if grad is None:
            grad = grad_y + spread if spread is not None else grad_y.clone()
        elif spread is not None:
            grad.add_(spread)
        torch.ops.aten.threshold_backward.grad_input(grad, y, 0, grad_input=grad)
        return grad, grad.sum((2, 3, 4))


class FusedEpilogueLGDBlock(LGDBlock):
    """LGD block (``diffusion="lgd"``) whose Eq. (2) epilogue and pool are one autograd node."""

    def forward(self, x: torch.Tensor, g: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.local_unit(x)
        if out._base is None:
            out, pooled = GlobalResidualReLUPool.apply(out, self.global_to_local(g))
        else:
            # autograd cannot let a Function with two outputs modify a view in place (LGD-2D's
            # units return a (N, C, T, H, W) view of frame-major maps): the one-line variant
            out += self.global_to_local(g)[:, :, None, None, None]
            out = F.relu(out, inplace=True)
            pooled = out.sum((2, 3, 4)) / out[0, 0].numel()
        g = F.relu(self.local_to_global(pooled) + self.global_to_global(g))  # Eq. (3)
        return out, g


class SumPoolLGDBlock(LGDBlock):
    """The library's LGD block with one change: P(x_l) as ``sum / M`` instead of ``mean``.

    ``mean``'s backward divides the expanded gradient, writing a full-size tensor; ``sum``'s
    backward is an expand (a view), and the division happens on the (N, C) vector.
    """

    def forward(self, x: torch.Tensor, g: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.local_unit(x)
        out += self.global_to_local(g)[:, :, None, None, None]  # Eq. (2)
        out = F.relu(out, inplace=True)
        pooled = out.sum((2, 3, 4)) / out[0, 0].numel()  # P(x_l)
        g = F.relu(self.local_to_global(pooled) + self.global_to_global(g))  # Eq. (3)
        return out, g


PROTOTYPES = {"lgd_sumpool": SumPoolLGDBlock, "lgd_fused": FusedEpilogueLGDBlock}


def use_prototype(model: torch.nn.Module, name: str) -> int:
    """Switch every ``diffusion="lgd"`` block of ``model`` to the prototype ``name`` (a key of
    :data:`PROTOTYPES`), in place, same parameters; returns how many blocks were switched."""
    count = 0
    for module in model.modules():
        if type(module) is LGDBlock and module.diffusion == "lgd":
            module.__class__ = PROTOTYPES[name]
            count += 1
    return count


def _fused_copy(block: LGDBlock, cls: type[LGDBlock] = FusedEpilogueLGDBlock) -> LGDBlock:
    fused = copy.deepcopy(block)
    fused.__class__ = cls
    return fused


def _fwd_bwd(block: torch.nn.Module, c_in: int, t: int, h: int, channels_last: bool,
             inplace_grad: bool = False) -> Any:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, c_in, t, h, h, generator=generator)
    if channels_last:
        block = block.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    x.requires_grad_(True)
    g = torch.randn(BATCH, c_in, generator=generator, requires_grad=True)
    block.train()
    with torch.no_grad():
        y, g_out = block(x, g)
    grad_y = torch.randn(y.shape, generator=generator).contiguous(
        memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
    grad_g = None if g_out is None else torch.randn(g_out.shape, generator=generator)

    def run() -> None:
        block.zero_grad(set_to_none=True)
        x.grad = g.grad = None
        GlobalResidualReLUPool.inplace_grad = inplace_grad
        y, g_out = block(x, g)
        outputs, grads = [y], [grad_y]
        if g_out is not None and g_out is not g:
            outputs.append(g_out)
            grads.append(grad_g)
        # The in-place arm overwrites its gradient buffer: give it a copy each call, and the
        # other arms the same copy, so all pay for it alike.
        grads[0] = grads[0].clone()
        torch.autograd.backward(outputs, grads)

    return run


def measure_block(name: str, c_in: int, width: int, t: int, h: int, opts: BenchOptions) -> dict[str, Any]:
    torch.manual_seed(0)
    c_out = width * EXPANSION
    plain = LGDBlock(P3DBottleneck(c_in, width), c_in, c_out, "none")
    lgd = LGDBlock(P3DBottleneck(c_in, width), c_in, c_out, "lgd")
    fns = {
        "none": _fwd_bwd(plain, c_in, t, h, False),
        "lgd": _fwd_bwd(lgd, c_in, t, h, False),
        "lgd_sumpool": _fwd_bwd(_fused_copy(lgd, SumPoolLGDBlock), c_in, t, h, False),
        "lgd_fused": _fwd_bwd(_fused_copy(lgd), c_in, t, h, False),
        "lgd_fused_inplace": _fwd_bwd(_fused_copy(lgd), c_in, t, h, False, inplace_grad=True),
        "none_cl": _fwd_bwd(copy.deepcopy(plain), c_in, t, h, True),
        "lgd_cl": _fwd_bwd(copy.deepcopy(lgd), c_in, t, h, True),
    }
    traffic = {}
    for arm, fn in fns.items():
        table = count_traffic(fn)
        traffic[arm] = {
            "moved_mib": sum(v["read"] + v["written"] for v in table.values()) / MIB,
            "allocated_mib": sum(v["allocated"] for v in table.values()) / MIB,
            "by_op": table,
        }
    rounds = max(3, min(opts.pairs, 7))
    timing = time_round_robin(fns, "none", opts.device, opts.warmup, rounds)
    map_mib = BATCH * c_out * t * h * h * 4 / MIB
    return {"block": name, "c_in": c_in, "c_out": c_out, "map": [t, h, h], "batch": BATCH,
            "map_mib": map_mib, "arms": timing, "traffic": traffic}


def run(opts: BenchOptions) -> dict[str, Any]:
    if opts.device.type != "cpu":
        return {"skipped": "block-level prototypes are CPU-only"}
    blocks = QUICK_BLOCKS if opts.quick else BLOCKS
    return {"rows": [measure_block(*spec, opts) for spec in blocks]}


def to_markdown(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"Block level: skipped ({result['skipped']})."
    lines = [
        f"Block level, forward + backward of one block (batch {BATCH}), arms interleaved round-robin; "
        "ratio = arm time / `none` time in the same round. `lgd_sumpool` and `lgd_fused*` are prototypes "
        "(see `benchmarks/bench_lgd_block.py`); `*_cl` use `channels_last_3d`.",
        "",
        "Counted traffic: bytes every ATen op reads and writes (each tensor argument once; "
        "`harness.count_traffic`), deterministic, in passes over the block's output map; "
        "allocated: bytes of fresh results. The benchmark's own gradient copy (2 passes) is "
        "included in every arm.",
        "",
        "| block (C_in -> C_out, T x H x W; map MiB) | arm | median time | ratio to `none` | "
        "counted traffic, map passes (extra) | allocated, maps (extra) |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        label = (f"{row['block']} ({row['c_in']} -> {row['c_out']}, "
                 f"{'x'.join(map(str, row['map']))}; {row['map_mib']:.0f})")
        base = row["traffic"]["none"]
        for arm, v in row["arms"].items():
            tr = row["traffic"][arm]
            moved = tr["moved_mib"] / row["map_mib"]
            alloc = tr["allocated_mib"] / row["map_mib"]
            lines.append(
                f"| {label} | `{arm}` | {fmt_seconds(v['seconds']['median'])} | "
                f"{fmt_ratio(v['ratio_to_reference'])} | {moved:.1f} "
                f"({moved - base['moved_mib'] / row['map_mib']:+.1f}) | {alloc:.1f} "
                f"({alloc - base['allocated_mib'] / row['map_mib']:+.1f}) |")
    return "\n".join(lines)
