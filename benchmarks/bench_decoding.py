"""Video decoding speed (issue item 9): decoded training clips per second per worker, vs decord.

What a data-loader worker does for one training sample, timed for lgdnet and for decord on the
same files with the same frame indices, in the same run:

- **3D clips** (LGD-3D, Sec. 4.2 / 5.2): 16 consecutive frames at a random position, decoded and
  resized to 120x160;
- **2D triples** (LGD-2D, Sec. 4.1 / 5.2): one random frame in each of 3 segments, resized to
  240x320.

Each sample opens the file, decodes the frames and closes it, as ``VideoDataset`` does: lgdnet
through ``open_video(path, num_threads=1).get_frames(indices, size=...)``, decord through
``VideoReader(path, width=..., height=..., num_threads=1).get_batch(indices)``. One process, one
decoder thread (``torch.set_num_threads(1)`` too): every figure is per worker. The indices come
from ``lgdnet.data.sampling.sample_train_indices`` on lgdnet's frame count. Inputs: each real clip
of ``tests/data/clips/`` (a fixed list of samples per clip) and the embedded synthetic dataset
(one sample per clip). The two libraries are timed interleaved on each input (which one goes
first alternates between rounds) so that load from other processes hits both alike; wall time
(``time.perf_counter``) and CPU time (``time.process_time``) are both recorded, and each ratio
lgdnet/decord (clips per second, higher is better for lgdnet) is the median of the per-round
ratios. The overall ratio is the geometric mean over inputs.

Memory: a ``VideoDataset`` in training mode (decode, random crop, flip, normalise) is iterated
for several epochs over the synthetic training list and over many samples of the real clips,
reading the resident set size (``VmRSS``) every few samples.

Usage (from the repository root; decord from ``pip install decord``, the ``bench`` extra)::

    python benchmarks/bench_decoding.py            # writes benchmarks/decoding_results.md and .json
    python benchmarks/bench_decoding.py --quick    # smoke run, writes decoding_results.quick.*

Without decord the lgdnet figures are still measured and the comparison is left out.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BENCH_DIR,
    REPO_ROOT,
    library_versions,
    machine_description,
    summarize,
    utc_now,
    write_results,
)

CLIPS_DIR = REPO_ROOT / "tests" / "data" / "clips"
REAL_CLIPS = ("v_SoccerJuggling_g23_c01.avi", "RATRACE_wave_f_nm_np1_fr_goo_37.avi", "R6llTwEh07w.mp4")
REAL_NAMES = {REAL_CLIPS[0]: "UCF101 Xvid AVI 320x240", REAL_CLIPS[1]: "HMDB51 DivX AVI 560x240",
              REAL_CLIPS[2]: "Kinetics H.264 MP4 340x256 + audio"}
Task = tuple[str, list[int]]  # (path, frame indices) of one training sample


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: few samples, 2 rounds, 1 memory epoch (numbers not meaningful)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds per input")
    parser.add_argument("--samples", type=int, default=10, help="training samples per real clip per round")
    parser.add_argument("--clips-per-class", type=int, default=4, help="synthetic clips per class (8 classes)")
    parser.add_argument("--epochs", type=int, default=10, help="memory: epochs over the synthetic training list")
    parser.add_argument("--real-samples", type=int, default=180,
                        help="memory: samples of the real clips (over 3 epochs)")
    parser.add_argument("--rss-every", type=int, default=8, help="memory: read the RSS every N samples")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR,
                        help="where decoding_results.md / .json go (default: benchmarks/)")
    return parser


# ------------------------------------------------------------------------------ readers
def lgdnet_reader(size: tuple[int, int]) -> Callable[[str, list[int]], np.ndarray]:
    from lgdnet.data.decoding import open_video

    def read(path: str, indices: list[int]) -> np.ndarray:
        with open_video(path, num_threads=1) as video:
            return video.get_frames(indices, size=size).numpy()

    return read


def decord_reader(decord: Any, size: tuple[int, int] | None) -> Callable[[str, list[int]], np.ndarray]:
    resize = {"height": size[0], "width": size[1]} if size is not None else {}

    def read(path: str, indices: list[int]) -> np.ndarray:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1, **resize)
        last = len(reader) - 1  # frame counts can differ by one (packed-bitstream AVI)
        frames = reader.get_batch([min(i, last) for i in indices]).asnumpy()
        del reader
        return frames

    return read


def frame_agreement(decord: Any, path: str, count: int = 24) -> dict[str, Any]:
    """Do both libraries call the same frame ``i``? Mean |difference| of the first frames at
    full size, with decord shifted by -2..2 frames: the best shift should be 0."""
    from lgdnet.data.decoding import open_video

    with open_video(path, num_threads=1) as video:
        num_frames = video.num_frames
        count = min(count, num_frames)
        ours = video.get_frames(range(count)).numpy().astype(np.int16)
    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    decord_frames = len(reader)
    theirs = reader.get_batch(list(range(min(count + 2, decord_frames)))).asnumpy().astype(np.int16)
    del reader
    diffs = {}
    for shift in range(-2, 3):
        pairs = [(i, i + shift) for i in range(count) if 0 <= i + shift < len(theirs)]
        diffs[shift] = float(np.mean([np.abs(ours[i] - theirs[j]).mean() for i, j in pairs]))
    best = min(diffs, key=diffs.get)
    return {"lgdnet_frames": num_frames, "decord_frames": decord_frames, "best_shift": best,
            "mean_abs_diff_at_0": diffs[0], "mean_abs_diff_by_shift": diffs}


# ------------------------------------------------------------------------------ speed
def make_tasks(spec: Any, paths: list[str], samples: int) -> list[Task]:
    """``samples`` training samples of every path (epoch 0, indices 0, 1, ...)."""
    from lgdnet.data.decoding import open_video
    from lgdnet.data.sampling import sample_rng, sample_train_indices

    tasks = []
    for path in paths:
        with open_video(path, num_threads=1) as video:
            num_frames = video.num_frames
        for index in range(samples):
            indices = sample_train_indices(spec, num_frames, sample_rng(0, 0, index))
            tasks.append((path, indices.tolist()))
    return tasks


def time_tasks(read: Callable[[str, list[int]], np.ndarray], tasks: list[Task]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for path, indices in tasks:
        read(path, indices)
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(readers: dict[str, Callable], tasks: list[Task], rounds: int) -> dict[str, Any]:
    """Interleaved rounds over the same tasks; clips per second and lgdnet/decord ratios."""
    names = list(readers)
    for name in names:  # warm-up: first-call allocations, page cache
        time_tasks(readers[name], tasks[:2])
    times: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in names}
    for round_number in range(rounds):
        order = names if round_number % 2 == 0 else names[::-1]
        for name in order:
            wall, cpu = time_tasks(readers[name], tasks)
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
    result: dict[str, Any] = {"clips_per_round": len(tasks), "rounds": rounds, "seconds": times}
    for name in names:
        for clock in ("wall", "cpu"):
            result[f"{name}_clips_per_s_{clock}"] = len(tasks) / statistics.median(times[name][clock])
    if "decord" in readers:
        for clock in ("wall", "cpu"):
            ratios = [d / max(o, 1e-9) for o, d in zip(times["lgdnet"][clock], times["decord"][clock])]
            result[f"ratio_{clock}"] = summarize(ratios)
    return result


# ------------------------------------------------------------------------------ memory
def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    import resource  # no /proc: the peak is the best that is left

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_run(records: list[Any], spec: Any, epochs: int, every: int) -> dict[str, Any]:
    """Iterate a training ``VideoDataset`` for ``epochs`` epochs, reading the RSS as it goes."""
    from lgdnet.data import VideoDataset

    dataset = VideoDataset(records, spec, mode="train", decode_threads=1, seed=0)
    trace: list[tuple[int, float]] = [(0, rss_mib())]
    count, epoch_ends = 0, []
    wall, cpu = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item = dataset[index]
            assert item["video"].shape[1] == spec.num_frames
            del item
            count += 1
            if count % every == 0:
                trace.append((count, rss_mib()))
        epoch_ends.append((count, rss_mib()))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    values = [mib for _, mib in trace]
    after_first = [mib for n, mib in trace if n >= epoch_ends[0][0]] if epochs > 1 else values
    # Slope of the RSS after the first epoch (MiB per 1000 samples): ~0 when memory is flat.
    late = [(n, mib) for n, mib in trace if n >= epoch_ends[0][0]]
    slope = float(np.polyfit(*zip(*late), 1)[0] * 1000) if len(late) >= 3 else 0.0
    return {
        "samples": count, "epochs": epochs, "samples_per_epoch": len(dataset), "every": every,
        "rss_mib_start": values[0], "rss_mib_first": trace[1][1] if len(trace) > 1 else values[0],
        "rss_mib_last": values[-1], "rss_mib_max": max(values),
        "rss_mib_end_of_epoch": [mib for _, mib in epoch_ends],
        "growth_after_first_epoch_mib": values[-1] - after_first[0],
        "slope_mib_per_1000_samples": slope,
        "items_per_s_wall": count / wall, "items_per_s_cpu": count / cpu,
        "trace": trace,
    }


# ------------------------------------------------------------------------------ report
def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def to_markdown(report: dict[str, Any]) -> str:
    m, v = report["machine"], report["versions"]
    has_decord = report["decord"] is not None
    lines = [
        "# Video decoding speed: lgdnet vs decord",
        "",
        f"Command: `{report['command']}` (from the repository root). Duration: {report['duration_s']:.0f} s.",
        "",
        f"Date: {report['date']}." + (" **Quick smoke run: numbers are not meaningful.**" if report["quick"] else ""),
        "",
        f"Machine: {m['cpu_model']}, {m['usable_cores']} usable of {m['logical_cores']} logical cores, "
        f"{m['memory_gib']} GiB memory, {m['os']}; load average (1, 5, 15 min) at start "
        f"{m['load_average_at_start']}, at end {report['load_average_at_end']} (other jobs ran on "
        "the same cores: CPU time is the steadier figure). One process, one decoder thread, "
        "`torch.set_num_threads(1)`: every figure is per data-loader worker.",
        "",
        f"Versions: lgdnet {v['lgdnet']} ({v['lgdnet_commit']}), av {v['av']}, "
        f"decord {report['decord'] or 'not installed'}, torch {v['torch']}, numpy {v['numpy']}, "
        f"Python {m['python']}.",
        "",
        f"Inputs: the three real clips of `tests/data/clips/` ({report['samples_per_clip']} training "
        f"samples each per round) and the embedded synthetic dataset ({report['synthetic']['clips']} "
        f"clips of {report['synthetic']['frames']} frames at {report['synthetic']['size']}, MPEG-4 "
        f"Part 2 MP4, one sample per clip per round); {report['rounds']} interleaved rounds per input, "
        "medians reported. Each sample opens the file, decodes its frames resized by the decoder and "
        "closes it.",
        "",
        "## Training clips per second per worker",
        "",
        "| sample | input | clips/round | lgdnet clips/s, CPU (wall) | decord clips/s, CPU (wall) "
        "| lgdnet/decord, CPU: median [min, max] | lgdnet/decord, wall: median [min, max] |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["speed"]:
        r = row["result"]
        ours = f"{r['lgdnet_clips_per_s_cpu']:.1f} ({r['lgdnet_clips_per_s_wall']:.1f})"
        if has_decord:
            theirs = f"{r['decord_clips_per_s_cpu']:.1f} ({r['decord_clips_per_s_wall']:.1f})"
            ratios = [f"**{r[f'ratio_{c}']['median']:.2f}** [{r[f'ratio_{c}']['min']:.2f}, "
                      f"{r[f'ratio_{c}']['max']:.2f}]" for c in ("cpu", "wall")]
        else:
            theirs, ratios = "-", ["-", "-"]
        lines.append(f"| {row['sample']} | {row['input']} | {r['clips_per_round']} | {ours} | {theirs} "
                     f"| {ratios[0]} | {ratios[1]} |")
    if has_decord:
        lines += ["", "Overall lgdnet/decord (geometric mean of the median ratios over inputs):"]
        for key, overall in report["overall_ratio"].items():
            lines.append(f"- {key}: CPU time **{overall['cpu']:.2f}**, wall time {overall['wall']:.2f}")
        lines += ["", "Same frames? Mean |difference| (0-255) of the first frames decoded at full "
                  "size by both, and the decord frame shift that fits best (0: frame `i` is the "
                  "same frame in both):", "",
                  "| input | frames (lgdnet / decord) | best shift | mean abs diff at shift 0 |",
                  "|---|---|---|---|"]
        for name, agreement in report["agreement"].items():
            lines.append(f"| {name} | {agreement['lgdnet_frames']} / {agreement['decord_frames']} | "
                         f"{agreement['best_shift']} | {agreement['mean_abs_diff_at_0']:.2f} |")
    lines += ["", "## Memory across epochs", "",
              "A training `VideoDataset` (decode, random crop, flip, normalise; 3D spec) iterated "
              "in one process; resident set size (`VmRSS`) read every "
              f"{report['memory'][0]['result']['every']} samples.", "",
              "| run | samples | RSS MiB: before / first / last / max | at each epoch end | "
              "growth after epoch 1 | slope after epoch 1 (MiB per 1000 samples) | items/s, CPU (wall) |",
              "|---|---|---|---|---|---|---|"]
    for row in report["memory"]:
        r = row["result"]
        ends = ", ".join(f"{mib:.1f}" for mib in r["rss_mib_end_of_epoch"])
        lines.append(
            f"| {row['name']} | {r['samples']} ({r['epochs']} x {r['samples_per_epoch']}) | "
            f"{r['rss_mib_start']:.1f} / {r['rss_mib_first']:.1f} / {r['rss_mib_last']:.1f} / "
            f"{r['rss_mib_max']:.1f} | {ends} | {r['growth_after_first_epoch_mib']:+.1f} MiB | "
            f"{r['slope_mib_per_1000_samples']:+.2f} | {r['items_per_s_cpu']:.1f} ({r['items_per_s_wall']:.1f}) |")
    lines += ["", "Reading the tables: clips per second of one worker from the median time of a round "
              "(CPU time: the work done, close to an idle core's wall time; wall in brackets also "
              "counts waiting for a core on a shared machine). A ratio above 1 means lgdnet decodes "
              "more training samples per second than decord on the same indices. Memory is flat when "
              "the RSS stops moving after the first epoch (allocator warm-up) and its slope is ~0.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from lgdnet.data import SamplingSpec, load_annotations, write_synthetic_dataset
    from lgdnet.data.annotations import VideoRecord

    args = build_parser().parse_args(argv)
    if args.quick:
        args.rounds, args.samples, args.clips_per_class = 2, 2, 1
        args.epochs, args.real_samples, args.rss_every = 2, 12, 2
    torch.set_num_threads(1)
    try:
        import decord
    except ImportError:
        decord = None
        print("decord is not installed (pip install decord): measuring lgdnet alone", flush=True)
    started = time.perf_counter()
    argv_used = sys.argv[1:] if argv is None else argv
    report: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/bench_decoding.py", *argv_used]),
        "date": utc_now(), "quick": args.quick,
        "machine": machine_description(torch.device("cpu")), "versions": library_versions(),
        "decord": getattr(decord, "__version__", None), "rounds": args.rounds,
        "samples_per_clip": args.samples, "speed": [], "overall_ratio": {}, "agreement": {}, "memory": [],
    }
    real = [str(CLIPS_DIR / name) for name in REAL_CLIPS]
    with tempfile.TemporaryDirectory(prefix="lgdnet-bench-") as tmp:
        synthetic = write_synthetic_dataset(tmp, clips_per_class=args.clips_per_class, seed=0,
                                            num_frames=40, size=(96, 128), progress=False)
        train = load_annotations(synthetic.train_list).records
        every_clip = train + load_annotations(synthetic.val_list).records
        report["synthetic"] = {"clips": len(every_clip), "frames": 40, "size": "96x128",
                               "train_clips": len(train)}
        if decord is not None:
            for path in real + [os.fspath(every_clip[0].path)]:
                name = Path(path).name
                report["agreement"][REAL_NAMES.get(name, f"synthetic ({name})")] = frame_agreement(decord, path)
        inputs = [(REAL_NAMES[Path(p).name], [p], args.samples) for p in real]
        inputs.append(("synthetic dataset", [os.fspath(r.path) for r in every_clip], 1))
        for label, spec in (("3D clip: 16 frames, 120x160", SamplingSpec.for_3d()),
                            ("2D triple: 3 frames, 240x320", SamplingSpec.for_2d())):
            readers = {"lgdnet": lgdnet_reader(spec.train_resize)}
            if decord is not None:
                readers["decord"] = decord_reader(decord, spec.train_resize)
            for name, paths, samples in inputs:
                result = compare(readers, make_tasks(spec, paths, samples), args.rounds)
                report["speed"].append({"sample": label, "scheme": spec.scheme, "input": name, "result": result})
                ratio = f", lgdnet/decord CPU {result['ratio_cpu']['median']:.2f}" if decord else ""
                print(f"{label} | {name}: lgdnet {result['lgdnet_clips_per_s_cpu']:.1f} clips/s CPU{ratio}",
                      flush=True)
        if decord is not None:
            groups = {"3D clips": ["clip"], "2D triples": ["segments"], "all": ["clip", "segments"]}
            for key, schemes in groups.items():
                rows = [row["result"] for row in report["speed"] if row["scheme"] in schemes]
                report["overall_ratio"][key] = {c: _geomean([r[f"ratio_{c}"]["median"] for r in rows])
                                                for c in ("cpu", "wall")}
        spec_3d = SamplingSpec.for_3d()
        runs = [(f"synthetic train list, {args.epochs} epochs", train, args.epochs)]
        repeats = max(1, args.real_samples // (3 * len(real)))
        real_records = [VideoRecord(path=p, label=0, video_id=Path(p).stem) for p in real] * repeats
        runs.append((f"the 3 real clips x {repeats}, 3 epochs", real_records, 3))
        for name, records, epochs in runs:
            result = memory_run(records, spec_3d, epochs, args.rss_every)
            report["memory"].append({"name": name, "result": result})
            print(f"memory | {name}: RSS first {result['rss_mib_first']:.1f} MiB, last "
                  f"{result['rss_mib_last']:.1f}, max {result['rss_mib_max']:.1f}", flush=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    report["load_average_at_end"] = [round(x, 2) for x in load] if load else None
    report["duration_s"] = round(time.perf_counter() - started, 1)

    stem = "decoding_results" + (".quick" if args.quick else "")
    md_path = write_results(args.out_dir, stem, report, to_markdown(report))
    print(f"wrote {md_path} ({report['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
