"""The passes the LGD networks add, each against the pass it replaces, side by side.

* ``epilogue``: the epilogue kernel's forward (``lgdnet::add_relu_pool_``) against the plain
  block's in-place ReLU, and its backward (``lgdnet::add_relu_pool_backward``) against the
  ReLU's backward (``aten::threshold_backward``), on LGD-2D's block maps (frames, batch 2 and
  4 of 3 segments; and 8 frames of a 16-frame clip batch) in both layouts. Maps of 16 MiB and
  more take the backward's non-temporal stores (float32, AVX2).
* ``pool``: forward + backward of P(x_1), the average of LGD-2D's stem output that starts the
  global path, as ``x.mean((2, 3, 4))`` of the frames seen as clips and as
  :func:`lgdnet.models.layout.global_average`, in a graph where the map has a second consumer
  (so autograd adds the two gradients, as in the network).
* ``projections``: the ``lgd2d_r50`` / ``tsn_r50`` ratio at batch 2 (channels-last) with the
  low-rank projections through the thin-product kernel (the default for widths >= 1024) and
  through BLAS (the kernel's size threshold raised), three arms in the same rounds.

Run: ``python benchmarks/bench_epilogue_passes.py [--rounds 40]``; writes
``epilogue_passes_results.md`` and ``.json`` next to this file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BENCH_DIR,
    fmt_ratio,
    fmt_seconds,
    library_versions,
    machine_description,
    time_round_robin,
    utc_now,
    write_results,
)
from workloads import Workload, build_model, inference_fn, make_batch, train_step_fn  # noqa: E402

from lgdnet.models import epilogue_kernel, low_rank_kernel  # noqa: E402
from lgdnet.models.layout import global_average  # noqa: E402

CPU = torch.device("cpu")
# LGD-2D's block outputs (frames = batch x 3 segments; 16: a batch of two 8-frame clips)
MAPS = [(frames, c, h) for frames in (6, 12, 16)
        for c, h in ((256, 56), (512, 28), (1024, 14), (2048, 7))]


def _epilogue_arms(frames: int, c: int, h: int, fmt: torch.memory_format) -> dict[str, Callable]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(frames, c, h, h, generator=generator).contiguous(memory_format=fmt)
    grad = torch.randn(frames, c, h, h, generator=generator).contiguous(memory_format=fmt)
    y = x.relu()
    clips = 2 if frames % 2 == 0 else 1
    zeros = torch.zeros(clips, c)
    vec = torch.randn(clips, c, generator=generator)
    return {
        "relu_": lambda: x.relu_(),
        "kernel_forward": lambda: epilogue_kernel.add_relu_pool_(x, zeros, 1.0),
        "relu_backward": lambda: torch.ops.aten.threshold_backward(grad, y, 0),
        "kernel_backward": lambda: epilogue_kernel.add_relu_pool_backward(grad, y, vec),
    }


def epilogue(rounds: int) -> list[dict[str, Any]]:
    rows = []
    for fmt_name, fmt in (("channels_last", torch.channels_last),
                          ("contiguous", torch.contiguous_format)):
        for frames, c, h in MAPS:
            arms = _epilogue_arms(frames, c, h, fmt)
            forward = time_round_robin({k: arms[k] for k in ("relu_", "kernel_forward")},
                                       "relu_", CPU, 3, rounds)
            backward = time_round_robin({k: arms[k] for k in ("relu_backward", "kernel_backward")},
                                        "relu_backward", CPU, 3, rounds)
            rows.append({"shape": [frames, c, h, h], "layout": fmt_name,
                         "mib": frames * c * h * h * 4 / 2**20,
                         "relu_s": forward["relu_"]["seconds"]["median"],
                         "kernel_forward_s": forward["kernel_forward"]["seconds"]["median"],
                         "forward_ratio": forward["kernel_forward"]["ratio_to_reference"],
                         "relu_backward_s": backward["relu_backward"]["seconds"]["median"],
                         "kernel_backward_s": backward["kernel_backward"]["seconds"]["median"],
                         "backward_ratio": backward["kernel_backward"]["ratio_to_reference"]})
            print(f"[epilogue] {fmt_name} {rows[-1]['shape']}: backward "
                  f"{rows[-1]['backward_ratio']['median']:.3f}", flush=True)
    return rows


def pool(rounds: int, frames: int = 6) -> dict[str, Any]:
    """P(x_1) of LGD-2D at batch 2 (6 frames of 64 x 56 x 56, channels-last)."""
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(frames, 64, 56, 56, generator=generator)
    x0 = x0.contiguous(memory_format=torch.channels_last).relu()
    other = torch.randn(x0.shape, generator=generator).contiguous(memory_format=torch.channels_last)

    def step(average: Callable[[torch.Tensor], torch.Tensor] | None) -> Callable[[], None]:
        def run() -> None:
            x = x0.detach().requires_grad_()
            y = x * 1.0  # a node whose gradient autograd accumulates, as in the network
            clips = y.view(2, frames // 2, *y.shape[1:]).transpose(1, 2)
            loss = (y * other).sum()
            if average is not None:
                loss = loss + average(clips).sum()
            loss.backward()
        return run

    timing = time_round_robin({"no_pool": step(None),
                               "mean": step(lambda v: v.mean((2, 3, 4))),
                               "global_average": step(global_average)}, "no_pool", CPU, 3, rounds)
    base = timing["no_pool"]["seconds"]["times"]
    return {name: {"extra_s": sorted(t - b for t, b in zip(timing[name]["seconds"]["times"], base))
                   [len(base) // 2]}
            for name in ("mean", "global_average")}


def _blas(step: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        previous = low_rank_kernel.MIN_WEIGHT_ELEMENTS
        low_rank_kernel.MIN_WEIGHT_ELEMENTS = 1 << 62
        try:
            step()
        finally:
            low_rank_kernel.MIN_WEIGHT_ELEMENTS = previous
    return run


def projections(rounds: int) -> list[dict[str, Any]]:
    rows = []
    for mode in ("train", "inference"):
        fns = {}
        for arm, name in (("baseline", "tsn_r50"), ("kernel", "lgd2d_r50"), ("blas", "lgd2d_r50")):
            work = Workload(model=name, stage=1, batch=2, memory_format="channels_last")
            model = build_model(work, CPU)
            clips, labels = make_batch(model, work, CPU)
            step = (train_step_fn(model, clips, labels, work, CPU) if mode == "train"
                    else inference_fn(model, clips, work, CPU))
            fns[arm] = _blas(step) if arm == "blas" else step
        timing = time_round_robin(fns, "baseline", CPU, 1, rounds)
        rows.append({"mode": mode, "baseline_s": timing["baseline"]["seconds"]["median"],
                     "kernel": timing["kernel"]["ratio_to_reference"],
                     "blas": timing["blas"]["ratio_to_reference"]})
        print(f"[projections] {mode}: kernel {rows[-1]['kernel']['median']:.3f}, "
              f"blas {rows[-1]['blas']['median']:.3f}", flush=True)
    return rows


def to_markdown(report: dict[str, Any]) -> str:
    lines = ["# The passes LGD adds, against the passes they replace", "",
             f"Command: `{report['command']}`. Date: {report['date']}. Machine: "
             f"{report['machine']['cpu_model']}, {report['machine'].get('usable_cores', '?')} cores, "
             f"torch {report['versions'].get('torch')}.", "",
             "Ratios: median of per-round ratios over interleaved rounds, "
             "`median [min, max] (IQR, n)`; below 1 the LGD pass is faster.", "",
             "## The epilogue kernel against the ReLU (LGD-2D's block maps)", "",
             "| map (frames, C, H, W) | layout | MiB | ReLU | kernel forward | ratio | "
             "ReLU backward | kernel backward | ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for row in report["epilogue"]:
        lines.append(f"| {tuple(row['shape'])} | {row['layout']} | {row['mib']:.1f} | "
                     f"{fmt_seconds(row['relu_s'])} | {fmt_seconds(row['kernel_forward_s'])} | "
                     f"{fmt_ratio(row['forward_ratio'])} | {fmt_seconds(row['relu_backward_s'])} | "
                     f"{fmt_seconds(row['kernel_backward_s'])} | {fmt_ratio(row['backward_ratio'])} |")
    pool_row = report["pool"]
    lines += ["", "## P(x_1) of LGD-2D, forward + backward (6 frames of 64 x 56 x 56, "
              "channels-last)", "",
              "Extra time over the same graph without P, median of per-round differences: "
              f"`x.mean((2, 3, 4))` {fmt_seconds(pool_row['mean']['extra_s'])}, "
              f"`global_average` {fmt_seconds(pool_row['global_average']['extra_s'])}.", "",
              "## The projections in the network: thin-product kernel or BLAS", "",
              "`lgd2d_r50` / `tsn_r50` at batch 2, channels-last, three arms in the same rounds.",
              "", "| step | baseline | ratio, kernel | ratio, BLAS |", "|---|---|---|---|"]
    for row in report["projections"]:
        lines.append(f"| {row['mode']} | {fmt_seconds(row['baseline_s'])} | "
                     f"{fmt_ratio(row['kernel'])} | {fmt_ratio(row['blas'])} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--network-rounds", type=int, default=20)
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR)
    args = parser.parse_args()
    if not epilogue_kernel.available():
        print(f"the epilogue kernel is unavailable: {epilogue_kernel.reason()}", file=sys.stderr)
        return 1
    report = {"command": "python benchmarks/bench_epilogue_passes.py" + (
                  f" --rounds {args.rounds}" if args.rounds != 40 else ""),
              "date": utc_now(), "machine": machine_description(CPU),
              "versions": library_versions(), "epilogue": epilogue(args.rounds),
              "pool": pool(args.rounds), "projections": projections(args.network_rounds)}
    path = write_results(args.out_dir, "epilogue_passes_results", report, to_markdown(report))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
