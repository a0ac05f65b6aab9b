"""Per-model costs (issue item 1): parameters, FLOPs per view, inference and training speed,
peak memory, for the paper's ResNet-50 models at their inputs and the tiny configurations.

Run alone: ``python benchmarks/bench_models.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BenchOptions,
    count_flops,
    fmt_count,
    fmt_memory,
    fmt_seconds,
    measure_memory,
    time_repeated,
)
from workloads import (  # noqa: E402
    PAPER_MODELS,
    TINY_MODELS,
    Workload,
    build_model,
    inference_fn,
    make_batch,
    num_parameters,
    train_step_fn,
)

INFERENCE_BATCHES = (1, 8)
TRAIN_BATCH = 4  # as in the diffusion comparison; batch 8 R50 steps would double the run


def _flops_per_view(model: torch.nn.Module, work: Workload, device: torch.device) -> dict[str, float]:
    """Forward FLOPs of one view, and training-step FLOPs (forward + backward) per clip."""
    one = Workload(**{**work.__dict__, "batch": 1})
    clips, _ = make_batch(model, one, device)
    model.eval()
    with torch.no_grad():
        forward = count_flops(lambda: model(clips))
    # Training FLOPs at batch 2 (BatchNorm in train mode), divided back to one clip.
    two = Workload(**{**work.__dict__, "batch": 2})
    clips2, labels2 = make_batch(model, two, device)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    step = train_step_fn(model, clips2, labels2, two, device)
    train = count_flops(step) / 2
    model.load_state_dict(state)  # undo the counted step's update
    return {"forward": forward, "train_step_per_clip": train}


def measure_model(name: str, opts: BenchOptions) -> dict[str, Any]:
    """All item-1 numbers for one model."""
    device = opts.device
    result: dict[str, Any] = {"model": name}
    work1 = Workload(model=name, stage=1, batch=1)
    model = build_model(work1, device)
    result["input_size"] = list(model.default_input_size)
    result["in_channels"] = model.in_channels
    result["parameters_stage1"] = num_parameters(model)
    result["flops_stage1"] = _flops_per_view(model, work1, device)

    result["inference"] = {}
    for batch in INFERENCE_BATCHES:
        work = Workload(model=name, stage=1, batch=batch)
        clips, _ = make_batch(model, work, device)
        timing = time_repeated(inference_fn(model, clips, work, device), device,
                               opts.warmup, opts.repeats)
        result["inference"][f"batch{batch}"] = {
            "seconds": timing, "clips_per_second": batch / timing["median"],
        }

    result["train"] = {}
    for stage in (1, 2):
        work = Workload(model=name, stage=stage, batch=TRAIN_BATCH)
        if stage == 2:
            model.to_stage2(sketch_dim=work.sketch_dim)
            model.to(device)
            result["parameters_stage2"] = num_parameters(model)
            result["flops_stage2"] = _flops_per_view(model, work, device)
        clips, labels = make_batch(model, work, device)
        timing = time_repeated(train_step_fn(model, clips, labels, work, device), device,
                               opts.warmup, opts.repeats)
        result["train"][f"stage{stage}"] = {
            "batch": TRAIN_BATCH, "seconds": timing,
            "clips_per_second": TRAIN_BATCH / timing["median"],
        }
    del model

    if opts.memory and not (opts.quick and name != TINY_MODELS[0]):
        memory: dict[str, Any] = {}
        for batch in INFERENCE_BATCHES:
            memory[f"inference_batch{batch}"] = measure_memory(
                {"model": name, "stage": 1, "batch": batch, "mode": "inference",
                 "device": str(device), "threads": torch.get_num_threads()})
        for stage in (1, 2):
            memory[f"train_stage{stage}_batch{TRAIN_BATCH}"] = measure_memory(
                {"model": name, "stage": stage, "batch": TRAIN_BATCH, "mode": "train",
                 "device": str(device), "threads": torch.get_num_threads()})
        result["memory"] = memory
    return result


def run(opts: BenchOptions) -> dict[str, Any]:
    names = TINY_MODELS if opts.quick else PAPER_MODELS + TINY_MODELS
    rows = []
    for name in names:
        print(f"[models] {name}", flush=True)
        rows.append(measure_model(name, opts))
    return {"train_batch": TRAIN_BATCH, "inference_batches": list(INFERENCE_BATCHES), "rows": rows}


def to_markdown(result: dict[str, Any]) -> str:
    b = result["train_batch"]
    lines = [
        "| model | input (C,T,H,W) | params stage 1 / 2 | GFLOPs per view (fwd) | "
        "train GFLOPs per clip | inference b1: latency, clips/s | inference b8: latency, clips/s | "
        f"train stage 1 b{b}: step, clips/s | train stage 2 b{b}: step, clips/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        inf = r["inference"]
        tr = r["train"]
        size = ",".join(str(v) for v in [r["in_channels"], *r["input_size"]])
        lines.append(
            f"| `{r['model']}` | {size} | {fmt_count(r['parameters_stage1'])} / "
            f"{fmt_count(r['parameters_stage2'])} | {r['flops_stage1']['forward'] / 1e9:.2f} | "
            f"{r['flops_stage1']['train_step_per_clip'] / 1e9:.2f} | "
            + " | ".join(
                f"{fmt_seconds(x['seconds']['median'])}, {x['clips_per_second']:.2f}"
                for x in (inf["batch1"], inf["batch8"], tr["stage1"], tr["stage2"])
            )
            + " |"
        )
    if any("memory" in r for r in result["rows"]):
        lines += [
            "",
            "Peak memory, MiB: process peak (increase during the measured step). "
            "On CPU: peak resident set size of a fresh process running one first step.",
            "",
            f"| model | inference b1 | inference b8 | train stage 1 b{b} | train stage 2 b{b} |",
            "|---|---|---|---|---|",
        ]
        for r in result["rows"]:
            m = r.get("memory", {})
            lines.append(
                f"| `{r['model']}` | {fmt_memory(m.get('inference_batch1'))} | "
                f"{fmt_memory(m.get('inference_batch8'))} | {fmt_memory(m.get(f'train_stage1_batch{b}'))} | "
                f"{fmt_memory(m.get(f'train_stage2_batch{b}'))} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    from run_all import main_for_section

    raise SystemExit(main_for_section("models"))
