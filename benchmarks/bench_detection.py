"""Speed of tube linking, frame-mAP and video-mAP at UCF101-24 test-set size (Sec. 5.6).

Generates a seeded synthetic test set shaped like UCF101-24's (910 test videos, here 900 of
200 frames, 10 proposals a frame, 24 classes): one action class per video, one or two actors
whose boxes drift as random walks, ground-truth tubes over a random action segment, two
jittered proposals per actor, one to three "confuser" tracks that score high for a wrong class
over a random stretch (the false tubes), and random clutter boxes for the rest; class scores
are Dirichlet noise except on the actors' proposals during the action, where the true class
gets Beta(6, 2), and on the confusers.
It then times, in one process and one thread (numpy only, no torch):

- ``link_videos`` (Saha et al. linking + trimming, default ``LinkingConfig``);
- ``video_map_at`` at the four UCF101-24 thresholds of Table 7, on the linked tubes and on
  120 synthetic tubes per video (108 k at full size, as many as 5 paths x 24 classes), all of
  the video's class and near a ground-truth track, so every one needs tube IoUs;
- ``frame_map`` at IoU 0.5, on every proposal scored for its top ``--frame-classes`` classes
  (all 24 by default: 43.2 M detections at full size, about 3 GB of arrays).

Times are medians over ``--repeats`` runs (wall clock and CPU time of the process).

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/bench_detection.py          # writes detection_results.*
    OMP_NUM_THREADS=1 python benchmarks/bench_detection.py --quick  # smoke run: *.quick.*
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lgdnet.detection import (
    UCF101_24_THRESHOLDS,
    FrameDetectionArrays,
    LinkingConfig,
    Tube,
    frame_map,
    link_videos,
    video_map_at,
)

BENCH_DIR = Path(__file__).resolve().parent
WIDTH, HEIGHT = 320, 240  # UCF101 frames


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=900)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--proposals", type=int, default=10, help="boxes per frame")
    parser.add_argument("--classes", type=int, default=24)
    parser.add_argument("--frame-classes", type=int, default=None,
                        help="classes kept per proposal for frame-mAP (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 40 videos of 60 frames, 1 repeat")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR)
    return parser


def actor_track(rng: np.random.Generator, frames: int) -> np.ndarray:
    """(T, 4) boxes of one actor drifting as a random walk inside the frame."""
    size = rng.uniform([30, 50], [80, 140])
    start = rng.uniform(0, [WIDTH - size[0], HEIGHT - size[1]])
    velocity = rng.normal(0, 1.5, 2)
    xy = start + np.cumsum(rng.normal(velocity, 1.0, (frames, 2)), axis=0)
    xy = np.clip(xy, 0, [WIDTH - size[0], HEIGHT - size[1]])
    return np.hstack([xy, xy + size])


def make_video(rng: np.random.Generator, frames: int, proposals: int, classes: int):
    """One synthetic video: (per-frame boxes, per-frame scores, label, ground-truth tubes)."""
    label = int(rng.integers(classes))
    actors = [actor_track(rng, frames) for _ in range(1 + int(rng.random() < 0.3))]
    first = int(rng.integers(0, frames // 2))
    last = int(rng.integers(first + frames // 4, frames))  # 0-based, inclusive
    xy = rng.uniform(0, [WIDTH - 40, HEIGHT - 40], (frames, proposals, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(20, 120, (frames, proposals, 2))], axis=2)
    scores = rng.dirichlet(np.ones(classes + 1), (frames, proposals))[..., :classes] * 0.6
    for a, track in enumerate(actors):
        for j in (2 * a, 2 * a + 1):
            boxes[:, j] = track + rng.normal(0, 3, (frames, 4))
            boxes[:, j, 2:] = np.maximum(boxes[:, j, 2:], boxes[:, j, :2] + 1)
            true = rng.beta(6, 2, last - first + 1)
            rest = scores[first : last + 1, j].sum(axis=1) - scores[first : last + 1, j, label]
            keep = np.minimum(1.0, (1 - true) / np.maximum(rest, 1e-9))
            scores[first : last + 1, j] *= keep[:, None]
            scores[first : last + 1, j, label] = true
    # Confusers: 1-3 clutter tracks that look like another class for a while (false tubes).
    for j in range(2 * len(actors), 2 * len(actors) + int(rng.integers(1, 4))):
        boxes[:, j] = actor_track(rng, frames)
        wrong = int((label + rng.integers(1, classes)) % classes)
        lo = int(rng.integers(0, frames - frames // 8))
        hi = int(rng.integers(lo + frames // 8, frames + 1))
        scores[lo:hi, j] *= 0.3
        scores[lo:hi, j, wrong] = rng.beta(6, 2, hi - lo)
    span = np.arange(first + 1, last + 2, dtype=np.float64)[:, None]
    gt = {label: [np.hstack([span, track[first : last + 1]]) for track in actors]}
    return list(boxes), list(scores), gt


def frame_detections(videos, keep: int | None) -> FrameDetectionArrays:
    """Every proposal with its ``keep`` best class scores, as columns (filled in place: at
    full size the columns are ~3 GB, so no per-video pieces are concatenated)."""
    sizes = [len(boxes) * len(boxes[0]) * min(keep or 10**9, scores[0].shape[1])
             for _, boxes, scores in videos]
    total = sum(sizes)
    index, frames, labels = (np.empty(total, dtype=np.int64) for _ in range(3))
    scores, boxes = np.empty(total), np.empty((total, 4))
    at = 0
    for v, (_, video_boxes, video_scores) in enumerate(videos):
        score = np.stack(video_scores)  # (T, n, K)
        top = np.argsort(-score, axis=2)[..., : keep or score.shape[2]]
        rows = slice(at, at + top.size)
        index[rows] = v
        frames[rows] = np.broadcast_to(np.arange(1, len(score) + 1)[:, None, None],
                                       top.shape).reshape(-1)
        labels[rows] = top.reshape(-1)
        scores[rows] = np.take_along_axis(score, top, axis=2).reshape(-1)
        boxes[rows] = np.broadcast_to(np.stack(video_boxes)[:, :, None, :],
                                      (*top.shape, 4)).reshape(-1, 4)
        at += top.size
    return FrameDetectionArrays(tuple(name for name, _, _ in videos), index, frames, labels,
                                scores, boxes)


def dense_tubes(rng: np.random.Generator, gt: dict, per_video: int) -> list:
    """``per_video`` tubes of every video, all of its ground-truth class, each a jittered
    stretch of a ground-truth track: the worst case for video-mAP (every tube needs IoUs)."""
    tubes = []
    for video, per_label in gt.items():
        label, tracks = next(iter(per_label.items()))
        for _ in range(per_video):
            track = tracks[int(rng.integers(len(tracks)))]
            lo = int(rng.integers(0, len(track) // 2))
            hi = int(rng.integers(lo + 1, len(track) + 1))
            boxes = track[lo:hi].copy()
            boxes[:, 1:] += rng.normal(0, 4, (hi - lo, 4))
            boxes[:, 3:] = np.maximum(boxes[:, 3:], boxes[:, 1:3] + 1)
            tubes.append(Tube(video, label, float(rng.random()), boxes))
    return tubes


def timed(function, repeats: int):
    """(last result, wall-clock seconds of each run, CPU seconds of each run)."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return result, walls, cpus


def summary(walls, cpus) -> dict:
    return {"wall_s_median": statistics.median(walls), "cpu_s_median": statistics.median(cpus),
            "wall_s": [round(w, 3) for w in walls], "cpu_s": [round(c, 3) for c in cpus]}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.videos, args.frames, args.repeats = 40, 60, 1
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    videos, gt = [], {}
    for i in range(args.videos):
        boxes, scores, video_gt = make_video(rng, args.frames, args.proposals, args.classes)
        videos.append((f"video_{i:04d}", boxes, scores))
        gt[f"video_{i:04d}"] = video_gt
    generation = time.perf_counter() - started
    config = LinkingConfig()

    tubes, link_wall, link_cpu = timed(lambda: link_videos(videos, config), args.repeats)
    video_aps, vmap_wall, vmap_cpu = timed(
        lambda: video_map_at(gt, tubes, UCF101_24_THRESHOLDS, num_classes=args.classes),
        args.repeats)
    many = dense_tubes(rng, gt, 120)
    _, dense_wall, dense_cpu = timed(
        lambda: video_map_at(gt, many, UCF101_24_THRESHOLDS, num_classes=args.classes),
        args.repeats)
    detections = frame_detections(videos, args.frame_classes)
    frame_ap, fmap_wall, fmap_cpu = timed(
        lambda: frame_map(gt, detections, 0.5, num_classes=args.classes), args.repeats)

    results = {
        "command": "OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "<unset>") + " python "
                   + shlex.join(["benchmarks/bench_detection.py", *(sys.argv[1:] if argv is None
                                                                     else argv)]),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__,
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                    "peak_rss_gib": round(
                        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)},
        "size": {"videos": args.videos, "frames": args.frames, "proposals": args.proposals,
                 "classes": args.classes, "seed": args.seed, "repeats": args.repeats,
                 "frame_detections": len(detections), "tubes": len(tubes),
                 "dense_tubes": len(many),
                 "ground_truth_tubes": sum(len(t) for g in gt.values() for t in g.values())},
        "linking_config": asdict(config),
        "generation_s": round(generation, 2),
        "linking": summary(link_wall, link_cpu),
        "video_map_4_thresholds": summary(vmap_wall, vmap_cpu),
        "video_map_4_thresholds_dense_tubes": summary(dense_wall, dense_cpu),
        "frame_map": summary(fmap_wall, fmap_cpu),
        "video_map": {str(t): round(r.mean_ap, 4) for t, r in video_aps.items()},
        "frame_map_0.5": round(frame_ap.mean_ap, 4),
    }
    stem = "detection_results.quick" if args.quick else "detection_results"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out_dir / f"{stem}.md").write_text(markdown(results))
    print(markdown(results))
    return 0


def markdown(r: dict) -> str:
    size, m = r["size"], r["machine"]
    rows = [("link_videos (linking + trimming)", r["linking"]),
            ("video_map_at, 4 thresholds, linked tubes", r["video_map_4_thresholds"]),
            (f"video_map_at, 4 thresholds, {size['dense_tubes']} dense tubes",
             r["video_map_4_thresholds_dense_tubes"]),
            ("frame_map at 0.5", r["frame_map"])]
    table = "\n".join(f"| {name} | {t['wall_s_median']:.2f} | {t['cpu_s_median']:.2f} | "
                      f"{t['wall_s']} |" for name, t in rows)
    return f"""# Detection linking and metrics speed

Command: `{r['command']}` (from the repository root). Date: {r['date']}.

Machine: {m['platform']}, {m['cpu_count']} logical cores (one used), Python {m['python']},
numpy {m['numpy']}; load average at the end {m['load_average_at_end']} (a shared machine);
peak resident memory of the process {m['peak_rss_gib']} GiB.

Size: {size['videos']} synthetic videos x {size['frames']} frames x {size['proposals']} proposals,
{size['classes']} classes (seed {size['seed']}, {size['repeats']} repeats, medians reported):
{size['tubes']} linked tubes, {size['ground_truth_tubes']} ground-truth tubes, {size['dense_tubes']}
"dense" tubes (120 per video, all of its class and near a ground-truth track: the worst case),
{size['frame_detections']} frame detections (generation took {r['generation_s']} s, not timed).
Linking config: `{r['linking_config']}`.

| step | wall s (median) | CPU s (median) | wall s, every repeat |
|---|---|---|---|
{table}

Sanity (synthetic data, not a result): video-mAP {r['video_map']}, frame-mAP@0.5
{r['frame_map_0.5']}.
"""


if __name__ == "__main__":
    sys.exit(main())
