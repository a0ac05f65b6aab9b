"""``lgdnet demo --task detection``: spatio-temporal action detection (Sec. 5.6) on a CPU.

The recipe of Sec. 5.6 at toy scale, on the embedded detection dataset
(:mod:`lgdnet.data.synthetic_detection`: actors that jump, sway, walk or pulse for part of
each clip among static distractors, with per-frame proposals):

1. writes the dataset (or reuses the one a previous demo wrote with the same settings);
2. pre-trains ``lgd3d_tiny`` as a classifier on clips cropped around the actors of the
   training videos (the paper starts from an LGD-3D pre-trained on Kinetics; here the
   pre-training is action classification of the actor crops, stage 1 of Sec. 4.3, through
   :func:`lgdnet.engine.training.train`);
3. fine-tunes the detector (the classifier's backbone + an ROI head on x_L) on key-frame
   clips with :func:`lgdnet.detection.training.train_detector`;
4. detects on the held-out videos of split 1 (every frame's proposals scored by a clip
   centred on it), links tubes (Saha et al., BMVC 2016), and reports frame-mAP@0.5 and
   video-mAP@0.2/0.5 (:func:`lgdnet.detection.evaluation.evaluate_detections`) next to the
   trivial baseline: the same proposals and linker with every class given the proposal's
   own score (where the actors are, not what they do);
5. writes the tubes (``detections.json``) and an annotated video of one held-out clip.

Everything goes under one folder: ``data/``, ``pretrain/``, ``detector/``, ``results/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lgdnet.data.detection_dataset import DetectionClipSpec
from lgdnet.detection.training import DetectorTrainSettings


@dataclass(frozen=True)
class DetectionDemoSettings:
    """Sizes of the detection demo (data, pre-training, fine-tuning) for 2 CPU cores."""

    videos_per_class: int = 12
    video_frames: tuple[int, int] = (24, 40)
    video_size: tuple[int, int] = (96, 128)
    crop_size: int = 48  # side of the square actor crops of the pre-training
    pretrain_epochs: int = 50
    pretrain_lr: float = 0.02
    pretrain_batch: int = 8
    detector: DetectorTrainSettings = field(default_factory=lambda: DetectorTrainSettings(
        epochs=6, lr=0.01, lr_step=5, batch_size=8, device="cpu",
        clips=DetectionClipSpec(num_frames=8, frame_stride=2, frames="all", frame_step=4)))
    split: int = 1


DETECTION_DEMO_MODES: dict[str, DetectionDemoSettings] = {
    # at most 10 minutes on 2 CPU cores: twice the videos, longer schedules
    "full": DetectionDemoSettings(
        videos_per_class=24, pretrain_epochs=50,
        detector=DetectorTrainSettings(
            epochs=8, lr=0.01, lr_step=6, batch_size=8, device="cpu",
            clips=DetectionClipSpec(num_frames=8, frame_stride=2, frames="all", frame_step=4))),
    # `lgdnet demo --task detection --quick`: under 3 minutes
    "quick": DetectionDemoSettings(pretrain_epochs=40),
    "tiny": DetectionDemoSettings(
        videos_per_class=3, video_frames=(12, 14), video_size=(48, 64), crop_size=32,
        pretrain_epochs=1, pretrain_batch=4,
        detector=DetectorTrainSettings(epochs=1, batch_size=4, device="cpu",
                                       clips=DetectionClipSpec(num_frames=4, frame_step=4))),
}


def write_actor_crops(gt: Any, root: Path, out: Path, split: int, size: int,
                      min_idle: int = 4) -> Path:
    """Clips of the actors of the training videos, for classification pre-training.

    Each ground-truth tube gives one clip: its action frames cropped to the square around the
    union of its boxes (1.25 times its longer side, clipped to the frame) and resized to
    ``size``, labelled with the tube's class. The same square over the frames before and
    after the action (the embedded actors stand idle there, at their first or last pose),
    the longer of the two when at least ``min_idle`` frames long, gives a clip of one more
    class, ``idle``: the pre-trained features then tell acting from standing still, which
    the temporal trimming of the tubes relies on. Returns the ``list``-format training list.
    """
    from lgdnet.atomic import write_text
    from lgdnet.data.decoding import open_video
    from lgdnet.data.detection_dataset import resolve_video_path
    from lgdnet.data.synthetic import write_video
    from lgdnet.data.transforms import resize_frames

    idle, lines = len(gt.labels), []
    for video in gt.split_videos(split, "train"):
        with open_video(resolve_video_path(root, video)) as source:
            frames = source.get_frames(range(source.num_frames))
        height, width = frames.shape[1:3]
        for label, tubes in gt.tubes[video].items():
            for k, tube in enumerate(tubes):
                x1, y1 = tube[:, 1].min(), tube[:, 2].min()
                x2, y2 = tube[:, 3].max(), tube[:, 4].max()
                side = int(min(1.25 * max(x2 - x1, y2 - y1), height, width))
                left = int(np.clip(round((x1 + x2 - side) / 2), 0, width - side))
                top = int(np.clip(round((y1 + y2 - side) / 2), 0, height - side))
                first, last = int(tube[0, 0]) - 1, int(tube[-1, 0])  # 0-based, end exclusive
                # the longer idle stretch only, so that idle is not most of the clips
                still = max((0, first), (last, len(frames)), key=lambda span: span[1] - span[0])
                parts = [(label, "actor", first, last), (idle, "idle", *still)]
                for part_label, part, start, stop in parts:
                    if stop - start < (1 if part == "actor" else min_idle):
                        continue
                    clip = frames[start:stop, top : top + side, left : left + side]
                    relative = f"{video}_{part}{k}.mp4"
                    (out / relative).parent.mkdir(parents=True, exist_ok=True)
                    write_video(out / relative, resize_frames(clip, (size, size)).numpy())
                    lines.append(f"{relative} {part_label}\n")
    write_text(out / "train.txt", "".join(lines))
    write_text(out / "classes.txt", "".join(f"{name}\n" for name in [*gt.labels, "idle"]))
    return out / "train.txt"


def pretrain_config(settings: DetectionDemoSettings, crops: Path, run_dir: Path, seed: int) -> Any:
    """Stage-1 classification of the actor crops (Sec. 4.3, Eq. 6) with the engine."""
    from lgdnet.engine.config import config_from_dict

    side = settings.crop_size
    clips = settings.detector.clips
    return config_from_dict({
        "model": {"name": "lgd3d_tiny"},
        "data": {"train_list": str(crops), "root": str(crops.parent),
                 "classes": str(crops.parent / "classes.txt"), "num_frames": clips.num_frames,
                 "frame_stride": clips.frame_stride, "train_resize": [side, side],
                 "crop_size": side - side // 6, "num_workers": 0, "on_error": "raise"},
        "optim": {"lr": settings.pretrain_lr, "epochs": settings.pretrain_epochs,
                  "lr_step": max(1, settings.pretrain_epochs * 3 // 4),
                  "batch_size": settings.pretrain_batch, "grad_clip": 5.0},
        "run": {"out_dir": str(run_dir), "seed": seed, "stages": [1], "device": "cpu",
                "eval_every": 0, "final_eval": False, "log_every": 5},
    })


def _write_data(settings: DetectionDemoSettings, data_dir: Path, seed: int) -> Path:
    from lgdnet.data.synthetic_detection import write_detection_dataset

    stamp = {"videos_per_class": settings.videos_per_class, "frames": settings.video_frames,
             "size": settings.video_size, "seed": seed}
    stamp_file = data_dir / "demo-data.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == json.loads(json.dumps(stamp)):
        return data_dir / "GT.pkl"
    path = write_detection_dataset(data_dir, videos_per_class=settings.videos_per_class,
                                   seed=seed, num_frames=settings.video_frames,
                                   size=settings.video_size)
    stamp_file.write_text(json.dumps(stamp))
    return path


def _elapsed(started: float) -> str:
    return f"{time.perf_counter() - started:.0f} s so far"


def _pretrain(settings: DetectionDemoSettings, gt: Any, data_dir: Path, out: Path,
              seed: int) -> Path:
    """The pre-trained classifier: trained now, or reused from a previous demo run with the
    same data and pre-training settings."""
    from lgdnet.engine.training import train

    run_dir = out / "pretrain"
    stamp = json.loads(json.dumps({
        "data": json.loads((data_dir / "demo-data.json").read_text()),
        "crop_size": settings.crop_size, "epochs": settings.pretrain_epochs,
        "lr": settings.pretrain_lr, "batch": settings.pretrain_batch, "seed": seed,
        "clips": dataclasses.asdict(settings.detector.clips), "split": settings.split}))
    stamp_file, best = run_dir / "demo-pretrain.json", run_dir / "best.safetensors"
    if best.is_file() and stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return best
    crops = write_actor_crops(gt, data_dir / "videos", out / "crops", settings.split,
                              settings.crop_size)
    summary = train(pretrain_config(settings, crops, run_dir, seed))
    stamp_file.write_text(json.dumps(stamp))
    return Path(summary["best_checkpoint"])


def _line(name: str, result: dict[str, Any]) -> str:
    video = "  ".join(f"video-mAP@{k} {100 * v:5.1f}" for k, v in result["video_mAP"].items())
    return f"      {name:<24} frame-mAP@0.5 {100 * result['frame_mAP']['0.5']:5.1f}  {video}"


def run_detection_demo(
    out_dir: str | os.PathLike = "lgdnet-demo-detection",
    *,
    mode: str = "full",
    seed: int = 0,
    progress: bool = True,
    settings: DetectionDemoSettings | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the detection demo (see the module docstring) and return its results.

    Args:
        out_dir: the demo folder (created).
        mode: ``"full"`` (at most 10 minutes on 2 CPU cores), ``"quick"`` (under 3) or
            ``"tiny"`` (seconds; for tests).
        seed: seeds the dataset and the training.
        progress: show progress bars.
        settings: overrides the mode's :class:`DetectionDemoSettings`.
        echo: where the report lines go.

    Returns:
        ``detector`` and ``baseline`` (each :func:`evaluate_detections`' dict), ``paths``,
        ``seconds``, ``settings``.
    """
    import torch

    from lgdnet.data.detection_annotations import load_detection_gt, load_proposals
    from lgdnet.detection.evaluation import evaluate_detections
    from lgdnet.detection.inference import detect_split, uniform_detections
    from lgdnet.detection.io import save_detections
    from lgdnet.detection.training import load_detector, train_detector

    if mode not in DETECTION_DEMO_MODES:
        raise ValueError(f"mode must be one of {sorted(DETECTION_DEMO_MODES)}, got {mode!r}")
    settings = settings or DETECTION_DEMO_MODES[mode]
    detector_settings = dataclasses.replace(settings.detector, seed=seed, progress=progress)
    started = time.perf_counter()
    out = Path(out_dir).resolve()
    data_dir, results = out / "data", out / "results"
    torch.manual_seed(seed)

    echo(f"lgdnet demo --task detection ({mode}): spatio-temporal action detection with "
         "LGD-3D's local features (Sec. 5.6) on the CPU")
    echo(f"[1/5] writing the embedded detection dataset to {data_dir}")
    gt_path = _write_data(settings, data_dir, seed)
    gt = load_detection_gt(gt_path)
    proposals = load_proposals(data_dir / "proposals.json", gt)
    train_videos, test_videos = (gt.split_videos(settings.split, s) for s in ("train", "test"))
    echo(f"      {len(train_videos)} training and {len(test_videos)} held-out videos of "
         f"{settings.video_size[0]}x{settings.video_size[1]}; classes: {', '.join(gt.labels)}")

    echo(f"[2/5] pre-training lgd3d_tiny to classify actor crops of the training videos "
         f"(their actions, and 'idle'; {settings.pretrain_epochs} epochs, Eq. 6)")
    classifier = _pretrain(settings, gt, data_dir, out, seed)
    echo(f"      {_elapsed(started)}; classifier {classifier}")

    echo(f"[3/5] fine-tuning the detector (backbone + ROI head on x_L) for "
         f"{detector_settings.epochs} epochs into {out / 'detector'}")
    result = train_detector(gt_path, data_dir / "proposals.json", data_dir / "videos",
                            classifier, out / "detector", split=settings.split,
                            settings=detector_settings)
    detector, _, classes = load_detector(result["checkpoint"])
    echo(f"      {_elapsed(started)}; detector {result['checkpoint']}")

    echo(f"[4/5] detecting on the {len(test_videos)} held-out videos, linking tubes")
    tubes, frames, skipped = detect_split(detector, gt, proposals, data_dir / "videos",
                                          settings.split, spec=detector_settings.clips,
                                          progress=progress)
    metrics = evaluate_detections(gt, tubes, frames, settings.split)
    base_tubes, base_frames = uniform_detections(gt, proposals, settings.split)
    baseline = evaluate_detections(gt, base_tubes, base_frames, settings.split)
    echo(f"      {_elapsed(started)}; {len(tubes)} tubes"
         + (f", {len(skipped)} unreadable video(s) skipped" if skipped else ""))
    echo(_line("LGD-3D detector", metrics))
    echo(_line("baseline: proposal scores, same for every class", baseline))
    ours, theirs = metrics["video_mAP"]["0.5"], baseline["video_mAP"]["0.5"]
    echo(f"      video-mAP@0.5 {100 * ours:.1f} vs {100 * theirs:.1f}: "
         f"{'above' if ours > theirs else 'NOT above'} the baseline")

    results.mkdir(parents=True, exist_ok=True)
    detections = results / "detections.json"
    save_detections(detections, tubes, frames, meta={"checkpoint": result["checkpoint"],
                                                     "split": settings.split})
    (results / "metrics.json").write_text(json.dumps(
        {"detector": metrics, "baseline": baseline, "skipped": skipped}, indent=2))
    from lgdnet.data.detection_dataset import resolve_video_path
    from lgdnet.detection.visualize import write_annotated_video

    shown = test_videos[0]
    visual = write_annotated_video(
        results / f"{shown.replace('/', '_')}.mp4", resolve_video_path(data_dir / "videos", shown),
        [t for t in tubes if t.video == shown], classes, ground_truth=gt.tubes[shown])
    echo(f"[5/5] tubes of held-out video {shown} drawn into {visual}")
    seconds = time.perf_counter() - started
    echo(f"done in {seconds / 60:.1f} min: detections {detections}, metrics "
         f"{results / 'metrics.json'}, detector {result['checkpoint']}")
    return {"detector": metrics, "baseline": baseline, "seconds": seconds, "skipped": skipped,
            "paths": {"data": str(data_dir), "classifier": str(classifier),
                      "checkpoint": result["checkpoint"], "detections": str(detections),
                      "visualisation": str(visual)},
            "settings": dataclasses.asdict(settings)}
