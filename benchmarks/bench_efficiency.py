"""Hardware efficiency (issue item 3): achieved model FLOP/s over large-matmul FLOP/s.

For ``lgd3d_r50`` (``lgd3d_tiny`` with ``--quick``), inference and a training step are timed
interleaved with a large square ``torch.mm`` of the same dtype, in one process. Each pair gives
``(model FLOPs / model time) / (matmul FLOPs / matmul time)``; we report the median over pairs.
Model FLOPs follow the FlopCounterMode convention (2 per multiply-add, convolutions and matrix
products only), so element-wise work counts as overhead. Target on CPU: at least 70%.
On CUDA the same figures are also reported in bf16 (autocast for the model, a bf16 matmul).

Each row names its activations' layout: the library's default (``run.memory_format="auto"``:
channels-last on the CPU) and the other one. On CUDA the rows are fp32 with TF32 switched off
(for the model and the matmul alike, so that both are true fp32) and bf16 autocast, each
contiguous and channels-last, the last also replayed as a CUDA graph (no CPU cost of issuing
kernels), each at the CPU batches and at larger ones that fill the GPU better; matmul of size
8192.

Run alone: ``python benchmarks/bench_efficiency.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads  # noqa: E402
from harness import (  # noqa: E402
    BenchOptions,
    count_flops,
    fmt_seconds,
    make_matmul,
    summarize,
    time_round_robin,
)

TARGET = 0.70

# Op categories of the CPU time breakdown, by ATen op name (self time of each op).
MATRIX_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"}


def _category(op: str) -> str:
    if "conv" in op or op in MATRIX_OPS:
        return "flop_ops"
    return "batch_norm" if "batch_norm" in op else "other"


def make_gemm_conv(size: int) -> Any:
    """A ``size``-square fp32 matrix product written as a 1x1 convolution (oneDNN's GEMM):
    ``(1, size, 64, 64*k)`` input, ``(size, size, 1, 1)`` weight, ``size = 4096 * k`` positions
    when ``size`` is a multiple of 64; same FLOPs as :func:`harness.make_matmul`."""
    positions = size
    width = max(1, positions // 64)
    x = torch.randn(1, size, 64, width)
    w = torch.randn(size, size, 1, 1)

    def run() -> None:
        torch.nn.functional.conv2d(x, w)

    return run


def op_breakdown(step: Any) -> dict[str, float]:
    """Seconds of one profiled call of ``step`` (CPU self time) spent in the ops that do the
    counted FLOPs (convolutions, matrix products), in BatchNorm, and in everything else
    (element-wise ops, pooling, the optimiser's updates, copies)."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    totals = {"flop_ops": 0.0, "batch_norm": 0.0, "other": 0.0}
    for event in prof.key_averages():
        if event.key.startswith("aten::"):  # Python-level autograd nodes hold no work
            totals[_category(event.key)] += event.self_cpu_time_total / 1e6
    return totals


def efficiency(name: str, mode: str, batch: int, dtype: str, opts: BenchOptions,
               matmul_size: int, pairs: int, memory_format: str = "auto",
               graph: bool = False, fold_bn: bool = False) -> dict[str, Any]:
    device = opts.device
    work = workloads.Workload(model=name, stage=1, batch=batch, dtype=dtype,
                              memory_format=memory_format, fold_bn=fold_bn)
    model = workloads.build_model(work, device)
    clips, labels = workloads.make_batch(model, work, device)
    if mode == "train":
        step = workloads.train_step_fn(model, clips, labels, work, device)
    else:
        step = workloads.inference_fn(model, clips, work, device)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model_flops = count_flops(step)
    model.load_state_dict(state)
    if graph:
        step = workloads.cuda_graphed(step, device)
    mm, mm_flops = make_matmul(device, getattr(torch, dtype), matmul_size)
    fns = {"matmul": mm, "model": step}
    if device.type == "cpu":
        # The same product as a 1x1 convolution, which oneDNN runs: on some CPUs (AMD's) the
        # BLAS behind torch.mm is far from the peak that the convolutions reach.
        fns["gemm_conv"] = make_gemm_conv(matmul_size)
    timing = time_round_robin(fns, "model", device, opts.warmup, pairs)
    per_pair = [model_flops / mm_flops * r for r in timing["matmul"]["ratio_to_reference"]["ratios"]]
    gemm_conv = None
    if "gemm_conv" in timing:
        values = [model_flops / mm_flops * r
                  for r in timing["gemm_conv"]["ratio_to_reference"]["ratios"]]
        gemm_conv = {"seconds": timing["gemm_conv"]["seconds"],
                     "flops_per_second": mm_flops / timing["gemm_conv"]["seconds"]["median"],
                     "efficiency": {**summarize(values), "values": values}}
    timing = {"a": timing["matmul"]["seconds"], "b": timing["model"]["seconds"]}
    breakdown = op_breakdown(step) if device.type == "cpu" else None
    if breakdown:
        total = sum(breakdown.values())
        breakdown["flop_ops_share"] = breakdown["flop_ops"] / total
        # the rate of the convolutions and matrix products alone, over the faster reference
        best_rate = max(mm_flops / timing["a"]["median"],
                        gemm_conv["flops_per_second"] if gemm_conv else 0.0)
        breakdown["flop_ops_efficiency"] = (model_flops / breakdown["flop_ops"]) / best_rate
    return {
        "breakdown": breakdown,
        "gemm_conv": gemm_conv,
        "model": name, "mode": mode, "batch": batch, "dtype": dtype,
        "layout": workloads.layout(work, device)
        + (", CUDA graph" if graph else "") + (", BatchNorm folded" if fold_bn else ""),
        "model_flops": model_flops, "matmul_size": matmul_size,
        "model_seconds": timing["b"],
        "matmul_seconds": timing["a"],
        "model_flops_per_second": model_flops / timing["b"]["median"],
        "matmul_flops_per_second": mm_flops / timing["a"]["median"],
        "efficiency": {**summarize(per_pair), "values": per_pair},
        "median_efficiency": statistics.median(per_pair),
    }


# (dtype, memory format, CUDA graph) per device; batches per mode: the train batch is the
# diffusion comparison's, and on CUDA a second, larger batch of each fills the GPU better.
CONFIGS = {"cpu": [("float32", "channels_last", False), ("float32", "contiguous", False)],
           "cuda": [("float32", "contiguous", False), ("float32", "channels_last", False),
                    ("bfloat16", "contiguous", False), ("bfloat16", "channels_last", False),
                    ("bfloat16", "channels_last", True)]}
BATCHES = {"cpu": {"inference": (8,), "train": (4,)},
           "cuda": {"inference": (8, 32), "train": (4, 16)}}


@contextlib.contextmanager
def true_fp32(device: torch.device, dtype: str) -> Iterator[None]:
    """No TF32 on CUDA while an fp32 row is measured (model and matmul alike)."""
    if device.type != "cuda" or dtype != "float32":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def run(opts: BenchOptions) -> dict[str, Any]:
    name = "lgd3d_tiny" if opts.quick else "lgd3d_r50"
    kind = "cuda" if opts.device.type == "cuda" else "cpu"
    size = 1024 if opts.quick else (8192 if kind == "cuda" else 4096)
    pairs = max(3, min(opts.pairs, 5)) if kind == "cpu" else max(opts.pairs, 10)
    rows = []
    for dtype, memory_format, graph in CONFIGS[kind]:
        for mode, batches in BATCHES[kind].items():
            for batch in batches[:1] if opts.quick else batches:
                print(f"[efficiency] {name} {mode} {dtype} batch {batch} {memory_format}"
                      + (" CUDA graph" if graph else ""), flush=True)
                with true_fp32(opts.device, dtype):
                    rows.append(efficiency(name, mode, batch, dtype, opts, size, pairs,
                                           memory_format, graph))
                    if mode == "inference" and kind == "cpu":
                        # as lgdnet predict / eval / features run it
                        print(f"[efficiency] {name} {mode} {dtype} batch {batch} "
                              f"{memory_format} BatchNorm folded", flush=True)
                        rows.append(efficiency(name, mode, batch, dtype, opts, size, pairs,
                                               memory_format, fold_bn=True))
    return {"target": TARGET, "device": kind, "rows": rows}


def to_markdown(result: dict[str, Any]) -> str:
    cpu = result.get("device", "cpu") == "cpu"
    lines = [
        "Achieved model FLOP/s / FLOP/s of a square `torch.mm` of the same dtype, interleaved "
        "in one process (median over rounds). On the CPU the same product also runs as a 1x1 "
        "convolution (oneDNN's GEMM, the convolutions' own library), which on some CPUs is far "
        "faster than the BLAS behind `torch.mm`; the efficiency against it is the stricter "
        f"figure. Target on CPU: at least {result['target']:.0%}.",
        "",
        "| model | step | batch | dtype | layout | model GFLOPs per step | model time | "
        "model GFLOP/s | matmul (size) GFLOP/s | efficiency vs `torch.mm` |"
        + (" 1x1-conv GEMM GFLOP/s | efficiency vs 1x1-conv GEMM |" if cpu else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if cpu else ""),
    ]
    for r in result["rows"]:
        e = r["efficiency"]
        line = (
            f"| `{r['model']}` | {r['mode']} | {r['batch']} | {r['dtype']} | "
            f"{r.get('layout', 'contiguous')} | "
            f"{r['model_flops'] / 1e9:.1f} | {fmt_seconds(r['model_seconds']['median'])} | "
            f"{r['model_flops_per_second'] / 1e9:.1f} | {r['matmul_size']}: "
            f"{r['matmul_flops_per_second'] / 1e9:.1f} | "
            f"{e['median']:.0%} [{e['min']:.0%}, {e['max']:.0%}] |"
        )
        g = r.get("gemm_conv")
        if cpu:
            line += (f" {g['flops_per_second'] / 1e9:.1f} | {g['efficiency']['median']:.0%} "
                     f"[{g['efficiency']['min']:.0%}, {g['efficiency']['max']:.0%}] |"
                     if g else " - | - |")
        lines.append(line)
    rows = [r for r in result["rows"] if r.get("breakdown")]
    if rows:
        lines += [
            "",
            "Where the time goes: `torch.profiler` self time of one step by op, in the ops that "
            "do the counted FLOPs (convolutions forward and backward, matrix products), in "
            "BatchNorm, and in the rest (element-wise ops, pooling, the SGD update, copies). "
            "Efficiency = (rate of the FLOP ops over the faster matrix product's) x (their "
            "share of the time): the second factor is the ceiling that no faster convolution "
            "can lift.",
            "",
            "| step | batch | layout | FLOP ops: share of time | FLOP ops: rate / best matmul rate "
            "| BatchNorm share | other share |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            b = r["breakdown"]
            total = b["flop_ops"] + b["batch_norm"] + b["other"]
            lines.append(
                f"| {r['mode']} | {r['batch']} | {r.get('layout', 'contiguous')} | "
                f"{b['flop_ops_share']:.0%} | {b['flop_ops_efficiency']:.0%} | "
                f"{b['batch_norm'] / total:.0%} | {b['other'] / total:.0%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    from run_all import main_for_section

    raise SystemExit(main_for_section("efficiency"))
