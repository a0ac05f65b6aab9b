"""The cost of diffusion as a user meets it: ``lgdnet train`` on real video files.

Each round runs the ``lgdnet train`` command once for the LGD network and once for its
baseline (the order alternating from round to round), each a fresh process that trains one
stage-1 epoch of ``--steps`` optimiser steps at ``--batch`` clips on MPEG-4 videos written by
``lgdnet synthetic`` (decoded by the loader in the training process, ``num_workers=0``, so the
two runs do identical data work). Reported per model pair, batch and layout:

* **step**: the training step in steady state, as the command itself records it: the median
  ``seconds`` of the steps in ``steps.jsonl`` after the first ``WARMUP_STEPS`` (a step's wall
  time from the end of the one before, so its decoding included);
* **fastest step**: the shortest of those steady steps, the estimate least touched by the
  bursts of load that these shared machines see now and then (a burst lengthens the steps it
  falls on and shortens none);
* **warm-up**: what the first ``WARMUP_STEPS`` steps took beyond that many steady steps (the
  heap grows to the step's peak, oneDNN builds its primitives: a cost paid once a process);
* **epoch**: the training loop's own time (``seconds`` of the epoch record in
  ``metrics.jsonl``: decoding, the steps, the warm-up, nothing before the first batch);
* **command**: the wall time of the whole command (start-up, model construction, the
  epoch, the last checkpoint);

and the median of the per-round ratios LGD / baseline with its spread, as the other
benchmarks report interleaved pairs. The step ratio is the one the targets are set on; the
epoch and command ratios of these short epochs carry the warm-up, which a real epoch of
thousands of steps spreads thin. The sizes are the paper's: 3D clips of 16 frames
resized to 120x160 with a 112x112 crop, 2D triples of frames resized to 240x320 with a
224x224 crop; 400 classes.

Run: ``python benchmarks/bench_command.py [--rounds 6] [--steps 16] [--batches 2 4]
[--layouts channels_last contiguous] [--pairs 3d 2d]``; writes ``command_results.md`` and
``.json`` next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    fmt_ratio,
    library_versions,
    machine_description,
    summarize,
    utc_now,
    write_results,
)

HERE = Path(__file__).resolve().parent
PAIRS = {"3d": ("lgd3d_r50", "p3d_r50"), "2d": ("lgd2d_r50", "tsn_r50")}
WARMUP_STEPS = 2
KEYS = ("step", "fastest", "warmup", "epoch", "command")
LABELS = {"step": "step", "fastest": "fastest step", "epoch": "epoch", "command": "command"}
SAMPLING = {"3d": {"num_frames": 16, "frame_stride": 1, "train_resize": [120, 160], "crop_size": 112},
            "2d": {"num_frames": 3, "train_resize": [240, 320], "crop_size": 224}}


def lgdnet_command() -> list[str]:
    """The installed ``lgdnet`` entry point beside this Python, else ``python -m lgdnet``."""
    script = Path(sys.executable).with_name("lgdnet")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "lgdnet.cli"]


def write_videos(folder: Path, clips: int) -> Path:
    """Real MPEG-4 clips at 240x320 (both networks' resize reads them) and a train list of
    ``clips`` lines cycling over them; returns the list."""
    data = folder / "videos"
    subprocess.run([*lgdnet_command(), "synthetic", str(data), "--size", "240x320", "--frames", "24",
                    "--clips-per-class", "2", "--val-fraction", "0", "--classes",
                    "approach,separate", "--quiet", "--workers", "1"], check=True)
    lines = [line for line in (data / "train.txt").read_text().splitlines() if line.strip()]
    listing = folder / "train.txt"
    listing.write_text("\n".join(lines[i % len(lines)] for i in range(clips)) + "\n")
    return listing


def train_once(model: str, kind: str, batch: int, layout: str, listing: Path, out: Path) -> dict[str, float]:
    """One ``lgdnet train`` command; returns its epoch time and its wall time."""
    config = {
        "model": {"name": model, "num_classes": 400},
        "data": {"train_list": str(listing), "val_list": str(listing), "root": str(listing.parent / "videos"),
                 "format": "list", "num_workers": 0, "on_error": "raise", **SAMPLING[kind]},
        "optim": {"epochs": 1, "batch_size": batch, "lr": 0.001},
        "run": {"out_dir": str(out), "stages": [1], "eval_every": 0, "final_eval": False,
                "device": "cpu", "progress": False, "memory_format": layout},
    }
    path = out.with_suffix(".json")
    path.write_text(json.dumps(config))
    started = time.perf_counter()
    done = subprocess.run([*lgdnet_command(), "train", "--config", str(path)], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"lgdnet train ({model}) failed:\n{done.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    epochs = [r for r in records if "seconds" in r and r.get("stage") == 1]
    steps = [json.loads(line)["seconds"] for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]
    if len(steps) <= WARMUP_STEPS:
        raise ValueError(f"--steps must be more than {WARMUP_STEPS} (the warm-up steps)")
    steady = statistics.median(steps[WARMUP_STEPS:])
    return {"step": steady, "fastest": min(steps[WARMUP_STEPS:]),
            "warmup": sum(steps[:WARMUP_STEPS]) - WARMUP_STEPS * steady, "epoch": float(epochs[-1]["seconds"]), "command": wall}


def measure(kind: str, batch: int, layout: str, rounds: int, steps: int, work: Path) -> dict[str, Any]:
    lgd, base = PAIRS[kind]
    listing = work / f"train-{batch * steps}.txt"
    if not listing.is_file():
        source = work / "train.txt"
        lines = source.read_text().splitlines()
        listing.write_text("\n".join(lines[i % len(lines)] for i in range(batch * steps)) + "\n")
    times: dict[str, dict[str, list[float]]] = {m: {k: [] for k in KEYS} for m in (lgd, base)}
    for r in range(rounds):
        for model in ((lgd, base) if r % 2 == 0 else (base, lgd)):
            result = train_once(model, kind, batch, layout, listing, work / f"run-{model}-{r}")
            for key, value in result.items():
                times[model][key].append(value)
        print(f"  {kind} batch {batch} {layout} round {r + 1}/{rounds}: step "
              f"{lgd} {times[lgd]['step'][-1]:.2f} s, {base} {times[base]['step'][-1]:.2f} s; epoch "
              f"{times[lgd]['epoch'][-1]:.1f} s, {times[base]['epoch'][-1]:.1f} s", flush=True)
    entry: dict[str, Any] = {"models": [lgd, base], "batch": batch, "layout": layout, "steps": steps}
    for key in KEYS:
        entry[key] = {"lgd": summarize(times[lgd][key]), "baseline": summarize(times[base][key])}
        if key != "warmup":  # a difference of small numbers: reported in seconds, not as a ratio
            ratios = [a / b for a, b in zip(times[lgd][key], times[base][key])]
            entry[key]["ratio"] = {**summarize(ratios), "ratios": ratios}
    return entry


def markdown(report: dict[str, Any]) -> str:
    lines = ["# `lgdnet train`: the cost of diffusion from the command", "",
             f"Command: `{report['command']}`. Date: {report['date']}. Duration: {report['seconds']:.0f} s.", "",
             f"Machine: {report['machine']['cpu_model']}, {report['machine'].get('usable_cores', '?')} usable cores; "
             f"torch {report['versions'].get('torch')}.", "",
             "Each round runs `lgdnet train` once per network (fresh processes, order alternating), one "
             f"stage-1 epoch of {report['steps']} steps on real MPEG-4 clips decoded in the training "
             f"process. *step*: the median step time in `steps.jsonl` after the first {WARMUP_STEPS} "
             f"steps; *warm-up*: what those {WARMUP_STEPS} steps took beyond as many steady steps "
             "(median, LGD and baseline); *fastest*: the shortest steady step; *epoch*: the training "
             "loop's time from `metrics.jsonl`, "
             "warm-up included; *command*: the whole command's wall time. Ratio: LGD / baseline per "
             "round, `median [min, max] (IQR, n)`. Target: a step ratio of at most 1.03.", "",
             "| LGD / baseline | batch | layout | baseline step | LGD step | ratio, step | ratio, fastest step "
             "| warm-up, LGD / baseline | ratio, epoch | ratio, command |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in report["results"]:
        lines.append(f"| `{e['models'][0]}` / `{e['models'][1]}` | {e['batch']} | {e['layout']} "
                     f"| {e['step']['baseline']['median']:.2f} s | {e['step']['lgd']['median']:.2f} s "
                     f"| {fmt_ratio(e['step']['ratio'])} | {fmt_ratio(e['fastest']['ratio']) if 'fastest' in e else ''} "
                     f"| {e['warmup']['lgd']['median']:.1f} s / {e['warmup']['baseline']['median']:.1f} s "
                     f"| {fmt_ratio(e['epoch']['ratio'])} | {fmt_ratio(e['command']['ratio'])} |")
    lines += ["", "Pooled over batches and layouts (every per-round ratio of a network pair; median and "
              "95% bootstrap interval, fixed seed):", "",
              "| LGD / baseline | ratio | rounds | pooled median | 95% interval |", "|---|---|---|---|---|"]
    for row in pooled(report["results"]):
        lines.append(f"| `{row['models'][0]}` / `{row['models'][1]}` | {LABELS[row['key']]} | {row['n']} "
                     f"| {row['median']:.3f} | {row['low']:.3f}-{row['high']:.3f} |")
    return "\n".join(lines) + "\n"


def pooled(results: list[dict[str, Any]], resamples: int = 4000) -> list[dict[str, Any]]:
    """Per network pair and ratio (step, fastest step, epoch, command), the per-round ratios of every batch
    and layout together: their median and a 95% bootstrap interval of it."""
    rng = random.Random(0)
    rows = []
    for models in dict.fromkeys(tuple(e["models"]) for e in results):
        for key in ("step", "fastest", "epoch", "command"):
            if any(key not in e for e in results):
                continue
            ratios = [x for e in results if tuple(e["models"]) == models for x in e[key]["ratio"]["ratios"]]
            medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
            rows.append({"models": models, "key": key, "n": len(ratios), "median": statistics.median(ratios),
                         "low": medians[int(0.025 * resamples)], "high": medians[int(0.975 * resamples) - 1]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--layouts", nargs="+", default=["channels_last", "contiguous"])
    parser.add_argument("--pairs", nargs="+", default=["3d", "2d"], choices=sorted(PAIRS))
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="write the text of an earlier run's results file again, measuring nothing")
    args = parser.parse_args(argv)
    if args.render:
        report = json.loads(args.render.read_text())
        path = write_results(args.render.parent, args.render.stem, report, markdown(report))
        print(f"wrote {path}")
        return 0
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="lgdnet-bench-command-") as tmp:
        work = Path(tmp)
        write_videos(work, 4)
        for kind in args.pairs:
            for batch in args.batches:
                for layout in args.layouts:
                    results.append(measure(kind, batch, layout, args.rounds, args.steps, work))
    import torch

    report = {"command": "python benchmarks/bench_command.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "date": utc_now(), "seconds": time.perf_counter() - started, "steps": args.steps,
              "machine": machine_description(torch.device("cpu")), "versions": library_versions(),
              "threads": os.cpu_count(), "results": results}
    text = markdown(report)
    path = write_results(args.out, "command_results", report, text)
    print(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
