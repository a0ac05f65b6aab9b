"""Fine-tuning the action detector of Sec. 5.6 from a trained LGD-3D classifier.

The paper builds its detector on "the pre-trained LGD-3D": :func:`train_detector` keeps the
classifier's backbone, puts an ROI head on x_L (:class:`~lgdnet.models.detector.LGDDetector`)
and trains the whole network on key-frame clips with Fast R-CNN labels and sampling
(:class:`~lgdnet.data.detection_dataset.DetectionClipDataset`), through the library's one
training stage, :func:`lgdnet.engine.stage.fit_stage`: SGD with momentum and step decay,
checkpoints ``stage1_last`` (with the training state; ``resume=True`` continues from it) and
``stage1_best`` (the last epoch's model: there is no validation metric), the epoch records
in ``metrics.jsonl``. The settings are written to ``detection.json`` beside them.

The paper gives no fine-tuning schedule. :class:`DetectorTrainSettings` defaults to the
classification schedule of Sec. 5.2 scaled to fine-tuning: lr 0.01 (Sec. 5.2's rate; the ROI
classifier is new, the backbone already trained), divided by 10 after 3/4 of the epochs,
momentum 0.9, weight decay 1e-4, 16 clips a batch, 8 frames 2 apart (LGD-3D's T' = T/4 leaves
x_L two steps), whole frames at their own size.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lgdnet.data.detection_dataset import (
    DetectionClipDataset,
    DetectionClipSpec,
    collate_detection,
)
from lgdnet.errors import CheckpointError, ConfigError
from lgdnet.models.detector import LGDDetector, build_detector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorTrainSettings:
    """Optimisation and clip settings of :func:`train_detector` (see the module docstring).

    ``clips`` says how key-frame clips are cut and proposals sampled; ``dropout`` and
    ``use_global`` configure the ROI head; ``device`` is ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    epochs: int = 8
    lr: float = 0.01
    lr_step: int = 6  # epochs between divisions by 10
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 16  # clips per optimiser step
    micro_batch_size: int = 0  # 0: the whole batch at once
    clips: DetectionClipSpec = DetectionClipSpec()
    dropout: float = 0.0
    use_global: bool = False
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    precision: str = "fp32"
    progress: bool = True


def detector_config(settings: DetectorTrainSettings, *, backbone: str, num_classes: int,
                    gt_path: str | os.PathLike, root: str | os.PathLike, split: int,
                    out_dir: str | os.PathLike) -> Any:
    """The :class:`~lgdnet.engine.config.Config` of a detector run: what ``fit_stage`` reads
    and every checkpoint records (``data.num_frames``, ``frame_stride`` and ``train_resize``
    are the clips inference must cut)."""
    from lgdnet.engine.config import config_from_dict

    clips = settings.clips
    return config_from_dict({
        "model": {"name": backbone, "num_classes": num_classes, "dropout": settings.dropout},
        "data": {"train_list": os.fspath(gt_path), "root": os.fspath(root), "split": split,
                 "num_frames": clips.num_frames, "frame_stride": clips.frame_stride,
                 "train_resize": list(clips.frame_size) if clips.frame_size else None,
                 "horizontal_flip": clips.horizontal_flip, "num_workers": settings.num_workers,
                 "on_error": "skip"},
        "optim": {"lr": settings.lr, "lr_step": settings.lr_step, "epochs": settings.epochs,
                  "momentum": settings.momentum, "weight_decay": settings.weight_decay,
                  "batch_size": settings.batch_size,
                  "micro_batch_size": settings.micro_batch_size,
                  "precision": settings.precision},
        "run": {"out_dir": os.fspath(out_dir), "seed": settings.seed, "stages": [1],
                "eval_every": 0, "final_eval": False, "device": settings.device,
                "progress": settings.progress},
    })


def clip_spec_from_config(config: dict[str, Any]) -> DetectionClipSpec:
    """The clip shape a detector was trained on, from its checkpoint's configuration."""
    data = config.get("data") or {}
    size = data.get("train_resize")
    return DetectionClipSpec(num_frames=int(data.get("num_frames") or 8),
                             frame_stride=int(data.get("frame_stride") or 2),
                             frame_size=tuple(size) if size else None)


def load_detector(checkpoint: str | os.PathLike, device: str | torch.device = "cpu"
                  ) -> tuple[LGDDetector, dict[str, Any], list[str]]:
    """Rebuild a trained :class:`LGDDetector` from its ``.safetensors`` checkpoint alone.

    Returns:
        ``(detector, config, classes)``: the detector in eval mode, the training
        configuration (plain dicts; :func:`clip_spec_from_config` reads the clip shape) and
        the class names (background excluded).

    Raises:
        CheckpointError: missing or corrupt file, not a detector, weights that do not fit.
    """
    from lgdnet.engine.checkpoint import checkpoint_paths, load_weights, read_metadata

    weights_path, _ = checkpoint_paths(checkpoint)
    metadata = read_metadata(weights_path)
    build_args = metadata.get("build_args")
    if not isinstance(build_args, dict) or "detector" not in build_args:
        raise CheckpointError(f"{weights_path}: not a detector checkpoint (its build_args do not "
                              "describe an LGDDetector); `lgdnet predict` reads classifiers")
    try:
        detector = build_detector(build_args)
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{weights_path}: cannot rebuild the detector ({error})") from None
    try:
        detector.load_state_dict(load_weights(weights_path), strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{weights_path}: weights do not fit the detector ({error})") from None
    classes = metadata.get("classes") or []
    if len(classes) != detector.num_classes:
        raise CheckpointError(f"{weights_path}: metadata names {len(classes)} classes, the "
                              f"detector has {detector.num_classes}")
    return detector.to(device).eval(), dict(metadata.get("config") or {}), list(classes)


def train_detector(
    gt_path: str | os.PathLike,
    proposals_path: str | os.PathLike,
    videos_root: str | os.PathLike,
    classifier: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: int = 1,
    settings: DetectorTrainSettings | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Fine-tune a detector on the training videos of ``split`` (Sec. 5.6).

    Args:
        gt_path: ACT-layout ground truth (``GT.pkl``).
        proposals_path: per-frame proposals (``.json``/``.npz``).
        videos_root: folder of the videos (``root/<video>.mp4`` or frame folders).
        classifier: checkpoint of a trained LGD-3D classifier (either stage).
        out_dir: run folder: ``stage1_last``, ``stage1_best``, ``metrics.jsonl``,
            ``detection.json`` (locked while training).
        split: 1-based split of the ground truth.
        settings: :class:`DetectorTrainSettings` (defaults when None).
        resume: continue from ``out_dir/stage1_last`` when it exists (the classifier is
            then not read).

    Returns:
        ``run_dir``, ``checkpoint`` (``stage1_best.safetensors``), ``epochs``, ``history``.

    Raises:
        CheckpointError: the classifier is missing or not an LGD-3D.
        FolderLockedError: another run trains into ``out_dir``.
        LgdnetError: an epoch trained on no clip (every video unreadable).
    """
    from lgdnet.atomic import write_text
    from lgdnet.data.detection_annotations import load_detection_gt, load_proposals
    from lgdnet.engine import distributed
    from lgdnet.engine.checkpoint import (
        checkpoint_paths,
        load_model,
        load_training_state,
        read_metadata,
    )
    from lgdnet.engine.loop import seed_everything
    from lgdnet.engine.records import MetricsLogger
    from lgdnet.engine.stage import StageContext, fit_stage
    from lgdnet.locking import output_lock

    settings = settings or DetectorTrainSettings()
    run_dir = Path(out_dir)
    dist = distributed.init_distributed(settings.device)
    gt = load_detection_gt(gt_path)
    proposals = load_proposals(proposals_path, gt, strict=False)
    last = checkpoint_paths(run_dir / "stage1_last")
    seed_everything(settings.seed)
    with output_lock(run_dir, what="out_dir"):
        resume_state = None
        if resume and last[0].is_file() and last[1].is_file():
            detector, _, _ = load_detector(last[0])
            resume_state = load_training_state(last[1], complete=True)
            log.info("resuming the detector from %s (epoch %d)", last[0],
                     resume_state["progress"]["epoch"])
        else:
            if resume:
                log.info("nothing to resume in %s: fine-tuning from %s", run_dir, classifier)
            network, _, _ = load_model(classifier)
            if getattr(network, "kind", None) != "3d":
                raise CheckpointError(f"{classifier}: the detector needs an LGD-3D classifier "
                                      "(Sec. 5.6), this is a 2D network")
            network.train()
            detector = LGDDetector.from_classifier(network, len(gt.labels),
                                                   use_global=settings.use_global,
                                                   dropout=settings.dropout)
        backbone = detector.build_args["backbone"].get("name")
        if not backbone:
            raise ConfigError(f"{classifier}: the classifier's build_args lack its model name")
        config = detector_config(settings, backbone=backbone, num_classes=len(gt.labels),
                                 gt_path=gt_path, root=videos_root, split=split, out_dir=run_dir)
        dataset = DetectionClipDataset(gt, proposals, videos_root, split=split, subset="train",
                                       spec=settings.clips, seed=settings.seed)
        if len(dataset) == 0:
            raise ConfigError(f"{gt_path}: split {split} has no annotated training frame")
        logger = MetricsLogger(run_dir) if dist.is_main else None
        if logger is not None:
            progress = (resume_state or {}).get("progress", {})
            logger.restart(progress.get("history", []), {1: int(progress.get("global_step", 0))})
        write_text(run_dir / "detection.json", json.dumps({
            "settings": dataclasses.asdict(settings), "split": split, "classes": gt.labels,
            "classifier": os.fspath(classifier),
            "classifier_config": _classifier_config(classifier, read_metadata)}, indent=2))
        ctx = StageContext(config=config, dist=dist, train_set=dataset, val_set=None,
                           classes=list(gt.labels), run_dir=run_dir,
                           batch_size=settings.batch_size, logger=logger,
                           collate_fn=collate_detection)
        try:
            state = fit_stage(detector, 1, ctx, resume=resume_state)
        finally:
            if logger is not None:
                logger.close()
    if dataset.bad_files:
        log.warning("%d video(s) could not be read and were skipped: %s", len(dataset.bad_files),
                    ", ".join(path for path, _ in dataset.bad_files))
    return {"run_dir": str(run_dir), "checkpoint": str(checkpoint_paths(run_dir / "stage1_best")[0]),
            "epochs": state.epoch, "history": state.history}


def _classifier_config(classifier: str | os.PathLike, read_metadata: Any) -> Any:
    # provenance only: the classifier may be gone by the time a run resumes
    try:
        return read_metadata(classifier).get("config")
    except CheckpointError:
        return None
