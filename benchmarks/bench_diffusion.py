"""The cost of diffusion (issue item 2): LGD / baseline time ratios and where the overhead goes.

* Whole networks: ``lgd3d_r50`` vs ``p3d_r50`` and ``lgd2d_r50`` vs ``tsn_r50`` at batch 4 and
  the paper's inputs, training step and inference, measured as interleaved pairs (median of
  per-pair ratios), in the library's default memory layout (``run.memory_format="auto"``);
  the 3D pair also in the other layout. Target: at most 1.03 for the 3D training step. On
  CUDA the 3D pair also runs replayed as CUDA graphs and at batch 16.
* A profile (``torch.profiler``) of one training step of each network of the 3D pair: per-op
  self CPU time of the LGD network minus that of the baseline, i.e. where the extra time goes.
* Block level (``bench_lgd_block``): one LGD block against the same residual unit without
  diffusion, in both layouts, with the memory traffic of each.

Run alone: ``python benchmarks/bench_diffusion.py [--quick] [--pairs 12]``.
"""

from __future__ import annotations

import random
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_lgd_block  # noqa: E402
from harness import BenchOptions, fmt_ratio, fmt_seconds, time_once, time_round_robin  # noqa: E402
from workloads import (  # noqa: E402
    Workload,
    build_model,
    cuda_graphed,
    inference_fn,
    layout,
    make_batch,
    train_step_fn,
)

from lgdnet.models import epilogue_kernel  # noqa: E402

BATCH = 4
# On CUDA the 3D comparison runs at a second, larger batch too: at batch 4 a ResNet-50 step is
# bound by the CPU issuing kernels, which the LGD blocks' extra small ops add to.
CUDA_BATCHES_3D = (4, 16)
TARGET_TRAIN_RATIO_3D = 1.03
TARGET_INFERENCE_RATIO = 1.02
CPU_BATCHES = (2, 4)  # CPU batches of the targets (on CUDA these are kernel-launch bound)


PROJECTIONS = ("global_to_local", "local_to_global", "global_to_global")


def _step(name: str, mode: str, device: torch.device, batch: int = BATCH, graph: bool = False,
          memory_format: str = "auto", frozen: bool = False) -> Any:
    work = Workload(model=name, stage=1, batch=batch, memory_format=memory_format)
    model = build_model(work, device)
    if frozen:  # the low-rank projections W^{x,g}, W^{g,x}, W^{g,g} of every block
        for param_name, param in model.named_parameters():
            if any(f".{p}." in param_name for p in PROJECTIONS):
                param.requires_grad_(False)
    clips, labels = make_batch(model, work, device)
    if mode == "train":
        step = train_step_fn(model, clips, labels, work, device)
    else:
        step = inference_fn(model, clips, work, device)
    return cuda_graphed(step, device) if graph else step


def _without_kernel(step: Any) -> Any:
    def run() -> None:
        with epilogue_kernel.disabled():
            step()

    return run


def compare(lgd: str, baseline: str, mode: str, pairs: int, opts: BenchOptions,
            batch: int = BATCH, graph: bool = False, memory_format: str = "auto",
            eager_arm: bool = False, frozen_arm: bool = False) -> dict[str, Any]:
    """Interleaved rounds (baseline, LGD[, a third arm]); ratio = LGD time / baseline time in
    the same round. ``eager_arm``: the same LGD network with the epilogue kernel switched off
    (CPU), so the kernel's gain is measured in the same rounds. ``frozen_arm`` (training): the
    same LGD network with the projections W frozen (``requires_grad=False``): the same forward
    and input gradients, no weight gradients and no SGD update of them, so its distance to the
    LGD arm is what training the projections' parameters costs (memory traffic, whatever the
    batch)."""
    options = dict(batch=batch, memory_format=memory_format)
    fns = {"baseline": _step(baseline, mode, opts.device, graph=graph, **options),
           "lgd": _step(lgd, mode, opts.device, graph=graph, **options)}
    if eager_arm and opts.device.type == "cpu":
        fns["lgd_eager_epilogue"] = _without_kernel(_step(lgd, mode, opts.device, **options))
    if frozen_arm and mode == "train":
        fns["lgd_frozen_projections"] = _step(lgd, mode, opts.device, frozen=True, **options)
    timing = time_round_robin(fns, "baseline", opts.device, opts.warmup, pairs)
    result = {"lgd": lgd, "baseline": baseline, "mode": mode, "batch": batch, "cuda_graph": graph,
              "layout": layout(Workload(model=lgd, batch=batch, memory_format=memory_format),
                               opts.device),
              "baseline_seconds": timing["baseline"]["seconds"],
              "lgd_seconds": timing["lgd"]["seconds"],
              "ratio": timing["lgd"]["ratio_to_reference"]}
    for arm, key in (("lgd_eager_epilogue", "eager_epilogue"), ("lgd_frozen_projections", "frozen_projections")):
        if arm in timing:
            result[f"{key}_seconds"] = timing[arm]["seconds"]
            result[f"{key}_ratio"] = timing[arm]["ratio_to_reference"]
    return result


def _self_times(fn: Any, device: torch.device, steps: int) -> dict[str, dict[str, float]]:
    """Self CPU time (s) and call count per op name over ``steps`` profiled calls of ``fn``."""
    time_once(fn, device)  # warm-up outside the profile
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            time_once(fn, device)
    table: dict[str, dict[str, float]] = {}
    for event in prof.key_averages():
        # Python-level autograd nodes (e.g. MeanBackward1) carry their own self time.
        table[event.key] = {"self_s": event.self_cpu_time_total / 1e6 / steps,
                            "calls": event.count / steps}
    return table


def profile_overhead(lgd: str, baseline: str, opts: BenchOptions, steps: int = 1) -> dict[str, Any]:
    """Per-op self-time difference LGD - baseline for one training step each."""
    base = _self_times(_step(baseline, "train", opts.device), opts.device, steps)
    ours = _self_times(_step(lgd, "train", opts.device), opts.device, steps)
    total_base = sum(v["self_s"] for v in base.values())
    total_lgd = sum(v["self_s"] for v in ours.values())
    rows = []
    for key in set(base) | set(ours):
        b = base.get(key, {"self_s": 0.0, "calls": 0.0})
        o = ours.get(key, {"self_s": 0.0, "calls": 0.0})
        rows.append({"op": key, "baseline_s": b["self_s"], "lgd_s": o["self_s"],
                     "diff_s": o["self_s"] - b["self_s"],
                     "baseline_calls": b["calls"], "lgd_calls": o["calls"]})
    # Ops called more often by the LGD network carry its extra work; ops called equally often
    # (convolutions, BatchNorm) do identical work in both, so their difference is noise.
    extra = sorted((r for r in rows if r["lgd_calls"] != r["baseline_calls"]),
                   key=lambda r: -r["diff_s"])
    shared = [r for r in rows if r["lgd_calls"] == r["baseline_calls"]]
    return {"lgd": lgd, "baseline": baseline, "batch": BATCH, "steps": steps,
            "total_baseline_s": total_base, "total_lgd_s": total_lgd,
            "extra_ops": extra, "extra_ops_diff_s": sum(r["diff_s"] for r in extra),
            "shared_ops_diff_s": sum(r["diff_s"] for r in shared),
            "shared_ops_largest": sorted(shared, key=lambda r: -abs(r["diff_s"]))[:5]}


def run(opts: BenchOptions) -> dict[str, Any]:
    pairs_3d = ("lgd3d_tiny", "p3d_tiny") if opts.quick else ("lgd3d_r50", "p3d_r50")
    pairs_2d = ("lgd2d_tiny", "tsn_tiny") if opts.quick else ("lgd2d_r50", "tsn_r50")
    comparisons = []
    cuda = opts.device.type == "cuda"

    def add(lgd: str, base: str, mode: str, pairs: int, **options: Any) -> None:
        label = " ".join(f"{k} {v}" for k, v in options.items())
        print(f"[diffusion] {lgd} / {base} {mode} {label}, {pairs} pairs", flush=True)
        try:
            comparisons.append(compare(lgd, base, mode, pairs, opts, **options))
        except Exception as error:  # report it, keep the other comparisons
            comparisons.append({"lgd": lgd, "baseline": base, "mode": mode,
                                "batch": options.get("batch", BATCH),
                                "cuda_graph": options.get("graph", False),
                                "error": f"{type(error).__name__}: {error}"})

    short = max(3, min(opts.pairs, 8))
    formats = ("channels_last", "contiguous")
    for mode in ("train", "inference"):
        # targets: training <= 1.03 and inference <= 1.02, both layouts, batches 2 and 4; the
        # 3D training step also with the eager epilogue as a third arm
        for memory_format in formats:
            for batch in CPU_BATCHES:
                if mode == "train":
                    add(*pairs_3d, mode, opts.pairs, batch=batch, memory_format=memory_format,
                        eager_arm=True)
                else:
                    add(*pairs_3d, mode, opts.pairs, batch=batch, memory_format=memory_format)
        if cuda:
            add(*pairs_3d, mode, opts.pairs, graph=True)
            add(*pairs_3d, mode, short, batch=CUDA_BATCHES_3D[1])
    # a 2D step is a third of a 3D one and its ratio noisier: twice the pairs; training with
    # the projections frozen as a third arm (what their parameters' traffic costs)
    for mode in ("train", "inference"):
        for memory_format in formats:
            for batch in CPU_BATCHES:
                add(*pairs_2d, mode, 2 * opts.pairs, batch=batch, memory_format=memory_format,
                    frozen_arm=mode == "train")
    print("[diffusion] profile", flush=True)
    prof = profile_overhead(*pairs_3d, opts)
    print("[diffusion] block level", flush=True)
    block = bench_lgd_block.run(opts)
    return {"target_train_ratio_3d": TARGET_TRAIN_RATIO_3D,
            "target_inference_ratio": TARGET_INFERENCE_RATIO, "comparisons": comparisons,
            "profile": prof, "block": block}


def pooled(result: dict[str, Any], resamples: int = 4000) -> list[dict[str, Any]]:
    """Per network pair and step, the per-pair ratios of every batch and layout pooled: their
    median with a 95% bootstrap interval (fixed seed, so the text is reproducible from the
    JSON). One cell's median of 8-10 pairs moves by a few hundredths on a shared machine; the
    pooled median over 32-40 pairs says whether the overhead is above a target."""
    families: dict[tuple[str, str, str], list[float]] = {}
    for c in result["comparisons"]:
        if "error" in c or c.get("cuda_graph"):
            continue
        key = (c["lgd"], c["baseline"], c["mode"])
        families.setdefault(key, []).extend(c["ratio"]["ratios"])
        for key, label in (("eager_epilogue", "eager epilogue"), ("frozen_projections", "projections frozen")):
            if f"{key}_ratio" in c:
                families.setdefault((c["lgd"], c["baseline"], f"{c['mode']}, {label}"),
                                    []).extend(c[f"{key}_ratio"]["ratios"])
    rng = random.Random(0)
    rows = []
    for (lgd, baseline, mode), ratios in families.items():
        medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios)))
                         for _ in range(resamples))
        rows.append({"lgd": lgd, "baseline": baseline, "mode": mode, "n": len(ratios),
                     "median": statistics.median(ratios),
                     "low": medians[int(0.025 * resamples)],
                     "high": medians[int(0.975 * resamples) - 1]})
    return rows


def _third_arm(c: dict[str, Any]) -> str:
    if "eager_epilogue_ratio" in c:
        return f"eager: {fmt_ratio(c['eager_epilogue_ratio'])}"
    if "frozen_projections_ratio" in c:
        return f"frozen: {fmt_ratio(c['frozen_projections_ratio'])}"
    return ""


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        "Paper inputs; ratio = LGD time / baseline time per interleaved round, "
        "`median [min, max] (IQR, n)`. Targets: training steps at most "
        f"{result['target_train_ratio_3d']}, inference at most "
        f"{result.get('target_inference_ratio', TARGET_INFERENCE_RATIO)}. The LGD networks run "
        "their default epilogue (the one-pass kernel on the CPU). The last column is a third arm "
        "in the same rounds: for the 3D training step the same LGD network with the kernel "
        "switched off (`epilogue_kernel.disabled()`, *eager*); for the 2D one the same LGD "
        "network with its projections W frozen (*frozen*: the same forward and input gradients, "
        "no weight gradients and no SGD update of the 7.2M projection weights), so the distance "
        "between the two LGD columns is what training those parameters costs.",
        "",
        "| LGD / baseline | step | batch | layout | baseline median | LGD median | ratio | "
        "ratio, third arm |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in result["comparisons"]:
        step = c["mode"] + (" (CUDA graph)" if c.get("cuda_graph") else "")
        if "error" in c:
            lines.append(f"| `{c['lgd']}` / `{c['baseline']}` | {step} | {c['batch']} | | "
                         f"failed: {c['error']} | | | |")
            continue
        lines.append(
            f"| `{c['lgd']}` / `{c['baseline']}` | {step} | {c.get('batch', BATCH)} | "
            f"{c.get('layout', 'contiguous')} | "
            f"{fmt_seconds(c['baseline_seconds']['median'])} | "
            f"{fmt_seconds(c['lgd_seconds']['median'])} | {fmt_ratio(c['ratio'])} | "
            f"{_third_arm(c)} |"
        )
    lines += ["", "Pooled over batches and layouts (`pooled`: every per-pair ratio of the rows "
              "above, median and 95% bootstrap interval):", "",
              "| LGD / baseline | step | pairs | pooled median | 95% interval | target |",
              "|---|---|---|---|---|---|"]
    for row in pooled(result):
        target = (result["target_train_ratio_3d"] if row["mode"].startswith("train")
                  else result.get("target_inference_ratio", TARGET_INFERENCE_RATIO))
        lines.append(f"| `{row['lgd']}` / `{row['baseline']}` | {row['mode']} | {row['n']} | "
                     f"{row['median']:.3f} | {row['low']:.3f}-{row['high']:.3f} | {target} |")
    p = result["profile"]
    lines += [
        "",
        f"Profile (`torch.profiler`, self CPU time per op) of {p['steps']} training step(s) at "
        f"batch {p['batch']} in the default layout, `{p['lgd']}` against `{p['baseline']}`: total "
        f"{p['total_lgd_s']:.2f} s vs {p['total_baseline_s']:.2f} s per step. Ops that the LGD "
        f"network calls more often (its extra work) add {p['extra_ops_diff_s'] * 1e3:+.0f} ms; "
        f"ops called equally often (same work: convolutions, BatchNorm, ...) differ by "
        f"{p['shared_ops_diff_s'] * 1e3:+.0f} ms in total (timing noise and cache effects). "
        "Per-op detail of the extra work:",
        "",
        "| op | baseline | LGD | LGD - baseline | calls baseline / LGD |",
        "|---|---|---|---|---|",
    ]
    for r in [r for r in p["extra_ops"] if abs(r["diff_s"]) >= 5e-4][:15]:
        lines.append(
            f"| `{r['op']}` | {r['baseline_s'] * 1e3:.1f} ms | {r['lgd_s'] * 1e3:.1f} ms | "
            f"{r['diff_s'] * 1e3:+.1f} ms | {r['baseline_calls']:.0f} / {r['lgd_calls']:.0f} |"
        )
    lines += [
        "",
        "What the extra ops are (forward and backward of Eq. 2-3 in every block): on the CPU "
        "a block's whole diffusion is one autograd node (`_Diffusion`) whose forward is one call "
        "of `lgdnet::diffuse_train_` (the three low-rank projections and the epilogue: the "
        "broadcast add of US(W^{x,g} g), the ReLU and the pool P(x_l) in one in-place pass, the "
        "pass the plain block spends on its ReLU) and whose backward is one call of "
        "`lgdnet::diffuse_backward` (the spread gradient of P added to dL/dx_l, the ReLU mask and "
        "the reduction over positions for W^{x,g} in one pass, the pass the plain block's ReLU "
        "backward makes, and the projections' gradients); the projections run the thin-product "
        "kernel for widths of 1024 and more and BLAS (`aten::mm`) below, where it is faster "
        "(`benchmarks/thin_products_results.md`); the SGD update of their weights is part of "
        "`aten::_fused_sgd_` (`benchmarks/sgd_results.md`). Without the kernel (eager ATen, the "
        "last column above) the block runs its modules, and three more passes over each block's "
        "output remain: the pool, the gradient add and the gradient's reduction.",
    ]
    lines += ["", bench_lgd_block.to_markdown(result["block"])]
    return "\n".join(lines)


if __name__ == "__main__":
    from run_all import main_for_section

    raise SystemExit(main_for_section("diffusion"))
