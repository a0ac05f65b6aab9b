"""CPU allocation: ``lgd3d_r50`` with and without ``keep_freed_memory`` (lgdnet.allocator).

Each setting runs in fresh processes (the allocator's state is per process), alternating
``off, on, off, on, ...``; each process times an inference pass at batch 8 and a training
step at batch 4 (3 timed calls after one warm-up, median) and reports its peak RSS.
Writes ``benchmarks/allocator_results.md`` and ``.json``.

Run: ``python benchmarks/bench_allocator.py [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BENCH_DIR, library_versions, machine_description, utc_now, write_results  # noqa: E402

ENV = "LGDNET_KEEP_FREED_MEMORY"

CHILD = """
import json, resource, statistics, sys, time, torch
sys.path.insert(0, {bench!r})
from workloads import Workload, build_model, make_batch, inference_fn, train_step_fn
from lgdnet.allocator import keep_freed_memory
applied = keep_freed_memory()
cpu = torch.device("cpu")
def median_time(fn):
    fn()
    times = []
    for _ in range(3):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    return statistics.median(times)
work = Workload(model="lgd3d_r50", batch=8)
model = build_model(work, cpu); clips, _ = make_batch(model, work, cpu)
inference = median_time(inference_fn(model, clips, work, cpu))
work = Workload(model="lgd3d_r50", batch=4)
model = build_model(work, cpu); clips, labels = make_batch(model, work, cpu)
train = median_time(train_step_fn(model, clips, labels, work, cpu))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"applied": applied, "inference_s": inference, "train_s": train, "peak_rss_mib": peak}}))
"""


def run_child(keep: bool) -> dict[str, Any]:
    env = {**os.environ, ENV: "1" if keep else "0"}
    out = subprocess.run([sys.executable, "-c", CHILD.format(bench=str(BENCH_DIR))], env=env,
                         capture_output=True, text=True, check=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    if row["applied"] != keep:
        raise SystemExit("keep_freed_memory cannot be applied here (it needs Linux with glibc)")
    return row


def to_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        "# CPU allocation: keep_freed_memory on and off",
        "",
        f"Command: `{report['command']}`. Date: {report['date']}. Machine: "
        f"{report['machine']['cpu_model']}, {report['machine']['usable_cores']} cores, torch "
        f"{report['versions']['torch']}.",
        "",
        "`lgd3d_r50`, fresh process per row, alternating; median of 3 timed calls after one "
        "warm-up. Peak RSS covers both steps of the process.",
        "",
        "| keep_freed_memory | inference b8 | training step b4 | peak RSS, MiB |",
        "|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(f"| {'on' if row['applied'] else 'off'} | {row['inference_s']:.2f} s | "
                     f"{row['train_s']:.2f} s | {row['peak_rss_mib']:.0f} |")
    lines += ["", f"Medians: inference {s['inference_speedup']:.2f}x faster, training step "
              f"{s['train_speedup']:.2f}x faster, peak RSS x{s['peak_ratio']:.2f} with the setting on.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs of processes")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR)
    args = parser.parse_args()
    import torch

    rows = []
    for r in range(args.rounds):
        for keep in (False, True) if r % 2 == 0 else (True, False):
            rows.append(run_child(keep))
            print(rows[-1], flush=True)

    def median(key: str, on: bool) -> float:
        return statistics.median(row[key] for row in rows if row["applied"] == on)

    report = {
        "command": "python benchmarks/bench_allocator.py" + (f" --rounds {args.rounds}" if args.rounds != 2 else ""),
        "date": utc_now(), "machine": machine_description(torch.device("cpu")),
        "versions": library_versions(), "rows": rows,
        "summary": {"inference_speedup": median("inference_s", False) / median("inference_s", True),
                    "train_speedup": median("train_s", False) / median("train_s", True),
                    "peak_ratio": median("peak_rss_mib", True) / median("peak_rss_mib", False)},
    }
    print(f"wrote {write_results(args.out_dir, 'allocator_results', report, to_markdown(report))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
