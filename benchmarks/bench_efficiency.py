"""Hardware efficiency (issue item 3): achieved model FLOP/s over large-matmul FLOP/s.

For ``lgd3d_r50`` (``lgd3d_tiny`` with ``--quick``), inference and a training step are timed
interleaved with a large square ``torch.mm`` of the same dtype, in one process. Each pair gives
``(model FLOPs / model time) / (matmul FLOPs / matmul time)``; we report the median over pairs.
Model FLOPs follow the FlopCounterMode convention (2 per multiply-add, convolutions and matrix
products only), so element-wise work counts as overhead. Target on CPU: at least 70%.
On CUDA the same figures are also reported in bf16 (autocast for the model, a bf16 matmul).

Run alone: ``python benchmarks/bench_efficiency.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BenchOptions,
    count_flops,
    fmt_seconds,
    make_matmul,
    summarize,
    time_interleaved,
)
from workloads import Workload, build_model, inference_fn, make_batch, train_step_fn  # noqa: E402

TARGET = 0.70


def efficiency(name: str, mode: str, batch: int, dtype: str, opts: BenchOptions,
               matmul_size: int, pairs: int) -> dict[str, Any]:
    device = opts.device
    work = Workload(model=name, stage=1, batch=batch, dtype=dtype)
    model = build_model(work, device)
    clips, labels = make_batch(model, work, device)
    if mode == "train":
        step = train_step_fn(model, clips, labels, work, device)
    else:
        step = inference_fn(model, clips, work, device)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model_flops = count_flops(step)
    model.load_state_dict(state)
    mm, mm_flops = make_matmul(device, getattr(torch, dtype), matmul_size)
    timing = time_interleaved(mm, step, device, opts.warmup, pairs)
    per_pair = [
        (model_flops / t_model) / (mm_flops / t_mm)
        for t_mm, t_model in zip(timing["a"]["times"], timing["b"]["times"])
    ]
    return {
        "model": name, "mode": mode, "batch": batch, "dtype": dtype,
        "model_flops": model_flops, "matmul_size": matmul_size,
        "model_seconds": timing["b"],
        "matmul_seconds": timing["a"],
        "model_flops_per_second": model_flops / timing["b"]["median"],
        "matmul_flops_per_second": mm_flops / timing["a"]["median"],
        "efficiency": {**summarize(per_pair), "values": per_pair},
        "median_efficiency": statistics.median(per_pair),
    }


def run(opts: BenchOptions) -> dict[str, Any]:
    name = "lgd3d_tiny" if opts.quick else "lgd3d_r50"
    size = 1024 if opts.quick else 4096
    pairs = max(3, min(opts.pairs, 5)) if opts.device.type == "cpu" else max(opts.pairs, 10)
    dtypes = ["float32"] + (["bfloat16"] if opts.device.type == "cuda" else [])
    batches = {"inference": 8, "train": 4}  # train batch as in the diffusion comparison
    rows = []
    for dtype in dtypes:
        for mode, batch in batches.items():
            print(f"[efficiency] {name} {mode} {dtype} batch {batch}", flush=True)
            rows.append(efficiency(name, mode, batch, dtype, opts, size, pairs))
    return {"target": TARGET, "rows": rows}


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        "Achieved model FLOP/s / FLOP/s of a square `torch.mm` of the same dtype, interleaved "
        f"pairs in one process (median over pairs). Target on CPU: at least {result['target']:.0%}.",
        "",
        "| model | step | batch | dtype | model GFLOPs per step | model time | model GFLOP/s | "
        "matmul (size) GFLOP/s | efficiency median [min, max] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        e = r["efficiency"]
        lines.append(
            f"| `{r['model']}` | {r['mode']} | {r['batch']} | {r['dtype']} | "
            f"{r['model_flops'] / 1e9:.1f} | {fmt_seconds(r['model_seconds']['median'])} | "
            f"{r['model_flops_per_second'] / 1e9:.1f} | {r['matmul_size']}: "
            f"{r['matmul_flops_per_second'] / 1e9:.1f} | "
            f"{e['median']:.0%} [{e['min']:.0%}, {e['max']:.0%}] |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    from run_all import main_for_section

    raise SystemExit(main_for_section("efficiency"))
