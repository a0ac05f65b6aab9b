"""Optical-flow extraction speed (issue item 6): TV-L1 flow frames per second per core.

Measures OpenCV's Dual TV-L1 (``lgdnet.data.flow``) on consecutive frames of a real UCF101
clip resized to 120x160 and 240x320, with the default parameters (OpenCV's) and the
``--fast`` preset, in one process with one OpenCV thread (so the figure is per core: a
``--workers K`` extraction runs K such processes). The two presets are timed interleaved
(default, fast, fast, default, ...) so that load from other processes hits both alike; the
fast/default time ratio is the median of the per-pair ratios. Also reported: how far the fast
preset's flow is from the default one, and what storing a flow frame costs (quantise + two
JPEG encodes), which the extractor adds to the TV-L1 time.

Usage (from the repository root)::

    python benchmarks/bench_flow.py            # writes benchmarks/flow_results.md and .json
    python benchmarks/bench_flow.py --quick    # smoke run, writes flow_results.quick.*
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
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

CLIP = REPO_ROOT / "tests" / "data" / "clips" / "v_SoccerJuggling_g23_c01.avi"
SIZES = ((120, 160), (240, 320))
CPU = torch.device("cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=CLIP, help="video to take frames from")
    parser.add_argument("--frames", type=int, default=9,
                        help="consecutive frames per timed call (frames - 1 flow frames)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="interleaved (default, fast) pairs timed per size")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3 frames, 2 repeats (numbers not meaningful)")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR,
                        help="where flow_results.md / .json go (default: benchmarks/)")
    return parser


def load_frames(clip: Path, count: int, size: tuple[int, int]) -> np.ndarray:
    """The first ``count`` frames of ``clip`` as gray uint8 ``(T, H, W)``, resized by the
    decoder exactly as ``lgdnet extract-flow`` resizes them."""
    from lgdnet.data.decoding import open_video
    from lgdnet.data.flow import to_gray

    with open_video(clip) as video:
        return to_gray(video.get_frames(range(count), size=size))


def time_presets_interleaved(frames: np.ndarray, repeats: int) -> dict[str, dict[str, list]]:
    """Wall and CPU seconds of one call per preset, interleaved (D, F, F, D, D, F, ...).

    CPU time (``time.process_time``; one thread) is what the call itself used: on a loaded
    machine it stays close to the unloaded wall time, while wall time also counts waiting
    for a core.
    """
    from lgdnet.data.flow import TVL1_DEFAULT, TVL1_FAST, tvl1_flow

    presets = {"default": TVL1_DEFAULT, "fast": TVL1_FAST}
    times: dict[str, dict[str, list]] = {name: {"wall": [], "cpu": []} for name in presets}
    for name in presets:  # warm-up: first-call allocations
        tvl1_flow(frames, presets[name])
    for repeat in range(repeats):
        order = ("default", "fast") if repeat % 2 == 0 else ("fast", "default")
        for name in order:
            wall, cpu = time.perf_counter(), time.process_time()
            tvl1_flow(frames, presets[name])
            times[name]["wall"].append(time.perf_counter() - wall)
            times[name]["cpu"].append(time.process_time() - cpu)
    return times


def measure_size(frames: np.ndarray, repeats: int) -> dict[str, Any]:
    """Timings, speeds and fast-vs-default deviation at one frame size."""
    import cv2

    from lgdnet.data.flow import TVL1_DEFAULT, TVL1_FAST, quantize_flow, tvl1_flow

    pairs = len(frames) - 1
    times = time_presets_interleaved(frames, repeats)
    default_flow = tvl1_flow(frames, TVL1_DEFAULT)
    fast_flow = tvl1_flow(frames, TVL1_FAST)
    deviation = np.sqrt(((fast_flow - default_flow) ** 2).sum(-1))
    magnitude = np.sqrt((default_flow ** 2).sum(-1))

    def store() -> None:
        for flow in default_flow:
            quantized = quantize_flow(flow, 20.0)
            for channel in range(2):
                cv2.imencode(".jpg", np.ascontiguousarray(quantized[..., channel]),
                             [cv2.IMWRITE_JPEG_QUALITY, 95])

    store_times = []
    for _ in range(repeats):
        start = time.process_time()
        store()
        store_times.append((time.process_time() - start) / pairs)
    result: dict[str, Any] = {"size_hw": list(frames.shape[1:3]), "flow_frames_per_call": pairs}
    for name, measured in times.items():
        wall, cpu = summarize(measured["wall"]), summarize(measured["cpu"])
        result[name] = {
            "wall_seconds_per_call": wall,
            "cpu_seconds_per_call": cpu,
            "flow_fps_per_core_wall": pairs / wall["median"],
            "flow_fps_per_core_cpu": pairs / cpu["median"],
        }
    ratios = [f / d for f, d in zip(times["fast"]["cpu"], times["default"]["cpu"])]
    result.update({
        "fast_over_default_cpu_time_ratio": summarize(ratios),
        "fast_deviation_px": {"mean": float(deviation.mean()),
                              "p95": float(np.percentile(deviation, 95)),
                              "fraction_over_1px": float((deviation > 1).mean())},
        "default_flow_mean_magnitude_px": float(magnitude.mean()),
        "store_cpu_seconds_per_flow_frame": summarize(store_times),
    })
    return result


def to_markdown(report: dict[str, Any]) -> str:
    m, v = report["machine"], report["versions"]
    lines = [
        "# Optical-flow extraction speed",
        "",
        f"Command: `{report['command']}` (from the repository root).",
        "",
        f"Date: {report['date']}."
        + (" **Quick smoke run: numbers are not meaningful.**" if report["quick"] else ""),
        "",
        f"Machine: {m['cpu_model']}, {m['usable_cores']} usable of {m['logical_cores']} "
        f"logical cores, {m['memory_gib']} GiB memory, {m['os']}; load average at start "
        f"{m['load_average_at_start']}. One process, `cv2.setNumThreads(1)`: every figure is "
        "per core.",
        "",
        f"Versions: lgdnet {v['lgdnet']} ({v['lgdnet_commit']}), OpenCV {report['opencv']}, "
        f"numpy {v['numpy']}, av {v['av']}, Python {m['python']}.",
        "",
        f"Input: frames 1-{report['frames']} of `{report['clip']}` (UCF101, 320x240), resized "
        f"by the decoder; {report['frames'] - 1} flow frames per timed call; "
        f"{report['repeats']} interleaved (default, fast) pairs per size, medians reported.",
        "",
        f"Presets: default = OpenCV's TV-L1 defaults `{report['presets']['default']}`; fast = "
        f"`--fast` `{report['presets']['fast']}` (only the differences from default).",
        "",
        "| size (HxW) | default: flow frames/s/core, CPU time (wall) | fast: flow frames/s/core, "
        "CPU time (wall) | fast/default CPU time (median [min, max]) | fast vs default: mean / "
        "p95 deviation (px) | default mean flow magnitude (px) | storing a flow frame "
        "(quantise + 2 JPEG, CPU) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        ratio = row["fast_over_default_cpu_time_ratio"]
        dev = row["fast_deviation_px"]
        lines.append(
            f"| {row['size_hw'][0]}x{row['size_hw'][1]} "
            f"| {row['default']['flow_fps_per_core_cpu']:.2f} "
            f"({row['default']['flow_fps_per_core_wall']:.2f}) "
            f"| {row['fast']['flow_fps_per_core_cpu']:.2f} "
            f"({row['fast']['flow_fps_per_core_wall']:.2f}) "
            f"| {ratio['median']:.2f} [{ratio['min']:.2f}, {ratio['max']:.2f}] "
            f"| {dev['mean']:.3f} / {dev['p95']:.3f} "
            f"| {row['default_flow_mean_magnitude_px']:.2f} "
            f"| {row['store_cpu_seconds_per_flow_frame']['median'] * 1e3:.2f} ms |"
        )
    lines += [
        "",
        "Reading the table: speeds are flow frames per second of one core, from the median "
        "CPU time of a call (`time.process_time`, one thread), close to what an otherwise idle "
        "core would take; the wall-clock figure in brackets also counts waiting for a core on "
        "this shared machine (see the load average). Extracting a dataset of N frames with "
        "`--workers K` on K free cores takes about N / (K x flow frames/s/core) seconds; "
        "decoding and storing add little. The 8-bit storage step at the default bound 20 is "
        "40/255 = 0.157 px: the fast preset's mean deviation is about one step.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import cv2

    from lgdnet.data.flow import TVL1_DEFAULT, TVL1_FAST

    args = build_parser().parse_args(argv)
    if args.quick:
        args.frames, args.repeats = 3, 2
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    started = time.perf_counter()
    try:
        clip_text = str(args.clip.resolve().relative_to(REPO_ROOT))
    except ValueError:
        clip_text = str(args.clip)
    argv_used = sys.argv[1:] if argv is None else argv
    defaults = vars(TVL1_DEFAULT)
    report: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/bench_flow.py", *argv_used]),
        "date": utc_now(),
        "quick": args.quick,
        "machine": machine_description(CPU),
        "versions": library_versions(),
        "opencv": cv2.__version__,
        "clip": clip_text,
        "frames": args.frames,
        "repeats": args.repeats,
        "presets": {"default": defaults,
                    "fast": {k: v for k, v in vars(TVL1_FAST).items() if defaults[k] != v}},
        "results": [],
    }
    for size in SIZES:
        frames = load_frames(args.clip, args.frames, size)
        row = measure_size(frames, args.repeats)
        report["results"].append(row)
        print(f"{size[0]}x{size[1]}: default {row['default']['flow_fps_per_core_cpu']:.2f}, "
              f"fast {row['fast']['flow_fps_per_core_cpu']:.2f} flow frames/s/core (CPU time)",
              flush=True)
    report["duration_s"] = round(time.perf_counter() - started, 1)

    stem = "flow_results" + (".quick" if args.quick else "")
    print(f"wrote {write_results(args.out_dir, stem, report, to_markdown(report))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
