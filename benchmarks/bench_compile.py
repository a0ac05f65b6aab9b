"""Eager against ``torch.compile``: the diffusion ratio and the speed of the compiled networks.

For the 3D pair (``lgd3d_r50`` / ``p3d_r50``) a training step (forward, Eq. 6 loss, backward,
SGD step) runs in eager mode and with the network wrapped in ``torch.compile`` (inductor:
C++ on the CPU, Triton on CUDA), as interleaved round-robin arms in one process. Reported:
each arm's median step, the LGD / baseline ratio within each mode, compiled / eager per
network, the compile time (first call, forward and backward) and clips/s.

* CPU: fp32, the library's default layout (channels-last), batch 2 (``--quick``: the tiny pair).
* CUDA: bf16 autocast, channels-last, batches 16 and 32, and a third mode, compiled with CUDA
  graphs (``mode="reduce-overhead"``); also peak memory and the fraction of the GPU's dense
  bf16 rate (``--peak-tflops``, 989 for an H200 SXM by NVIDIA's data sheet).

Run alone: ``python benchmarks/bench_compile.py [--quick] [--device cuda] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BenchOptions,
    count_flops,
    fmt_ratio,
    fmt_seconds,
    machine_description,
    summarize,
    synchronize,
    time_round_robin,
    utc_now,
    write_results,
)
from workloads import Workload, build_model, make_batch, train_step_fn  # noqa: E402

H200_DENSE_BF16_TFLOPS = 989.0


def _arms(pair: tuple[str, str], batch: int, device: torch.device, dtype: str,
          modes: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, float], dict[str, int]]:
    steps: dict[str, Any] = {}
    compile_seconds: dict[str, float] = {}
    flops: dict[str, int] = {}
    for name in pair:
        for mode in modes:
            work = Workload(model=name, stage=1, batch=batch, dtype=dtype)
            model = build_model(work, device)
            clips, labels = make_batch(model, work, device)
            if mode != "eager":
                torch._dynamo.reset()
                options = {"mode": "reduce-overhead"} if mode == "compiled_graphs" else {}
                model.train()  # compiled for training mode
                parts = torch.compile(model.forward_parts, **options)
                step = train_step_fn(_Compiled(model, parts), clips, labels, work, device)
                started = time.perf_counter()
                step()
                synchronize(device)
                compile_seconds[f"{name}/{mode}"] = time.perf_counter() - started
            else:
                step = train_step_fn(model, clips, labels, work, device)
                flops[name] = count_flops(step)
            steps[f"{name}/{mode}"] = step
    return steps, compile_seconds, flops


class _Compiled(torch.nn.Module):
    """The network with its ``forward_parts`` (what the training step calls: both terms of
    Eq. 6, as in the eager arm) replaced by the compiled one."""

    def __init__(self, model: torch.nn.Module, parts: Any) -> None:
        super().__init__()
        self.model = model
        self.parts = parts

    def forward_parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.parts(x)


def measure(pair: tuple[str, str], batch: int, opts: BenchOptions, rounds: int,
            peak_tflops: float) -> dict[str, Any]:
    device = opts.device
    cuda = device.type == "cuda"
    modes = ("eager", "compiled", "compiled_graphs") if cuda else ("eager", "compiled")
    dtype = "bfloat16" if cuda else "float32"
    steps, compile_seconds, flops = _arms(pair, batch, device, dtype, modes)
    reference = f"{pair[1]}/eager"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    timing = time_round_robin(steps, reference, device, opts.warmup, rounds)
    lgd, base = pair
    result: dict[str, Any] = {"pair": list(pair), "batch": batch, "dtype": dtype,
                              "arms": {}, "compile_seconds": compile_seconds, "flops": flops}
    for arm, entry in timing.items():
        name, mode = arm.split("/")
        seconds = entry["seconds"]["median"]
        row = {"seconds": entry["seconds"], "clips_per_s": batch / seconds}
        if cuda:
            row["fraction_of_dense_bf16"] = flops[name] / seconds / (peak_tflops * 1e12)
        result["arms"][arm] = row
    for mode in modes:  # the diffusion ratio within each mode, per round
        a, b = timing[f"{lgd}/{mode}"]["seconds"]["times"], timing[f"{base}/{mode}"]["seconds"]["times"]
        ratios = [x / y for x, y in zip(a, b)]
        result.setdefault("diffusion_ratio", {})[mode] = {**summarize(ratios), "ratios": ratios}
    for name in pair:
        for mode in modes[1:]:
            a = timing[f"{name}/{mode}"]["seconds"]["times"]
            b = timing[f"{name}/eager"]["seconds"]["times"]
            ratios = [x / y for x, y in zip(a, b)]
            result.setdefault("compiled_over_eager", {})[f"{name}/{mode}"] = summarize(ratios)
    if cuda:
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def run(opts: BenchOptions, rounds: int = 5, peak_tflops: float = H200_DENSE_BF16_TFLOPS) -> dict[str, Any]:
    pair = ("lgd3d_tiny", "p3d_tiny") if opts.quick else ("lgd3d_r50", "p3d_r50")
    batches = (16, 32) if opts.device.type == "cuda" else (2,)
    if opts.quick:
        batches = batches[:1]
    return {"rows": [measure(pair, b, opts, rounds, peak_tflops) for b in batches]}


def to_markdown(result: dict[str, Any]) -> str:
    lines = ["Eager vs `torch.compile` (training step; arms interleaved round-robin).", "",
             "| batch, dtype | arm | median step | clips/s | compile (first call) | share of dense bf16 |",
             "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        for arm, v in row["arms"].items():
            compiled = row["compile_seconds"].get(arm)
            share = v.get("fraction_of_dense_bf16")
            lines.append(f"| {row['batch']}, {row['dtype']} | `{arm}` | "
                         f"{fmt_seconds(v['seconds']['median'])} | {v['clips_per_s']:.1f} | "
                         f"{f'{compiled:.0f} s' if compiled else '-'} | "
                         f"{f'{100 * share:.1f}%' if share else '-'} |")
    lines += ["", "| batch | mode | LGD / baseline (per round) |", "|---|---|---|"]
    for row in result["rows"]:
        for mode, summary in row["diffusion_ratio"].items():
            lines.append(f"| {row['batch']} | {mode} | {fmt_ratio(summary)} |")
    lines += ["", "| batch | network/mode | compiled / eager |", "|---|---|---|"]
    for row in result["rows"]:
        for arm, summary in row["compiled_over_eager"].items():
            lines.append(f"| {row['batch']} | `{arm}` | {fmt_ratio(summary)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=H200_DENSE_BF16_TFLOPS)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    device = torch.device(args.device)
    opts = BenchOptions(device=device, quick=args.quick, repeats=1, pairs=args.rounds, warmup=1)
    result = run(opts, args.rounds, args.peak_tflops)
    command = "python benchmarks/bench_compile.py " + " ".join(sys.argv[1:])
    report = {"command": command, "date": utc_now(), "machine": machine_description(device),
              "torch": torch.__version__, **result}
    stem = f"compile_results_{device.type}" + ("_quick" if args.quick else "")
    text = (f"# torch.compile\n\nCommand: `{command}` ({report['date']}), torch "
            f"{torch.__version__}, {report['machine'].get('cpu_model', '?')}.\n\n"
            + to_markdown(result) + "\n")
    print(text)
    print(write_results(args.out_dir, stem, report, text))


if __name__ == "__main__":
    main()
