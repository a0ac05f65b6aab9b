"""Peak memory of one configuration, measured alone in this (fresh) process.

Usage: ``python benchmarks/memory_probe.py '{"model": "lgd3d_r50", "mode": "train", ...}'``
with the fields of :class:`workloads.Workload` plus ``mode`` ("inference" | "train" | "head")
and ``device``; or ``{"probe": "evaluate", "model": ..., "views": 15, "views_per_item": 8,
"clip": PATH}`` for multi-view evaluation of one video. Prints one JSON line.

On CPU, the resident set size is read just before the measured step, the kernel's high-water
mark is reset there (``/proc/self/clear_refs``, Linux >= 4.0) and read after it (``VmHWM``;
``resource.getrusage`` where the reset is unavailable). PyTorch's CPU allocator returns large
blocks to the system, so the increase is the step's working memory (activations, gradients,
optimiser state, library scratch space). The first step is the measured one, so one-time
allocations (SGD momentum buffers, oneDNN primitive caches) are included, as in real training.
On CUDA the figure is ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workloads import Workload, num_parameters, prepare  # noqa: E402

from lgdnet.allocator import keep_freed_memory  # noqa: E402

MIB = 2**20


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark so that imports and model building do not set it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def evaluate_probe(config: dict, device: torch.device) -> dict:
    """Peak memory of ``lgdnet.engine.evaluate.evaluate`` on one video with N test views."""
    from bench_pipeline import sampling_spec
    from workloads import build_model

    from lgdnet.data import VideoDataset, VideoRecord
    from lgdnet.engine.evaluate import evaluate

    model = build_model(Workload(model=config["model"]), device)
    record = VideoRecord(path=config["clip"], label=0, video_id="probe")
    dataset = VideoDataset([record], sampling_spec(model.default_input_size, config["views"]),
                           mode="test", views_per_item=config.get("views_per_item", 8))
    views_bytes = dataset[0]["video"].numel() * 4  # the first (largest) item, decoded once here
    reset = _reset_peak_rss()
    base = _current_rss_bytes()
    evaluate(model, dataset, views_per_chunk=config.get("views_per_chunk", 8), device=device,
             progress=False)
    peak = _peak_rss_bytes()
    return {"peak_mib": peak / MIB, "step_mib": (peak - base) / MIB,
            "views_mib": views_bytes / MIB, "kind": "cpu_rss" if reset else "cpu_rss_unreset"}


def main() -> int:
    config = json.loads(sys.argv[1])
    # Working memory is measured with glibc's default allocation, which returns large freed
    # blocks at once; with keep_freed_memory (as the lgdnet command runs) the process also
    # keeps what it freed, so its peak depends on the order of allocations.
    if config.pop("keep_freed_memory", False):
        keep_freed_memory(respect_environment=False)
    device = torch.device(config.pop("device", "cpu"))
    threads = config.pop("threads", None)
    if threads:
        torch.set_num_threads(int(threads))
    if config.get("probe") == "evaluate":
        print(json.dumps(evaluate_probe(config, device)))
        return 0
    mode = config.pop("mode")
    work = Workload(**config)
    model, step = prepare(work, device, mode)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        answer = {"peak_mib": peak / MIB, "step_mib": (peak - base) / MIB, "kind": "cuda_allocated"}
    else:
        reset = _reset_peak_rss()
        base = _current_rss_bytes()
        step()
        peak = _peak_rss_bytes()
        answer = {"peak_mib": peak / MIB, "step_mib": (peak - base) / MIB,
                  "kind": "cpu_rss" if reset else "cpu_rss_unreset"}
    answer["parameters"] = num_parameters(model)
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
