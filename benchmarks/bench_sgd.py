"""The SGD update's share of the diffusion cost: one optimiser step per kernel and model.

The LGD networks carry more parameter tensors than their baselines (the low-rank
projections' matrices), so an update that loops over tensors costs them more. For each
network (paper sizes, 400 classes, gradients set to random values) and each kernel of
``lgdnet.engine.optimizer`` (``for-loop``, PyTorch's CPU default; ``foreach``; ``fused``,
lgdnet's default) the step is timed in interleaved rounds, all arms in one process; the
table gives medians and the LGD - baseline difference per kernel.

Run: ``python benchmarks/bench_sgd.py [--rounds 15]``; writes ``sgd_results.md`` and ``.json``
next to this file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BENCH_DIR,
    fmt_seconds,
    library_versions,
    machine_description,
    time_round_robin,
    utc_now,
    write_results,
)

import lgdnet  # noqa: E402
from lgdnet.engine.optimizer import make_sgd  # noqa: E402

MODELS = ("p3d_r50", "lgd3d_r50", "tsn_r50", "lgd2d_r50")
KERNELS = ("for-loop", "foreach", "fused")
PAIRS = (("lgd3d_r50", "p3d_r50"), ("lgd2d_r50", "tsn_r50"))


def sgd_step(model_name: str, kernel: str) -> tuple[Any, int]:
    """The step of an SGD (momentum 0.9, weight decay 1e-4, as ``lgdnet train``) over the
    network's parameters, with random gradients in place; and the number of tensors."""
    model = lgdnet.create_model(model_name, num_classes=400)
    params = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(0)
    for p in params:
        p.grad = torch.empty_like(p).normal_(generator=generator)  # the parameter's layout
    optimizer = make_sgd([{"params": params}], lr=1e-4, momentum=0.9, weight_decay=1e-4,
                         kernel=kernel)
    optimizer.step()  # the momentum buffers exist from here on, as in training
    return optimizer.step, len(params)


def run(rounds: int) -> dict[str, Any]:
    device = torch.device("cpu")
    fns, tensors = {}, {}
    for model in MODELS:
        for kernel in KERNELS:
            fns[f"{model}/{kernel}"], tensors[model] = sgd_step(model, kernel)
    timing = time_round_robin(fns, f"{MODELS[0]}/{KERNELS[0]}", device, warmup=2, rounds=rounds)
    rows = []
    for lgd, base in PAIRS:
        for kernel in KERNELS:
            lgd_s = timing[f"{lgd}/{kernel}"]["seconds"]["median"]
            base_s = timing[f"{base}/{kernel}"]["seconds"]["median"]
            rows.append({"lgd": lgd, "baseline": base, "kernel": kernel, "lgd_seconds": lgd_s,
                         "baseline_seconds": base_s, "difference_seconds": lgd_s - base_s})
    return {"rounds": rounds, "tensors": tensors, "rows": rows,
            "timing": {name: entry["seconds"] for name, entry in timing.items()}}


def to_markdown(report: dict[str, Any]) -> str:
    tensors = report["tensors"]
    lines = [
        "# The SGD update per kernel",
        "",
        f"Command: `{report['command']}`. Date: {report['date']}. Machine: "
        f"{report['machine']['cpu_model']}, {report['machine']['usable_cores']} cores, torch "
        f"{report['versions']['torch']}.",
        "",
        "One `optimizer.step()` (SGD, momentum 0.9, weight decay 1e-4) over the network's "
        f"parameters, median of {report['rounds']} interleaved rounds, every arm in one process. "
        "Parameter tensors: " + ", ".join(f"`{m}` {n}" for m, n in tensors.items()) + ".",
        "",
        "| LGD / baseline | kernel | baseline | LGD | LGD - baseline |",
        "|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        default = " (lgdnet's default)" if row["kernel"] == "fused" else ""
        lines.append(f"| `{row['lgd']}` / `{row['baseline']}` | `{row['kernel']}`{default} | "
                     f"{fmt_seconds(row['baseline_seconds'])} | {fmt_seconds(row['lgd_seconds'])} | "
                     f"{row['difference_seconds'] * 1e3:+.1f} ms |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR)
    args = parser.parse_args()
    report = run(args.rounds)
    report.update(command="python benchmarks/bench_sgd.py"
                  + (f" --rounds {args.rounds}" if args.rounds != 15 else ""),
                  date=utc_now(), machine=machine_description(torch.device("cpu")),
                  versions=library_versions())
    print(f"wrote {write_results(args.out_dir, 'sgd_results', report, to_markdown(report))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
