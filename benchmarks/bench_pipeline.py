"""Input pipeline (issue item 5) and multi-view evaluation memory (item 6).

* **Pipeline**: the engine's own training loop (``lgdnet.engine.training.train_one_epoch``)
  fed by the real loader (``VideoDataset`` decoding the real test clips with PyAV, random
  crops, the training stage's loader, ``lgdnet.engine.stage_loader.StageLoader``, with the
  default ``data.num_workers`` workers, started once as in a training stage) against the same
  loop fed with the same batches already in memory. One real epoch runs first (the workers'
  start-up, once per stage); then epochs of the two kinds alternate, the first step of each
  left out, so the figure is the steady state. The ratio of throughputs (clips/s real /
  clips/s pre-loaded) is the target: at least 90%.
* **Views**: peak memory of ``lgdnet.engine.evaluate.evaluate`` on one real video at 15, 30
  and 60 test views (full-frame 16-frame clips), each in a fresh process: with the library's
  default of 8 views per loader item (``data.test_views_per_item``), which decodes and scores
  8 views at a time and should stay flat, and with all the views of the video in one item,
  whose decoded views tensor grows with the count.

Run alone: ``python benchmarks/bench_pipeline.py [--quick]``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import REPO_ROOT, BenchOptions, measure_memory, summarize  # noqa: E402
from workloads import Workload, build_model  # noqa: E402

CLIPS_DIR = REPO_ROOT / "tests" / "data" / "clips"
CLIP_FILES = ("v_SoccerJuggling_g23_c01.avi", "RATRACE_wave_f_nm_np1_fr_goo_37.avi",
              "R6llTwEh07w.mp4")
BATCH = 4
VIEWS_PER_ITEM = (8, 0)  # the library's default, and all views in one item
VIEW_COUNTS = (15, 30, 60)
TARGET = 0.90


def sampling_spec(input_size: tuple[int, int, int], views: int = 1) -> Any:
    """The 3D sampling of the paper scaled to ``input_size`` (16x112x112: resize to 120x160)."""
    from lgdnet.data import SamplingSpec

    t, h, _ = input_size
    return SamplingSpec(scheme="clip", num_frames=t, num_test_views=views, crop_size=h,
                        train_resize=(round(h * 120 / 112), round(h * 160 / 112)),
                        test_short_side=round(h * 120 / 112))


def real_records(count: int) -> list[Any]:
    from lgdnet.data import VideoRecord

    files = [CLIPS_DIR / name for name in CLIP_FILES]
    return [VideoRecord(path=str(files[i % len(files)]), label=i % len(files),
                        video_id=f"{files[i % len(files)].stem}_{i}") for i in range(count)]


def _epoch(model: torch.nn.Module, loader: Any, optimizer: Any, device: torch.device) -> list[float]:
    """Run one epoch of the engine's loop; return the duration of each optimiser step."""
    from lgdnet.engine.training import train_one_epoch

    stamps = [time.perf_counter()]
    train_one_epoch(model, loader, optimizer, device=device,
                    on_step=lambda record: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:])]


def pipeline(opts: BenchOptions) -> dict[str, Any]:
    from lgdnet.data import VideoDataset
    from lgdnet.engine.config import DataConfig
    from lgdnet.engine.optimizer import make_sgd
    from lgdnet.engine.stage_loader import StageLoader
    from lgdnet.engine.training import collate_train

    device = opts.device
    name = "lgd3d_tiny" if opts.quick else "lgd3d_r50"
    steps = 3 if opts.quick else 4  # per epoch; the first one is left out
    rounds = 3
    workers = DataConfig.__dataclass_fields__["num_workers"].default
    model = build_model(Workload(model=name, batch=BATCH), device)
    dataset = VideoDataset(real_records(steps * BATCH), sampling_spec(model.default_input_size),
                           mode="train")
    optimizer = make_sgd([{"params": list(model.parameters())}], lr=1e-4, momentum=0.9,
                         weight_decay=1e-4)

    preloaded = list(torch.utils.data.DataLoader(dataset, batch_size=BATCH,
                                                 collate_fn=collate_train))
    # the training stage's loader, as lgdnet train builds it: workers kept across epochs
    stage = StageLoader(dataset, BATCH, workers, collate_fn=collate_train,
                        pin_memory=device.type == "cuda")
    epochs = iter(range(1, 10**6))

    def real_loader() -> Any:
        return stage.epoch(next(epochs), range(len(dataset)))

    _epoch(model, preloaded[:1], optimizer, device)  # warm-up
    _epoch(model, real_loader(), optimizer, device)  # the workers' start, once per stage
    ratios, real_steps, pre_steps = [], [], []
    for r in range(rounds):
        order = ("real", "pre") if r % 2 == 0 else ("pre", "real")
        got = {}
        for kind in order:
            durations = _epoch(model, real_loader() if kind == "real" else preloaded,
                               optimizer, device)[1:]
            got[kind] = durations
        real_steps += got["real"]
        pre_steps += got["pre"]
        ratios.append(sum(got["pre"]) / sum(got["real"]))  # throughput real / pre-loaded
    stage.close()
    return {
        "model": name, "batch": BATCH, "num_workers": workers, "steps_per_epoch": steps,
        "rounds": rounds, "clip_shape": list(preloaded[0]["video"].shape[1:]),
        "real_step_seconds": summarize(real_steps), "preloaded_step_seconds": summarize(pre_steps),
        "real_clips_per_second": BATCH / statistics.median(real_steps),
        "preloaded_clips_per_second": BATCH / statistics.median(pre_steps),
        "throughput_ratio": {**summarize(ratios), "values": ratios},
    }


def views_memory(opts: BenchOptions) -> dict[str, Any]:
    name = "lgd3d_tiny" if opts.quick else "lgd3d_r50"
    rows = []
    for per_item in VIEWS_PER_ITEM:
        for views in VIEW_COUNTS:
            print(f"[pipeline] evaluation memory, {views} views, {per_item or 'all'} per item",
                  flush=True)
            entry = measure_memory({"probe": "evaluate", "model": name, "views": views,
                                    "views_per_item": per_item,
                                    "clip": str(CLIPS_DIR / CLIP_FILES[0]),
                                    "device": str(opts.device), "threads": torch.get_num_threads()})
            rows.append({"views": views, "views_per_item": per_item, **entry})
    return {"model": name, "clip": CLIP_FILES[0], "views_per_chunk": 8, "rows": rows}


def pipeline_in_fresh_process(opts: BenchOptions) -> dict[str, Any]:
    """:func:`pipeline` in a process of its own, as ``lgdnet train`` runs a training loop.

    The loader forks its workers at every epoch; in the long-lived benchmark process the
    heap that the earlier sections leave behind (kept for reuse, ``keep_freed_memory``) is
    shared copy-on-write with every worker, which slows the short epochs measured here.
    """
    import json
    import subprocess

    command = [sys.executable, __file__, "--pipeline-json", "--device", str(opts.device)]
    if opts.quick:
        command.append("--quick")
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    raise RuntimeError("pipeline subprocess failed: " + " | ".join(tail))


def run(opts: BenchOptions) -> dict[str, Any]:
    print("[pipeline] real loader vs pre-loaded batches (fresh process)", flush=True)
    result: dict[str, Any] = {"target": TARGET, "pipeline": pipeline_in_fresh_process(opts)}
    result["views"] = views_memory(opts) if opts.memory else {"skipped": "--no-memory"}
    return result


def to_markdown(result: dict[str, Any]) -> str:
    p = result["pipeline"]
    r = p["throughput_ratio"]
    lines = [
        f"**Input pipeline.** `{p['model']}`, batch {p['batch']}, clips {p['clip_shape']} "
        f"decoded from the three real test videos (UCF101 Xvid, HMDB51 DivX, Kinetics H.264) "
        f"with {p['num_workers']} loader workers kept across epochs (the training stage's "
        f"`StageLoader`), through `train_one_epoch`; one real epoch for the workers' start "
        f"(once per stage), then {p['rounds']} alternating rounds of {p['steps_per_epoch']}-step "
        "epochs, first step of each epoch left out; in a fresh process, as `lgdnet train` runs.",
        "",
        "| feed | median step | clips/s |",
        "|---|---|---|",
        f"| real loader | {p['real_step_seconds']['median']:.2f} s | {p['real_clips_per_second']:.2f} |",
        f"| pre-loaded tensors | {p['preloaded_step_seconds']['median']:.2f} s | "
        f"{p['preloaded_clips_per_second']:.2f} |",
        "",
        f"Throughput with the real loader / pre-loaded (median over rounds): **{r['median']:.1%}** "
        f"[{r['min']:.1%}, {r['max']:.1%}]; target at least {result['target']:.0%}.",
        "",
    ]
    v = result["views"]
    if "skipped" in v:
        lines.append(f"Multi-view evaluation memory: skipped ({v['skipped']}).")
        return "\n".join(lines)
    lines += [
        f"**Multi-view evaluation memory.** `{v['model']}`, `evaluate()` on {v['clip']} "
        f"(full-frame views, forward passes of {v['views_per_chunk']} views), one fresh process "
        "per row. Peak RSS increase over the process before evaluation, the decoded views "
        "tensor of the largest loader item, and the increase without it. The library's default "
        "is 8 views per item (`data.test_views_per_item`; `lgdnet eval --views-per-chunk`).",
        "",
        "| views | views per item | peak RSS, MiB | increase, MiB | largest item, MiB | "
        "increase minus item, MiB |",
        "|---|---|---|---|---|---|",
    ]
    for row in v["rows"]:
        per_item = row.get("views_per_item") or "all"
        if "error" in row:
            lines.append(f"| {row['views']} | {per_item} | error: {row['error'][:80]} | | | |")
            continue
        lines.append(f"| {row['views']} | {per_item} | {row['peak_mib']:.0f} | "
                     f"{row['step_mib']:.0f} | {row['views_mib']:.0f} | "
                     f"{row['step_mib'] - row['views_mib']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if "--pipeline-json" in sys.argv:  # the fresh process of pipeline_in_fresh_process
        import json

        from run_all import build_parser, options_from_args

        from lgdnet.allocator import keep_freed_memory

        keep_freed_memory()
        args = build_parser().parse_args([a for a in sys.argv[1:] if a != "--pipeline-json"])
        print(json.dumps(pipeline(options_from_args(args)), default=str))
        raise SystemExit(0)
    from run_all import main_for_section

    raise SystemExit(main_for_section("pipeline"))
