"""``lgdnet demo``: train and evaluate a small LGD-3D on the embedded dataset, on a CPU.

The demo walks through the whole job of the library in a few minutes:

1. writes the embedded synthetic dataset (``lgdnet.data.synthetic``: classes told apart only
   by how objects move relative to each other, never by one frame);
2. trains ``lgd3d_tiny`` through both stages of Sec. 4.3 (Eq. 6, then the combination
   classifier and Eq. 7) with :func:`lgdnet.engine.training.train`;
3. evaluates the final checkpoint on the held-out clips with multi-clip inference (Sec. 5.2:
   softmax scores averaged over uniformly spaced clips) and prints the accuracy next to
   chance;
4. predicts one held-out clip with :func:`lgdnet.load`, as a user would.

Everything goes under one folder (``./lgdnet-demo`` by default): ``data/`` (the videos and
lists), ``run/`` (checkpoints, ``best.safetensors``, metrics, ``training_curves.png``) and
``run/eval/`` (``scores.npz``, ``metrics.json``, ``confusion_matrix.png``).

The orbit pair of the embedded dataset is left out: random horizontal flips (Sec. 5.2) turn a
clockwise orbit into a counter-clockwise one, so their labels would be noisy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEMO_CLASSES = ("approach", "separate", "toward_marker", "away_from_marker", "move_together",
                "pass_by")


@dataclass(frozen=True)
class DemoSettings:
    """Size of the demo: data, clips, schedule, sized for the time budget of each mode on
    2 CPU cores. The network is trained from scratch on clips whose class is only in the
    relative motion of small objects, so accuracy varies from seed to seed."""

    classes: tuple[str, ...] = DEMO_CLASSES
    clips_per_class: int = 40
    val_fraction: float = 0.25
    video_frames: int = 16  # frames written per clip; the motion spans all of them
    video_size: tuple[int, int] = (48, 64)
    clutter: float = 1.0  # background blobs, distractor dots and noise (0: plain background)
    clip_frames: int = 8  # frames per training clip (Sec. 4.2 uses 16)
    frame_stride: int = 2  # so one clip sees the whole motion
    crop_size: int = 40
    test_views: int = 5  # clips per held-out video (the paper: 15)
    stage1_epochs: int = 25
    stage2_epochs: int = 3
    lr: float = 0.05
    stage2_lr: float = 0.01
    lr_step: int = 19  # one division by 10, after 3/4 of stage 1 (Sec. 5.2 divides every 20)
    batch_size: int = 8
    sketch_dim: int = 512
    base_width: int = 8


DEMO_MODES: dict[str, DemoSettings] = {
    # at most 10 minutes on 2 CPU cores
    "full": DemoSettings(clips_per_class=60, stage1_epochs=60, lr_step=45, stage2_epochs=4),
    # `lgdnet demo --quick`: about 2 minutes
    "quick": DemoSettings(stage1_epochs=30, stage2_epochs=2, lr_step=23, test_views=3),
    # for the test suite: proves the pipeline runs, not that it learns
    "tiny": DemoSettings(classes=DEMO_CLASSES[:3], clips_per_class=4, video_frames=8,
                         video_size=(32, 32), clip_frames=4, frame_stride=1, crop_size=32,
                         test_views=2, stage1_epochs=1, stage2_epochs=1, batch_size=4,
                         sketch_dim=64, lr_step=1),
}


def demo_config(settings: DemoSettings, dataset: Any, run_dir: Path, seed: int) -> Any:
    """The training configuration of the demo (a regular :class:`~lgdnet.engine.config.Config`,
    saved with every checkpoint, so ``lgdnet eval``/``predict`` work on the result)."""
    from lgdnet.engine.config import config_from_dict

    height, width = settings.video_size
    return config_from_dict({
        "model": {"name": "lgd3d_tiny", "sketch_dim": settings.sketch_dim,
                  "options": {"base_width": settings.base_width}},
        "data": {"train_list": str(dataset.train_list), "val_list": str(dataset.val_list),
                 "root": str(dataset.root), "classes": str(dataset.classes_file),
                 "num_frames": settings.clip_frames, "frame_stride": settings.frame_stride,
                 "train_resize": [height, width], "crop_size": settings.crop_size,
                 "test_short_side": min(height, width), "num_test_views": settings.test_views,
                 "num_workers": 0, "on_error": "raise"},
        "optim": {"lr": settings.lr, "stage2_lr": settings.stage2_lr,
                  "lr_step": settings.lr_step, "epochs": settings.stage1_epochs,
                  "stage2_epochs": settings.stage2_epochs, "batch_size": settings.batch_size},
        "run": {"out_dir": str(run_dir), "seed": seed, "device": "cpu", "eval_every": 1,
                "final_eval": False, "log_every": 5},
    })


def write_demo_data(settings: Any, data_dir: Path, seed: int, progress: bool) -> Any:
    """Write the embedded dataset, or reuse the one a previous demo wrote with these settings.

    ``settings`` needs ``classes``, ``clips_per_class``, ``video_frames``, ``video_size``,
    ``val_fraction`` and optionally ``clutter`` (a :class:`DemoSettings` or alike).
    """
    from lgdnet.data.synthetic import SyntheticDataset, write_synthetic_dataset

    clutter = float(getattr(settings, "clutter", 1.0))

    stamp = {"classes": list(settings.classes), "clips_per_class": settings.clips_per_class,
             "frames": settings.video_frames, "size": list(settings.video_size),
             "val_fraction": settings.val_fraction, "clutter": clutter, "seed": seed}
    stamp_file = data_dir / "demo-data.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        num_val = round(settings.clips_per_class * settings.val_fraction)
        return SyntheticDataset(data_dir, data_dir / "train.txt", data_dir / "val.txt",
                                data_dir / "classes.txt", data_dir / "README.md",
                                list(settings.classes),
                                (settings.clips_per_class - num_val) * len(settings.classes),
                                num_val * len(settings.classes))
    dataset = write_synthetic_dataset(
        data_dir, clips_per_class=settings.clips_per_class, seed=seed,
        num_frames=settings.video_frames, size=settings.video_size,
        val_fraction=settings.val_fraction, classes=list(settings.classes), progress=progress,
        clutter=clutter)
    stamp_file.write_text(json.dumps(stamp))
    return dataset


def run_demo(
    out_dir: str | os.PathLike = "lgdnet-demo",
    *,
    mode: str = "full",
    seed: int = 0,
    progress: bool = True,
    settings: DemoSettings | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the demo (see the module docstring) and return its results.

    Args:
        out_dir: the demo folder (created); ``data/``, ``run/`` and ``run/eval/`` go in it.
        mode: ``"full"`` (at most 10 minutes on 2 CPU cores), ``"quick"`` (about 2 minutes)
            or ``"tiny"`` (seconds; for tests).
        seed: seeds the dataset and the training.
        progress: show progress bars.
        settings: overrides the mode's :class:`DemoSettings`.
        echo: where the report lines go.

    Returns:
        ``metrics`` (top-1, top-5, mean class accuracy of the multi-clip evaluation),
        ``chance``, ``checkpoint``, ``prediction`` (video, true class, top-5), ``paths`` and
        ``seconds``.
    """
    import torch

    from lgdnet.data import load_annotations
    from lgdnet.engine.config import config_to_dict
    from lgdnet.engine.evaluate import evaluate, format_metrics, save_evaluation
    from lgdnet.engine.predict import load_predictor
    from lgdnet.engine.training import train

    if mode not in DEMO_MODES:
        raise ValueError(f"mode must be one of {sorted(DEMO_MODES)}, got {mode!r}")
    settings = settings or DEMO_MODES[mode]
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    data_dir, run_dir = out_dir / "data", out_dir / "run"
    torch.manual_seed(seed)

    chance = 1.0 / len(settings.classes)
    echo(f"lgdnet demo ({mode}): a small LGD-3D learns {len(settings.classes)} motion classes "
         f"from scratch on the CPU")
    echo(f"[1/4] writing the embedded dataset to {data_dir}")
    dataset = write_demo_data(settings, data_dir, seed, progress)
    echo(f"      {dataset.num_train} training and {dataset.num_val} held-out clips of "
         f"{settings.video_frames} frames at {settings.video_size[0]}x{settings.video_size[1]}; "
         f"classes: {', '.join(dataset.classes)}")

    config = demo_config(settings, dataset, run_dir, seed)
    echo(f"[2/4] training lgd3d_tiny into {run_dir}: stage 1 (Eq. 6) for "
         f"{settings.stage1_epochs} epochs, then stage 2 (combination classifier, Eq. 7) for "
         f"{settings.stage2_epochs}")
    summary = train(config)
    checkpoint = Path(summary["best_checkpoint"])

    echo(f"[3/4] multi-clip evaluation of {checkpoint.name} on the held-out clips "
         f"({settings.test_views} clips per video, softmax scores averaged, Sec. 5.2)")
    predictor = load_predictor(checkpoint, device="cpu")
    annotations = load_annotations(dataset.val_list, root=dataset.root,
                                   classes=predictor.classes)
    result = evaluate(predictor.model, predictor.dataset(annotations.records),
                      progress=progress, description="evaluation")
    paths = save_evaluation(result, run_dir / "eval", predictor.classes,
                            config=config_to_dict(config), extra={"checkpoint": str(checkpoint)})
    echo(f"      {format_metrics(result.metrics, len(predictor.classes))}")
    verdict = "above" if result.metrics["top1"] > chance else "NOT above"
    echo(f"      accuracy {100 * result.metrics['top1']:.1f}% vs chance "
         f"{100 * chance:.1f}%: {verdict} chance")

    # one held-out clip, as a user would: lgdnet.load(checkpoint).predict(path)
    record = annotations.records[len(annotations.records) // 2]
    predictions = predictor.predict(record.path, top_k=5)
    true_name = predictor.classes[record.label]
    echo(f"[4/4] predicting one held-out clip: {record.path}")
    echo(f"      true class: {true_name}")
    for name, probability in predictions:
        mark = "  <- true class" if name == true_name else ""
        echo(f"      {name:<18} {100 * probability:5.1f}%{mark}")

    paths = {"data": data_dir, "run": run_dir, "checkpoint": checkpoint,
             "training_curves": run_dir / "training_curves.png", **paths}
    seconds = time.perf_counter() - started
    echo(f"done in {seconds / 60:.1f} min. Where everything went:")
    for kind, path in paths.items():
        if Path(path).exists():
            echo(f"      {kind.replace('_', ' '):<17} {path}")
    echo(f"try: lgdnet predict {record.path} --checkpoint {checkpoint}")
    return {"metrics": result.metrics, "chance": chance, "checkpoint": str(checkpoint),
            "prediction": {"video": record.path, "true": true_name, "top5": predictions},
            "paths": {k: str(v) for k, v in paths.items()}, "seconds": seconds,
            "settings": dataclasses.asdict(settings)}
