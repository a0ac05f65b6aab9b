"""The combination classifier (issue item 4): Tensor Sketch head cost and memory.

* Head training step alone (forward, ``stage_loss``, backward into x_L and g_L, SGD step on
  the head) of the stage-1 head (Eq. 6) and of the combination classifier (Eq. 4-5, 7) at
  d = 4096 / 8192 / 16384, interleaved round-robin, on features of ``lgd3d_r50`` at batch 4
  (x_L: 2048 x 4 x 7 x 7).
* Share of the full stage-2 training step taken by the head at the default d: interleaved
  pairs (full step, head step), median of per-pair ``head / full``. Target: at most 5%.
* Memory: full bilinear pooling computed analytically (C^2 per position; the pooled C^2
  feature; a classifier on two C^2 features) against the sketch, analytically (2d per
  position for the two count sketches, their spectra) and measured (peak RSS increase of the
  head step in a fresh process).

Run alone: ``python benchmarks/bench_sketch.py [--quick]``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BenchOptions,
    fmt_memory,
    fmt_ratio,
    fmt_seconds,
    measure_memory,
    summarize,
    time_interleaved,
    time_round_robin,
)
from workloads import (  # noqa: E402
    DEFAULT_SKETCH_DIM,
    NUM_CLASSES,
    Workload,
    build_model,
    feature_shapes,
    head_step_fn,
    make_batch,
    train_step_fn,
)

from lgdnet.models.heads import CombinationClassifier, GlobalLocalHead  # noqa: E402

SKETCH_DIMS = (4096, 8192, 16384)
BATCH = 4
TARGET_SHARE = 0.05
MIB = 2**20


def analytic_memory(channels: int, positions: int, batch: int, sketch_dim: int) -> dict[str, float]:
    """Bytes (float32) of full bilinear pooling vs the Tensor Sketch, for one batch, in MiB."""
    f = 4
    bins = sketch_dim // 2 + 1
    return {
        # Eq. (4) as written: an outer product x_L^i x_L^i^T per position.
        "bilinear_per_position_outer_products_mib": batch * positions * channels**2 * f / MIB,
        # Summed on the fly: one C x C matrix per clip for x_L and one for g_L.
        "bilinear_pooled_features_mib": batch * 2 * channels**2 * f / MIB,
        # A linear classifier on [vec(x x^T), vec(g g^T)]: 2 C^2 inputs per class.
        "bilinear_classifier_weights_mib": 2 * channels**2 * NUM_CLASSES * f / MIB,
        # Two count sketches (d reals) and two spectra (d/2+1 complex) per position, forward.
        "sketch_per_position_mib": batch * (positions + 1) * (2 * sketch_dim + 2 * bins * 2) * f / MIB,
        "sketch_classifier_weights_mib": 2 * sketch_dim * NUM_CLASSES * f / MIB,
    }


def run(opts: BenchOptions) -> dict[str, Any]:
    device = opts.device
    name = "lgd3d_tiny" if opts.quick else "lgd3d_r50"
    dims = (256, 512, 1024) if opts.quick else SKETCH_DIMS
    default_dim = dims[1] if opts.quick else DEFAULT_SKETCH_DIM
    work1 = Workload(model=name, stage=1, batch=BATCH)
    model = build_model(work1, device)
    local_shape, channels = feature_shapes(model, device)
    positions = math.prod(local_shape[1:])

    print(f"[sketch] heads of {name}", flush=True)
    heads: dict[str, Any] = {
        "stage1": GlobalLocalHead(channels, NUM_CLASSES).to(device)}
    for d in dims:
        heads[f"sketch_d{d}"] = CombinationClassifier(channels, NUM_CLASSES, sketch_dim=d).to(device)
    fns = {key: head_step_fn(head, local_shape, channels, work1, device) for key, head in heads.items()}
    heads_timing = time_round_robin(fns, "stage1", device, opts.warmup, max(5, opts.pairs))

    print(f"[sketch] share of the stage-2 step at d={default_dim}", flush=True)
    work2 = Workload(model=name, stage=2, batch=BATCH, sketch_dim=default_dim)
    model.to_stage2(sketch_dim=default_dim)
    model.to(device)
    clips, labels = make_batch(model, work2, device)
    full_step = train_step_fn(model, clips, labels, work2, device)
    head_step = head_step_fn(model.head, local_shape, channels, work2, device)
    pairs = max(3, min(opts.pairs, 5))
    share_timing = time_interleaved(full_step, head_step, device, opts.warmup, pairs)
    shares = share_timing["ratio_b_over_a"]["ratios"]
    del model, full_step

    memory = {}
    for d in dims:
        entry: dict[str, Any] = {"analytic": analytic_memory(channels, positions, BATCH, d)}
        if opts.memory:
            entry["measured_sketch_head_step"] = measure_memory(
                {"model": name, "stage": 2, "batch": BATCH, "sketch_dim": d, "mode": "head",
                 "device": str(device), "threads": torch.get_num_threads()})
        memory[f"d{d}"] = entry
    if opts.memory:
        memory["measured_stage1_head_step"] = measure_memory(
            {"model": name, "stage": 1, "batch": BATCH, "mode": "head",
             "device": str(device), "threads": torch.get_num_threads()})
    return {
        "model": name, "batch": BATCH, "channels": channels, "local_shape": list(local_shape),
        "positions": positions, "default_dim": default_dim, "target_share": TARGET_SHARE,
        "heads": heads_timing,
        "share": {"full_step_seconds": share_timing["a"], "head_step_seconds": share_timing["b"],
                  "share": {**summarize(shares), "values": shares}},
        "memory": memory,
    }


def to_markdown(result: dict[str, Any]) -> str:
    s = result["share"]
    c, p = result["channels"], result["positions"]
    lines = [
        f"Features of `{result['model']}` at batch {result['batch']}: x_L {result['local_shape']} "
        f"(C = {c}, {p} positions), g_L ({c},). Head step = forward + `stage_loss` + backward "
        "(into x_L, g_L) + SGD step on the head; arms interleaved round-robin, ratio to the "
        "stage-1 head in the same round.",
        "",
        "| head | median step | ratio to stage-1 head |",
        "|---|---|---|",
    ]
    for key, v in result["heads"].items():
        lines.append(f"| `{key}` | {fmt_seconds(v['seconds']['median'])} | "
                     f"{fmt_ratio(v['ratio_to_reference'])} |")
    sh = s["share"]
    lines += [
        "",
        f"Share of the full stage-2 training step at d = {result['default_dim']} (interleaved "
        f"pairs, median of head / full): **{sh['median']:.1%}** [{sh['min']:.1%}, {sh['max']:.1%}] "
        f"(full step {fmt_seconds(s['full_step_seconds']['median'])}, head step "
        f"{fmt_seconds(s['head_step_seconds']['median'])}); target at most "
        f"{result['target_share']:.0%}.",
        "",
        "Memory, MiB (float32, batch as above). Full bilinear pooling, analytic: C^2 per "
        "position for the outer products of Eq. (4), the pooled C x C features, and a classifier "
        "on them; the sketch: analytic activations (two count sketches and two spectra per "
        "position) and the measured peak-RSS increase of one head step in a fresh process.",
        "",
        "| d | bilinear outer products | bilinear pooled features | bilinear classifier weights | "
        "sketch activations (analytic) | sketch classifier weights | sketch head step (measured) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, entry in result["memory"].items():
        if not key.startswith("d"):
            continue
        a = entry["analytic"]
        lines.append(
            f"| {key[1:]} | {a['bilinear_per_position_outer_products_mib']:.0f} | "
            f"{a['bilinear_pooled_features_mib']:.0f} | {a['bilinear_classifier_weights_mib']:.0f} | "
            f"{a['sketch_per_position_mib']:.0f} | {a['sketch_classifier_weights_mib']:.0f} | "
            f"{fmt_memory(entry.get('measured_sketch_head_step'), peak=False)} |"
        )
    if "measured_stage1_head_step" in result["memory"]:
        lines += ["", "Stage-1 head step, measured peak-RSS increase: "
                  f"{fmt_memory(result['memory']['measured_stage1_head_step'], peak=False)} MiB."]
    return "\n".join(lines)


if __name__ == "__main__":
    from run_all import main_for_section

    raise SystemExit(main_for_section("sketch"))
