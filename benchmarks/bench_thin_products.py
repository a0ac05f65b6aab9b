"""The low-rank projections on a few rows: lgdnet's thin-product kernel against BLAS.

Each LGD block projects its global vectors, ``(N, C)`` with N the clips of a batch, through
W = W1 W2 (Sec. 3.1, rank C/16), three times per block (Eq. 2-3). For the output widths of
LGD ResNet-50 (C = 256, 512, 1024, 2048) and N = 1, 2, 4, 8 this times one projection,
forward alone and forward + backward (input and weight gradients), two ways in interleaved
rounds in one process:

* ``blas``: the ``nn.Linear`` pair without bias (``aten::mm``, MKL/OpenBLAS);
* ``kernel``: :func:`lgdnet.models.low_rank_kernel.project` forced on, whatever the row
  count (the library uses it up to ``MAX_ROWS`` rows).

One timed call runs the projection ``--calls`` times; the table gives the median time per
projection and the kernel / BLAS ratio (below 1: the kernel is faster). There the weights
stay in cache from call to call. ``--cold`` times one projection at a time after writing a
buffer of twice the last-level cache, as a block's convolutions leave the cache before its
projections run: what the network sees.

``--network`` times what the choice does to a whole network instead: ``lgd2d_r50`` at batch 2
in the default layout, a training step and inference, the kernel and BLAS taking the products
of the same model in alternate calls (``MIN_WEIGHT_ELEMENTS`` switched between them).

Run: ``python benchmarks/bench_thin_products.py [--rounds 15] [--cold | --network]``; writes
``thin_products_results.md`` (``thin_products_cold_results.md``,
``thin_products_network_results.md``) and ``.json`` next to this file.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BENCH_DIR,
    library_versions,
    machine_description,
    summarize,
    time_round_robin,
    utc_now,
    write_results,
)

from lgdnet.models import epilogue_kernel, low_rank_kernel  # noqa: E402

WIDTHS = (256, 512, 1024, 2048)
ROWS = (1, 2, 4, 8)


def _arms(c: int, n: int, calls: int) -> dict[str, Callable[[], None]]:
    generator = torch.Generator().manual_seed(0)
    rank = c // 16
    reduce_w = (torch.randn(rank, c, generator=generator) / c**0.5).requires_grad_(True)
    expand_w = (torch.randn(c, rank, generator=generator) / rank**0.5).requires_grad_(True)
    v = torch.randn(n, c, generator=generator).requires_grad_(True)
    grad = torch.randn(n, c, generator=generator)

    def blas(v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(torch.nn.functional.linear(v, reduce_w), expand_w)

    def kernel(v: torch.Tensor) -> torch.Tensor:
        return low_rank_kernel.project(v, reduce_w, expand_w)

    def forward(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                for _ in range(calls):
                    fn(v)
        return run

    def training(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(calls):
                v.grad = reduce_w.grad = expand_w.grad = None
                fn(v).backward(grad)
        return run

    return {"forward/blas": forward(blas), "forward/kernel": forward(kernel),
            "train/blas": training(blas), "train/kernel": training(kernel)}


FLUSH_BYTES = 96 * 2**20  # twice the 48 MiB last-level cache of the CPUs we measured


def _time_cold(arms: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """Each arm's time per round, one call each in a rotating order, every call after
    writing :data:`FLUSH_BYTES` (dirty lines, as a convolution's output leaves them)."""
    flush = torch.empty(FLUSH_BYTES // 4)
    names = list(arms)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds + 2):  # two warm-up rounds
        for name in names[r % len(names):] + names[: r % len(names)]:
            flush.fill_(1.0)
            start = time.perf_counter()
            arms[name]()
            if r >= 2:
                times[name].append(time.perf_counter() - start)
    return times


def run_network(rounds: int) -> dict[str, Any]:
    """BLAS / kernel time ratios of whole ``lgd2d_r50`` steps, alternating per round."""
    from workloads import Workload, build_model, inference_fn, make_batch, train_step_fn

    device = torch.device("cpu")
    rows = []
    for mode in ("train", "inference"):
        work = Workload(model="lgd2d_r50", batch=2)
        model = build_model(work, device)
        clips, labels = make_batch(model, work, device)
        step = (train_step_fn(model, clips, labels, work, device) if mode == "train"
                else inference_fn(model, clips, work, device))
        arms = {"kernel": 64 * 1024, "blas": 1 << 62}  # BLAS: no factor is this large
        times: dict[str, list[float]] = {name: [] for name in arms}
        previous = low_rank_kernel.MIN_WEIGHT_ELEMENTS
        try:
            for r in range(rounds + 2):  # two warm-up rounds
                for name in list(arms)[r % 2:] + list(arms)[: r % 2]:
                    low_rank_kernel.MIN_WEIGHT_ELEMENTS = arms[name]
                    start = time.perf_counter()
                    step()
                    if r >= 2:
                        times[name].append(time.perf_counter() - start)
        finally:
            low_rank_kernel.MIN_WEIGHT_ELEMENTS = previous
        rows.append({"mode": mode, "kernel": summarize(times["kernel"]),
                     "blas": summarize(times["blas"]),
                     "ratio": summarize([b / k for b, k in zip(times["blas"], times["kernel"])])})
        print(f"lgd2d_r50 {mode}: blas / kernel {rows[-1]['ratio']['median']:.3f}", flush=True)
    return {"rounds": rounds, "threads": torch.get_num_threads(), "network": rows}


def _header(report: dict[str, Any], title: str) -> list[str]:
    return [f"# {title}", "",
            f"Command: `{report['command']}`. Date: {report['date']}. Machine: "
            f"{report['machine']['cpu_model']}, {report['machine']['usable_cores']} cores, torch "
            f"{report['versions']['torch']}.", ""]


def network_markdown(report: dict[str, Any]) -> str:
    lines = _header(report, "Thin products or BLAS inside a whole network") + [
        f"`lgd2d_r50` at batch 2 in the default layout, one model, its low-rank products taken by "
        f"the thin-product kernel and by BLAS in alternate calls, {report['rounds']} rounds, "
        f"{report['threads']} threads; ratio BLAS / kernel per round, `median [min, max] (IQR)`. "
        "The library uses the kernel.",
        "",
        "| step | kernel | BLAS | ratio BLAS / kernel |",
        "|---|---|---|---|",
    ]
    for row in report["network"]:
        r = row["ratio"]
        lines.append(f"| {row['mode']} | {row['kernel']['median'] * 1e3:.1f} ms | "
                     f"{row['blas']['median'] * 1e3:.1f} ms | {r['median']:.3f} [{r['min']:.3f}, "
                     f"{r['max']:.3f}] ({r['q1']:.3f}-{r['q3']:.3f}) |")
    return "\n".join(lines) + "\n"


def run(rounds: int, calls: int, cold: bool = False) -> dict[str, Any]:
    if not epilogue_kernel.available():
        return {"skipped": "the CPU kernels are not built here (no C++ compiler?)"}
    device = torch.device("cpu")
    rows = []
    calls = 1 if cold else calls
    for c in WIDTHS:
        for n in ROWS:
            if cold:
                times = _time_cold(_arms(c, n, calls), rounds)
            else:
                timing = time_round_robin(_arms(c, n, calls), "forward/blas", device, warmup=2,
                                          rounds=rounds)
                times = {name: t["seconds"]["times"] for name, t in timing.items()}
            row: dict[str, Any] = {"width": c, "rank": c // 16, "rows": n}
            for mode in ("forward", "train"):
                blas = times[f"{mode}/blas"]
                kernel = times[f"{mode}/kernel"]
                row[mode] = {
                    "blas_us": summarize(blas)["median"] / calls * 1e6,
                    "kernel_us": summarize(kernel)["median"] / calls * 1e6,
                    "ratio": summarize([k / b for k, b in zip(kernel, blas)]),
                }
            rows.append(row)
            print(f"C={c} N={n}: forward {row['forward']['ratio']['median']:.2f}, "
                  f"train {row['train']['ratio']['median']:.2f}", flush=True)
    return {"rounds": rounds, "calls": calls, "cold": cold, "threads": torch.get_num_threads(),
            "max_rows": low_rank_kernel.MAX_ROWS,
            "min_weight_elements": low_rank_kernel.MIN_WEIGHT_ELEMENTS, "rows": rows}


def to_markdown(report: dict[str, Any]) -> str:
    head = _header(report, "Thin products: the low-rank projection on a few rows")
    if "skipped" in report:
        return "\n".join(head + [f"Skipped: {report['skipped']}."]) + "\n"
    lines = head + [
        "One projection W1 W2 of `(N, C)` vectors (rank C/16, no bias), time per projection, "
        + (f"median of {report['rounds']} interleaved rounds of one call each, every call after "
           f"writing {FLUSH_BYTES >> 20} MiB (the weights out of cache, as after a block's "
           "convolutions), "
           if report.get("cold") else
           f"median of {report['rounds']} interleaved rounds of {report['calls']} calls "
           "(the weights in cache), ")
        + f"{report['threads']} threads. `blas`: the `nn.Linear` pair; `kernel`: "
        f"`lgdnet::thin_linear`, which the library uses up to N = {report['max_rows']} where a "
        f"factor has at least {report['min_weight_elements']} values (C >= 1024). "
        "Ratio: kernel / blas, median [min, max] over rounds.",
        "",
        "| C (rank) | N | forward blas | forward kernel | ratio | fwd+bwd blas | "
        "fwd+bwd kernel | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        cells = []
        for mode in ("forward", "train"):
            v = row[mode]
            r = v["ratio"]
            cells.append(f"{v['blas_us']:.1f} us | {v['kernel_us']:.1f} us | "
                         f"{r['median']:.2f} [{r['min']:.2f}, {r['max']:.2f}]")
        lines.append(f"| {row['width']} ({row['rank']}) | {row['rows']} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--cold", action="store_true",
                        help="one call at a time with the weights out of cache")
    parser.add_argument("--network", action="store_true",
                        help="whole lgd2d_r50 steps, the kernel and BLAS alternating")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR)
    args = parser.parse_args()
    if args.network:
        report = run_network(args.rounds)
    else:
        report = run(args.rounds, args.calls, args.cold)
    command = "python benchmarks/bench_thin_products.py" + (" --cold" if args.cold else "")
    command += " --network" if args.network else ""
    if args.rounds != 15:
        command += f" --rounds {args.rounds}"
    if args.calls != 200:
        command += f" --calls {args.calls}"
    report.update(command=command, date=utc_now(), machine=machine_description(torch.device("cpu")),
                  versions=library_versions())
    if args.network:
        path = write_results(args.out_dir, "thin_products_network_results", report,
                             network_markdown(report))
    else:
        stem = "thin_products_cold_results" if args.cold else "thin_products_results"
        path = write_results(args.out_dir, stem, report, to_markdown(report))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
