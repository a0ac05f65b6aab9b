"""``lgdnet demo``: show, on a CPU in minutes, what the LGD block's global path is for.

The demo trains on the *far relation task* (``lgdnet.data.synthetic_relations``): two
columns of objects at opposite edges of a 72x72 frame, each warm- or cool-coloured at
random, the class whether the two colours agree. The columns lie farther apart (at least
40 px) than the receptive field of the tiny networks' last local map (39 px, measured by
``lgdnet.apps.relations.measure_receptive_field``), so no local unit ever sees both; a plain
network that pools its local map before a linear classifier cannot tell the classes, while
the LGD block's global vector, fed back into every position (Eq. 2-3), can relate them.

1. writes the far-task dataset;
2. trains ``lgd3d_tiny`` (stage 1, Eq. 6) with :func:`lgdnet.engine.training.train`;
3. evaluates it on the held-out clips (Sec. 5.2) and prints the accuracy next to chance;
4. (full mode) trains the plain ``p3d_tiny`` with the same data, order and schedule and
   prints its accuracy beside;
5. predicts one held-out clip with the LGD network, as a user would.

Everything goes under one folder (``./lgdnet-demo`` by default): ``data/``, ``run/`` (the
LGD network: checkpoints, ``best.safetensors``, metrics, ``training_curves.png``),
``run/eval/`` (``scores.npz``, ``metrics.json``, ``confusion_matrix.png``) and ``plain/``.

The embedded action dataset's demo classes (:data:`DEMO_CLASSES`, :func:`write_demo_data`)
stay here for :mod:`lgdnet.apps.ablation`.
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

from lgdnet.atomic import write_text

DEMO_CLASSES = ("approach", "separate", "toward_marker", "away_from_marker", "move_together",
                "pass_by")


@dataclass(frozen=True)
class DemoSettings:
    """Size of the demo, sized for each mode's time on 2 CPU cores (one training thread).
    The dataset is the relation task ``task`` (``"far"`` or the ``"near"`` control) of
    ``relation``; ``classes`` are that relation's two classes."""

    task: str = "far"
    relation: str = "colour"
    classes: tuple[str, ...] = ("same_colour", "different_colour")
    clips_per_class: int = 200
    val_fraction: float = 0.25
    video_frames: int = 8
    size: int = 72  # square frames; the training view is the whole frame (random flips)
    objects: int = 3  # objects per column
    clip_frames: int = 4
    frame_stride: int = 2
    test_views: int = 1  # one clip covers the whole video
    stage1_epochs: int = 10
    stage2_epochs: int = 0  # the combination classifier (Eq. 7) after stage 1; 0: none
    lr: float = 0.02  # 0.05 made LGD runs on this task diverge
    stage2_lr: float = 0.01
    lr_step: int = 8  # one division by 10, for the last fifth of stage 1
    batch_size: int = 8
    sketch_dim: int = 512
    base_width: int = 8
    # the authors' code's initialisation (Kaiming convolutions, projection biases, W1 of
    # W^{x,g} zero): on the far task it trained every LGD-3D seed, Xavier (Sec. 5.2) 7 of 10
    # (docs/ablations.md); "paper" for the paper's
    init_scheme: str = "authors"
    grad_clip: float = 0.0
    plain: bool = True  # also train the plain P3D network, for comparison


DEMO_MODES: dict[str, DemoSettings] = {
    # about 3 minutes on 2 CPU cores: the LGD network and the plain one
    "full": DemoSettings(),
    # `lgdnet demo --quick`: under a minute, the LGD network only
    "quick": DemoSettings(clips_per_class=100, stage1_epochs=8, lr_step=6, plain=False),
    # for the test suite: proves the pipeline runs, not that it learns
    "tiny": DemoSettings(clips_per_class=4, stage1_epochs=1, stage2_epochs=1, lr_step=1,
                         batch_size=4, sketch_dim=64, plain=False),
}


def demo_config(settings: DemoSettings, dataset: Any, run_dir: Path, seed: int,
                model_name: str = "lgd3d_tiny") -> Any:
    """The training configuration of the demo (a regular :class:`~lgdnet.engine.config.Config`,
    saved with every checkpoint, so ``lgdnet eval``/``predict`` work on the result)."""
    from lgdnet.engine.config import config_from_dict

    side = settings.size
    return config_from_dict({
        "model": {"name": model_name, "sketch_dim": settings.sketch_dim,
                  "options": {"base_width": settings.base_width,
                              "init_scheme": settings.init_scheme}},
        "data": {"train_list": str(dataset.train_list), "val_list": str(dataset.val_list),
                 "root": str(dataset.root), "classes": str(dataset.classes_file),
                 "num_frames": settings.clip_frames, "frame_stride": settings.frame_stride,
                 "train_resize": [side, side], "crop_size": side, "test_short_side": side,
                 "num_test_views": settings.test_views, "num_workers": 0, "on_error": "raise"},
        "optim": {"lr": settings.lr, "stage2_lr": settings.stage2_lr,
                  "lr_step": settings.lr_step, "epochs": settings.stage1_epochs,
                  "stage2_epochs": max(1, settings.stage2_epochs), "batch_size": settings.batch_size,
                  "grad_clip": settings.grad_clip},
        "run": {"out_dir": str(run_dir), "seed": seed, "device": "cpu", "eval_every": 1,
                "final_eval": False, "log_every": 10,
                "stages": [1, 2] if settings.stage2_epochs else [1]},
    })


def _reuse_demo_data(settings: Any, data_dir: Path, stamp: dict[str, Any]) -> Any:
    """The dataset a previous demo wrote into ``data_dir`` with the same ``stamp``, or None."""
    from lgdnet.data.synthetic import SyntheticDataset

    stamp_file = data_dir / "demo-data.json"
    if not (stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp):
        return None
    num_val = round(settings.clips_per_class * settings.val_fraction)
    return SyntheticDataset(data_dir, data_dir / "train.txt", data_dir / "val.txt",
                            data_dir / "classes.txt", data_dir / "README.md",
                            list(settings.classes),
                            (settings.clips_per_class - num_val) * len(settings.classes),
                            num_val * len(settings.classes))


def write_relation_demo_data(settings: DemoSettings, data_dir: Path, seed: int, progress: bool) -> Any:
    """Write the demo's relation dataset, or reuse the one a previous demo wrote alike."""
    from lgdnet.data.synthetic_relations import write_relation_dataset

    stamp = {"task": settings.task, "relation": settings.relation, "size": settings.size,
             "clips_per_class": settings.clips_per_class, "frames": settings.video_frames,
             "val_fraction": settings.val_fraction, "objects": settings.objects, "seed": seed}
    reused = _reuse_demo_data(settings, data_dir, stamp)
    if reused is not None:
        return reused
    dataset = write_relation_dataset(
        data_dir, relation=settings.relation, layout=settings.task,
        clips_per_class=settings.clips_per_class, seed=seed, num_frames=settings.video_frames,
        size=(settings.size, settings.size), val_fraction=settings.val_fraction,
        objects=settings.objects, progress=progress)
    write_text(data_dir / "demo-data.json", json.dumps(stamp))
    return dataset


def write_demo_data(settings: Any, data_dir: Path, seed: int, progress: bool) -> Any:
    """Write the embedded dataset, or reuse the one a previous demo wrote with these settings.

    ``settings`` needs ``classes``, ``clips_per_class``, ``video_frames``, ``video_size``,
    ``val_fraction`` and optionally ``clutter`` (a :class:`DemoSettings` or alike).
    """
    from lgdnet.data.synthetic import write_synthetic_dataset

    clutter = float(getattr(settings, "clutter", 1.0))

    stamp = {"classes": list(settings.classes), "clips_per_class": settings.clips_per_class,
             "frames": settings.video_frames, "size": list(settings.video_size),
             "val_fraction": settings.val_fraction, "clutter": clutter, "seed": seed}
    reused = _reuse_demo_data(settings, data_dir, stamp)
    if reused is not None:
        return reused
    dataset = write_synthetic_dataset(
        data_dir, clips_per_class=settings.clips_per_class, seed=seed,
        num_frames=settings.video_frames, size=settings.video_size,
        val_fraction=settings.val_fraction, classes=list(settings.classes), progress=progress,
        clutter=clutter)
    write_text(data_dir / "demo-data.json", json.dumps(stamp))
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
        out_dir: the demo folder (created); ``data/``, ``run/``, ``run/eval/``, ``plain/``.
        mode: ``"full"`` (about 3 minutes on 2 CPU cores), ``"quick"`` (under a minute)
            or ``"tiny"`` (seconds; for tests).
        seed: seeds the dataset and the training.
        progress: show progress bars.
        settings: overrides the mode's :class:`DemoSettings`.
        echo: where the report lines go.

    Returns:
        ``metrics`` (the LGD network's multi-clip top-1, top-5, mean class accuracy),
        ``plain_metrics`` (the plain network's, or ``None``), ``chance``, ``checkpoint``,
        ``prediction`` (video, true class, top-5), ``paths``, ``seconds``, ``settings``.
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
    steps = 5 if settings.plain else 4
    echo(f"lgdnet demo ({mode}): two columns of objects {settings.size} px apart at most, each "
         f"warm or cool; is their colour the same? No local unit of the tiny networks sees "
         f"both (receptive field 39 px; the columns are at least 40 px apart): only a global "
         f"path can relate them.")
    echo(f"[1/{steps}] writing the {settings.task} relation dataset to {data_dir}")
    dataset = write_relation_demo_data(settings, data_dir, seed, progress)
    echo(f"      {dataset.num_train} training and {dataset.num_val} held-out clips of "
         f"{settings.video_frames} frames at {settings.size}x{settings.size}; classes: "
         f"{', '.join(dataset.classes)}")

    config = demo_config(settings, dataset, run_dir, seed)
    echo(f"[2/{steps}] training lgd3d_tiny into {run_dir}: stage 1 (Eq. 6) for "
         f"{settings.stage1_epochs} epochs" + (f", then stage 2 (combination classifier, "
                                               f"Eq. 7) for {settings.stage2_epochs}"
                                               if settings.stage2_epochs else ""))
    summary = train(config)
    best = Path(summary["best_checkpoint"])
    # the last epoch's model: nothing is selected on the held-out clips that score it
    final_stage = 2 if settings.stage2_epochs else 1
    checkpoint = run_dir / f"stage{final_stage}_last.safetensors"

    def score(path: Path) -> tuple[Any, Any, Any]:
        predictor = load_predictor(path, device="cpu")
        annotations = load_annotations(dataset.val_list, root=dataset.root,
                                       classes=predictor.classes)
        return predictor, annotations, evaluate(
            predictor.model, predictor.dataset(annotations.records), progress=progress,
            description="evaluation")

    echo(f"[3/{steps}] evaluation of the last epoch's model ({checkpoint.name}) on the "
         f"{dataset.num_val} held-out clips")
    predictor, annotations, result = score(checkpoint)
    paths = save_evaluation(result, run_dir / "eval", predictor.classes,
                            config=config_to_dict(config), extra={"checkpoint": str(checkpoint)})
    echo(f"      {format_metrics(result.metrics, len(predictor.classes))}")
    verdict = "above" if result.metrics["top1"] > chance else "NOT above"
    echo(f"      LGD network: accuracy {100 * result.metrics['top1']:.1f}% vs chance "
         f"{100 * chance:.1f}%: {verdict} chance")

    plain_metrics = None
    if settings.plain:
        plain_dir = out_dir / "plain"
        echo(f"[4/{steps}] the same for the plain p3d_tiny (no global path) into {plain_dir}")
        plain_config = demo_config(settings, dataset, plain_dir, seed, "p3d_tiny")
        train(plain_config)
        plain_metrics = score(plain_dir / "stage1_last.safetensors")[2].metrics
        echo(f"      plain network: accuracy {100 * plain_metrics['top1']:.1f}% vs chance "
             f"{100 * chance:.1f}% (LGD network {100 * result.metrics['top1']:.1f}%)")

    # one held-out clip, as a user would: lgdnet.load(checkpoint).predict(path)
    record = annotations.records[len(annotations.records) // 2]
    predictions = predictor.predict(record.path, top_k=5)
    true_name = predictor.classes[record.label]
    echo(f"[{steps}/{steps}] predicting one held-out clip: {record.path}")
    echo(f"      true class: {true_name}")
    for name, probability in predictions:
        mark = "  <- true class" if name == true_name else ""
        echo(f"      {name:<18} {100 * probability:5.1f}%{mark}")

    paths = {"data": data_dir, "run": run_dir, "checkpoint": checkpoint, "best_checkpoint": best,
             "training_curves": run_dir / "training_curves.png", **paths}
    seconds = time.perf_counter() - started
    echo(f"done in {seconds / 60:.1f} min. Where everything went:")
    for kind, path in paths.items():
        if Path(path).exists():
            echo(f"      {kind.replace('_', ' '):<17} {path}")
    echo(f"try: lgdnet predict {record.path} --checkpoint {checkpoint}")
    return {"metrics": result.metrics, "plain_metrics": plain_metrics, "chance": chance,
            "checkpoint": str(checkpoint),
            "prediction": {"video": record.path, "true": true_name, "top5": predictions},
            "paths": {k: str(v) for k, v in paths.items()}, "seconds": seconds,
            "settings": dataclasses.asdict(settings)}
