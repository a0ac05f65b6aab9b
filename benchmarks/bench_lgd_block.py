"""Block-level cost of diffusion (part of issue item 2).

One LGD block (Eq. 2-3) around a P3D-A bottleneck, forward + backward at batch 2 with the
feature-map sizes of LGD-3D ResNet-50 (Table 1), against the same residual unit without
diffusion, in both memory layouts. The arms are interleaved round-robin; each arm's time is
reported relative to the plain unit in the same layout and round.

Arms (each also as ``*_cl``: ``channels_last_3d`` weights and activations, the library's
default on the CPU):

* ``none``: ``ReLU(F(x))``, the P3D baseline block.
* ``lgd``: the library's :class:`~lgdnet.models.lgd_block.LGDBlock` with its fused epilogue
  (``epilogue="fused"``: Eq. 2 and the pooling of Eq. 3 as one autograd node), which runs
  the one-pass CPU kernel of :mod:`lgdnet.models.epilogue_kernel`.
* ``lgd_eager``: the same autograd node with the kernel switched off (its eager ATen passes).
* ``lgd_plain``: the same block with ``epilogue="plain"``, autograd of the formula as written.
* ``lgd_compiled``: ``torch.compile`` (inductor) of the plain block: the compiler sees the
  plain formula and may fuse the epilogue itself. Compile time is reported, not timed.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BenchOptions,
    count_traffic,
    fmt_ratio,
    fmt_seconds,
    summarize,
    time_round_robin,
)

from lgdnet.models import epilogue_kernel  # noqa: E402
from lgdnet.models.lgd_block import LGDBlock  # noqa: E402
from lgdnet.models.units import EXPANSION, P3DBottleneck  # noqa: E402

MIB = 2**20
BATCH = 2  # res2 forward + backward at batch 2 is ~130 GFLOPs, about a second per arm
# (name, C_in, width, T, H): the second block of res2 and of res4 in LGD-3D R50, 16x112x112.
BLOCKS = (("res2", 256, 64, 8, 56), ("res4", 1024, 256, 4, 14))
QUICK_BLOCKS = (("res2_small", 64, 16, 4, 28),)


def _fwd_bwd(block: torch.nn.Module, c_in: int, t: int, h: int, channels_last: bool,
             compile_block: bool = False) -> Any:
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
    forward = torch.compile(block) if compile_block else block

    def run() -> None:
        block.zero_grad(set_to_none=True)
        x.grad = g.grad = None
        y, g_out = forward(x, g)
        outputs, grads = [y], [grad_y]
        if g_out is not None and g_out is not g:
            outputs.append(g_out)
            grads.append(grad_g)
        torch.autograd.backward(outputs, grads)

    return run


def _without_kernel(fn: Any) -> Any:
    def run() -> None:
        with epilogue_kernel.disabled():
            fn()

    return run


def measure_block(name: str, c_in: int, width: int, t: int, h: int, opts: BenchOptions) -> dict[str, Any]:
    torch.manual_seed(0)
    c_out = width * EXPANSION
    plain = LGDBlock(P3DBottleneck(c_in, width), c_in, c_out, "none")
    lgd = LGDBlock(P3DBottleneck(c_in, width), c_in, c_out, "lgd")
    lgd_plain = copy.deepcopy(lgd)
    lgd_plain.epilogue = "plain"
    fns: dict[str, Any] = {}
    compile_seconds: dict[str, float] = {}
    for suffix, channels_last in (("", False), ("_cl", True)):
        fns["none" + suffix] = _fwd_bwd(copy.deepcopy(plain), c_in, t, h, channels_last)
        fns["lgd" + suffix] = _fwd_bwd(copy.deepcopy(lgd), c_in, t, h, channels_last)
        fns["lgd_eager" + suffix] = _without_kernel(
            _fwd_bwd(copy.deepcopy(lgd), c_in, t, h, channels_last))
        fns["lgd_plain" + suffix] = _fwd_bwd(copy.deepcopy(lgd_plain), c_in, t, h, channels_last)
        if opts.compile:
            torch._dynamo.reset()
            compiled = _fwd_bwd(copy.deepcopy(lgd_plain), c_in, t, h, channels_last,
                                compile_block=True)
            started = time.perf_counter()
            compiled()  # compiles forward and backward
            compile_seconds["lgd_compiled" + suffix] = time.perf_counter() - started
            fns["lgd_compiled" + suffix] = compiled
    traffic = {}
    for arm, fn in fns.items():
        if arm.startswith("lgd_compiled"):
            continue  # generated kernels are not ATen ops: their traffic is not counted
        table = count_traffic(fn)
        traffic[arm] = {
            "moved_mib": sum(v["read"] + v["written"] for v in table.values()) / MIB,
            "allocated_mib": sum(v["allocated"] for v in table.values()) / MIB,
            "by_op": table,
        }
    rounds = max(3, min(opts.pairs, 7))
    timing = time_round_robin(fns, "none", opts.device, opts.warmup, rounds)
    for arm in timing:
        # ratio to the plain block in the same layout and round
        plain_arm = "none_cl" if arm.endswith("_cl") else "none"
        ratios = [a / b for a, b in zip(timing[arm]["seconds"]["times"],
                                        timing[plain_arm]["seconds"]["times"])]
        timing[arm]["ratio_to_same_layout"] = {**summarize(ratios), "ratios": ratios}
    timing["none_cl"]["ratio_to_contiguous"] = timing["none_cl"]["ratio_to_reference"]
    map_mib = BATCH * c_out * t * h * h * 4 / MIB
    return {"block": name, "c_in": c_in, "c_out": c_out, "map": [t, h, h], "batch": BATCH,
            "map_mib": map_mib, "arms": timing, "traffic": traffic,
            "compile_seconds": compile_seconds}


def run(opts: BenchOptions) -> dict[str, Any]:
    if opts.device.type != "cpu":
        return {"skipped": "the block level runs on the CPU only"}
    blocks = QUICK_BLOCKS if opts.quick else BLOCKS
    return {"rows": [measure_block(*spec, opts) for spec in blocks]}


def to_markdown(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"Block level: skipped ({result['skipped']})."
    lines = [
        f"Block level, forward + backward of one block (batch {BATCH}), arms interleaved round-robin; "
        "ratio = arm time / time of the plain block (`none`, `none_cl`) in the same layout and "
        "round; `*_cl` use `channels_last_3d`, and the last column compares the plain blocks' "
        "layouts.",
        "",
        "Counted traffic: bytes every ATen op reads and writes (each tensor argument once; "
        "`harness.count_traffic`), deterministic, in passes over the block's output map; "
        "allocated: bytes of fresh results. The benchmark's own gradient copy (2 passes) is "
        "included in every arm.",
        "",
        "| block (C_in -> C_out, T x H x W; map MiB) | arm | median time | ratio to plain block | "
        "counted traffic, map passes (extra) | allocated, maps (extra) | channels-last / contiguous |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        label = (f"{row['block']} ({row['c_in']} -> {row['c_out']}, "
                 f"{'x'.join(map(str, row['map']))}; {row['map_mib']:.0f})")
        base = row["traffic"]["none"]
        for arm, v in row["arms"].items():
            tr = row["traffic"].get(arm)
            if tr is None:  # compiled: inductor's kernels are not counted
                counted = "not counted | not counted"
            else:
                moved = tr["moved_mib"] / row["map_mib"]
                alloc = tr["allocated_mib"] / row["map_mib"]
                counted = (f"{moved:.1f} ({moved - base['moved_mib'] / row['map_mib']:+.1f}) | "
                           f"{alloc:.1f} ({alloc - base['allocated_mib'] / row['map_mib']:+.1f})")
            layouts = v.get("ratio_to_contiguous")
            lines.append(
                f"| {label} | `{arm}` | {fmt_seconds(v['seconds']['median'])} | "
                f"{fmt_ratio(v.get('ratio_to_same_layout', v['ratio_to_reference']))} | "
                f"{counted} | " + (f"{fmt_ratio(layouts)} |" if layouts else " |"))
        if row.get("compile_seconds"):
            compiled = ", ".join(f"`{k}` {s:.0f} s" for k, s in row["compile_seconds"].items())
            lines.append(f"| {label} | compile time (first call, forward + backward) | "
                         f"{compiled} | | | | |")
    return "\n".join(lines)
