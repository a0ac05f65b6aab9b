"""The input pipeline at GPU speed: training samples per CPU core, from videos and from frames.

One process, one torch thread, one decoder thread: the work of one data-loader worker. Each
training sample goes through :class:`lgdnet.data.dataset.VideoDataset` as training runs it
(decode, resize, random crop, flip, normalise):

* **3D** (LGD-3D, Sec. 5.2): 16 consecutive frames resized to 120x160, a 112x112 crop.
* **2D** (LGD-2D): 3 segments, one frame each, resized to 240x320, a 224x224 crop.

Sources: the real clips of ``tests/data/clips`` (UCF101 Xvid AVI, HMDB51 DivX AVI, Kinetics
H.264 MP4), read as videos and as JPEG frame folders written by ``lgdnet extract-frames``'s
extractor at the training size (so no resize is left). Reported: samples/s per core (CPU
time, the work; wall in brackets), frame folders against videos, and the loader cores that
one GPU needs to keep up with the training rates measured on an H200
(``benchmarks/cuda/results.efficiency.json``: ``lgd3d_r50``, bf16, channels-last, batch 16,
eager and replayed as a CUDA graph). Compiled training (``run.compile=model``) has not been
timed on a GPU here; the CUDA-graph figure is the fastest rate measured.

Run: ``python benchmarks/bench_input_rate.py [--rounds 5] [--samples 12]``; writes
``input_rate_results.md`` and ``.json`` next to this file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import library_versions, machine_description, utc_now, write_results  # noqa: E402

from lgdnet.data.annotations import VideoRecord  # noqa: E402
from lgdnet.data.dataset import VideoDataset  # noqa: E402
from lgdnet.data.frame_extraction import FrameExtractionConfig, extract_video_frames  # noqa: E402
from lgdnet.data.sampling import SamplingSpec  # noqa: E402

HERE = Path(__file__).resolve().parent
CLIPS = HERE.parent / "tests" / "data" / "clips"
INPUTS = (("v_SoccerJuggling_g23_c01.avi", "UCF101 Xvid AVI 320x240"),
          ("RATRACE_wave_f_nm_np1_fr_goo_37.avi", "HMDB51 DivX AVI 560x240"),
          ("R6llTwEh07w.mp4", "Kinetics H.264 MP4 340x256"))
SPECS = {
    "3D clip: 16 frames, 120x160 -> 112": SamplingSpec("clip", 16, train_resize=(120, 160), crop_size=112),
    "2D triple: 3 frames, 240x320 -> 224": SamplingSpec("segments", 3, train_resize=(240, 320),
                                                         crop_size=224),
}
GPU_RESULTS = HERE / "cuda" / "results.efficiency.json"


def gpu_rates() -> dict[str, float]:
    """Training clips/s of ``lgd3d_r50`` on the H200 (bf16, channels-last, batch 16)."""
    if not GPU_RESULTS.is_file():
        return {}
    rows = json.loads(GPU_RESULTS.read_text())["results"]["efficiency"]["rows"]
    rates = {}
    for row in rows:
        if (row["model"], row["mode"], row["batch"], row["dtype"]) != ("lgd3d_r50", "train", 16, "bfloat16"):
            continue
        if row["layout"] == "channels_last":
            rates["eager"] = 16 / row["model_seconds"]["median"]
        elif row["layout"] == "channels_last, CUDA graph":
            rates["CUDA graph"] = 16 / row["model_seconds"]["median"]
    return rates


def rate(dataset: VideoDataset, samples: int, rounds: int) -> dict[str, float]:
    """Median samples/s over ``rounds`` of ``samples`` items (CPU and wall clocks)."""
    dataset[0]  # open the decoder libraries once
    cpu, wall = [], []
    for r in range(rounds):
        dataset.set_epoch(r)
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        for i in range(samples):
            dataset[i % len(dataset)]
        cpu.append(samples / (time.process_time() - start_cpu))
        wall.append(samples / (time.perf_counter() - start_wall))
    return {"cpu": statistics.median(cpu), "wall": statistics.median(wall)}


def frame_folder(video: Path, size: tuple[int, int], root: Path) -> VideoRecord:
    folder = root / f"{video.stem}-{size[0]}x{size[1]}"
    count = extract_video_frames(video, folder, FrameExtractionConfig(size=size, short_side=None))
    return VideoRecord(path=str(folder), label=0, video_id=video.stem, num_frames=count)


def run(samples: int, rounds: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec_name, spec in SPECS.items():
            for file_name, description in INPUTS:
                video = CLIPS / file_name
                record = VideoRecord(path=str(video), label=0, video_id=video.stem)
                folder = frame_folder(video, spec.train_resize, Path(tmp))
                from_video = rate(VideoDataset([record], spec, decode_threads=1), samples, rounds)
                from_frames = rate(VideoDataset([folder], spec, decode_threads=1), samples, rounds)
                rows.append({"spec": spec_name, "input": description, "video": from_video,
                             "frames": from_frames,
                             "frames_over_video_cpu": from_frames["cpu"] / from_video["cpu"]})
                print(f"{spec_name} | {description}: video {from_video['cpu']:.1f}/s, "
                      f"frames {from_frames['cpu']:.1f}/s", flush=True)
    return {"rows": rows, "gpu_rates": gpu_rates(), "samples": samples, "rounds": rounds}


def to_markdown(report: dict[str, Any]) -> str:
    result = report["results"]
    gpu = result["gpu_rates"]
    lines = [
        "# The input pipeline at GPU speed", "",
        f"Command: `{report['command']}` (from the repository root). Date: {report['date']}. "
        f"Duration: {report['duration_s']:.0f} s.", "",
        f"Machine: {report['machine']['cpu_model']}, {report['machine']['usable_cores']} usable cores, "
        f"load average at start {report['machine']['load_average_at_start']}; "
        "one process, one torch thread, one decoder thread: every figure is one loader worker.",
        "",
        f"Each figure is the median over {result['rounds']} rounds of {result['samples']} training "
        "samples (decode, resize, random crop, flip, normalise through `VideoDataset`), "
        "samples/s per core by CPU time (wall time in brackets). Frame folders hold JPEG "
        "frames at the training size, written by `lgdnet extract-frames`'s extractor.", "",
        "| sample | input | video: samples/s per core | frame folder: samples/s per core | "
        "frames / video |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        v, f = row["video"], row["frames"]
        lines.append(f"| {row['spec']} | {row['input']} | {v['cpu']:.1f} ({v['wall']:.1f}) | "
                     f"{f['cpu']:.1f} ({f['wall']:.1f}) | {row['frames_over_video_cpu']:.2f}x |")
    if gpu:
        lines += [
            "", "**Loader cores per GPU.** `lgd3d_r50` training on one H200, bf16, channels-last, "
            "batch 16 (`benchmarks/cuda/RESULTS.efficiency.md`): "
            + ", ".join(f"{k} {v:.0f} clips/s" for k, v in gpu.items())
            + ". Cores = GPU rate / samples per core (3D clips):", "",
            "| input | source | " + " | ".join(f"cores at {k}" for k in gpu) + " |",
            "|---|---|" + "---|" * len(gpu),
        ]
        for row in result["rows"]:
            if not row["spec"].startswith("3D"):
                continue
            for source in ("video", "frames"):
                per_core = row[source]["cpu"]
                cells = " | ".join(f"{v / per_core:.1f}" for v in gpu.values())
                lines.append(f"| {row['input']} | {source} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = run(args.samples, args.rounds)
    report = {"command": "python benchmarks/bench_input_rate.py " + " ".join(argv or sys.argv[1:]),
              "date": utc_now(), "machine": machine_description(torch.device("cpu")),
              "versions": library_versions(),
              "results": result, "duration_s": time.perf_counter() - started}
    report["command"] = report["command"].strip()
    path = write_results(args.out_dir, "input_rate_results", report, to_markdown(report))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
