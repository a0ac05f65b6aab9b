"""Training of LGD networks in the two stages of Sec. 4.3, readable top to bottom.

* Stage 1 trains the network with the stage-1 head and the loss of Eq. (6): the sum of the
  cross-entropies of the global classifier on g_L and the local classifier on P(x_L).
* Stage 2 starts from the stage-1 weights (the best validation epoch, else the last), swaps
  in the local and global combination classifier (Eq. 4-5) and tunes the whole network with
  Eq. (7), with a fresh optimiser.

Each stage runs SGD with momentum, lr 0.01 divided by 10 every 20 epochs, 50 epochs, and an
effective batch of 64 clips (3D) or 128 triples (2D), all by default (Sec. 5.2). The pieces:
:func:`train_one_epoch` (one pass over the data), :func:`fit_stage` (epochs, validation,
checkpoints of one stage) and :func:`train` (the whole run from a configuration).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from lgdnet.engine import distributed
from lgdnet.engine.checkpoint import find_resume_checkpoint
from lgdnet.engine.loop import (  # noqa: F401  (re-exported: the loop's public names)
    EpochState,
    batch_plan,
    collate_train,
    derived_seed,
    epoch_line,
    is_tty,
    seed_everything,
    snapshot_buffers,
    train_one_epoch,
    validate_one_view,
)
from lgdnet.engine.stage import (  # noqa: F401  (re-exported)
    StageContext,
    StageRun,
    StageState,
    fit_stage,
    has_validation,
)
from lgdnet.errors import AnnotationError, CheckpointError, ConfigError

log = logging.getLogger(__name__)



# ---------------------------------------------------------------- the whole run


def _load_into(model: torch.nn.Module, path: Any) -> None:
    from lgdnet.engine.checkpoint import load_weights
    from lgdnet.errors import CheckpointError

    try:
        model.load_state_dict(load_weights(path), strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit the model ({error})") from None


def train(config: Any, resume: bool | str | None = None) -> dict[str, Any]:
    """Train an LGD network through the stages of ``config.run.stages`` (Sec. 4.3).

    Args:
        config: a :class:`~lgdnet.engine.config.Config`.
        resume: ``True`` to continue the run in ``run.out_dir`` from its latest
            ``stage{N}_last`` checkpoint, or the path of a checkpoint to continue from.

    Returns:
        A summary (also written to ``run_dir/summary.json`` with the full configuration):
        ``run_dir``, ``best_checkpoint``, per stage the best epoch and metric and, with a
        validation list, the multi-view evaluation metrics; ``history`` (epoch records).

    On CPU with a fixed seed (and the same number of threads), a run resumed from a checkpoint
    repeats the losses of the uninterrupted run exactly: the clip order and augmentation are
    functions of (seed, stage, epoch, index), the random draws of each optimiser step are
    seeded from (seed, stage, rank, step), and the checkpoint holds the optimiser, scheduler
    and generator states. A run stopped by Ctrl-C, SIGTERM or an error saves
    ``stage{N}_last`` first, as of its last optimiser step.

    Writes into ``run.out_dir``: checkpoints ``stage{N}_last``/``stage{N}_best`` and ``best``
    (the final model to use: the final stage's best validation epoch, or without a validation
    metric its last epoch, as ``summary["best_reason"]`` says), ``config.yaml``,
    ``metrics.jsonl``/``.csv``, ``steps.jsonl``, ``training_curves.png``, ``stage{N}_eval/``
    (scores, metrics, confusion matrix). The folder is locked for the run
    (:func:`lgdnet.locking.output_lock`): a second run into it is refused.

    Raises:
        ConfigError: ``run.device`` names a device this machine lacks (checked before
            anything is written), or settings that cannot train.
        FolderLockedError: another process is training into ``run.out_dir``.
        AnnotationError: the training (or validation) list holds no video.
        LgdnetError: an epoch trained on no clip (every video unreadable).
    """
    import contextlib
    import signal
    import threading

    from lgdnet.locking import output_lock

    # the device is checked before anything is written (and before the folder is locked)
    dist = distributed.init_distributed(config.run.device)
    if dist.device.type == "cuda":
        torch.backends.cudnn.benchmark = config.run.cudnn_benchmark
    previous = None
    if threading.current_thread() is threading.main_thread():
        # schedulers (SLURM, Kubernetes) stop jobs with SIGTERM: treat it as Ctrl-C, so that
        # the interrupted stage saves stage{N}_last before the process ends
        def stop(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        previous = signal.signal(signal.SIGTERM, stop)
    finished = False
    try:
        lock = (output_lock(config.run.out_dir, what="run.out_dir") if dist.is_main
                else contextlib.nullcontext())
        with lock:
            result = _train(config, dist, resume)
        finished = True
        return result
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        distributed.cleanup(synchronize=finished)


def _train(config: Any, dist: distributed.DistributedContext, resume: bool | str | None) -> dict[str, Any]:
    import json
    from pathlib import Path

    from lgdnet.engine import builders
    from lgdnet.engine.checkpoint import (
        atomic_write,
        checkpoint_paths,
        load_training_state,
        read_metadata,
    )
    from lgdnet.engine.config import config_to_dict, save_config
    from lgdnet.engine.records import MetricsLogger, plot_training_curves

    run_dir = Path(config.run.out_dir)
    seed_everything(config.run.seed)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)

    # data and model; the number of classes comes from the training list unless set
    split = builders.load_split(config.data, "train")
    if not split.records:  # refused before a model is built or a step "trains"
        raise AnnotationError(config.data.train_list, None, "no videos to train on (data.train_list)")
    classes = list(split.classes)
    model = builders.build_model(config, num_classes=len(classes))
    kind = model.kind
    first = config.run.stages[0]
    train_set, classes = builders.build_train_dataset(config, kind, stage=first)
    val_one = (builders.build_val_dataset(config, kind, classes, views="one", stage=first)
               if config.data.val_list else None)
    if val_one is not None and len(val_one) == 0:
        raise AnnotationError(config.data.val_list, None, "no videos to validate on (data.val_list)")
    batch_size = _stage_batch_size(config, kind, first)

    resume_path, resume_stage, resume_state = None, 0, None
    init_report = None
    if resume:
        resume_path = find_resume_checkpoint(run_dir, resume)
        resume_meta = read_metadata(resume_path)
        try:
            resume_stage = int(resume_meta["stage"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{resume_path}: metadata lacks the training stage") from None
        resume_state = load_training_state(resume_path, complete=True)
        _warn_changed_settings(resume_meta.get("config"), config, resume_path)
    elif config.model.init_checkpoint:
        init_report = _init_from_checkpoint(model, config, classes)
    elif getattr(model, "init_report", None) is not None:  # model.init=imagenet
        from lgdnet.engine.transfer import imagenet_report

        init_report = imagenet_report(model.init_report)
    if dist.is_main and init_report is not None:
        from lgdnet.engine.transfer import log_report

        log_report(init_report)
        text = json.dumps(init_report.to_dict(), indent=2)
        atomic_write(run_dir / "init_report.json", lambda handle: handle.write(text.encode()))

    logger = None
    if dist.is_main:
        save_config(config, run_dir / "config.yaml")
        logger = MetricsLogger(run_dir, tensorboard=config.run.tensorboard)
        if resume_state is not None:  # drop records written after the checkpoint
            history = [r for s in (1, 2) if s < resume_stage for r in _stage_history(run_dir, s)]
            history += resume_state["progress"]["history"]
            logger.restart(history, _last_steps(run_dir, resume_stage, resume_state))
        else:
            logger.restart([], {})
    ctx = StageContext(config=config, dist=dist, train_set=train_set, val_set=val_one,
                       classes=classes, run_dir=run_dir, batch_size=batch_size, logger=logger)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "classes": classes, "stages": {}}
    if init_report is not None:
        summary["init"] = {key: value for key, value in init_report.to_dict().items()
                           if key in ("source", "source_model", "source_stage", "reasons")}
        summary["init"].update({key: len(getattr(init_report, key))
                                for key in ("loaded", "reinitialised", "left_out")})
    base_ctx = ctx
    try:
        for stage in config.run.stages:
            if stage < resume_stage:  # finished before the resumed checkpoint
                summary["stages"][stage] = _finished_stage_summary(run_dir, stage)
                continue
            if stage == 2 and model.stage == 1:
                # Sec. 4.3: stage 2 starts from the trained stage-1 network
                for name in ("stage1_best", "stage1_last"):
                    weights, _ = checkpoint_paths(run_dir / name)
                    if weights.is_file():
                        _load_into(model, weights)
                        break
                else:
                    if 1 not in config.run.stages and not config.model.init_checkpoint:
                        raise ConfigError(
                            "run.stages: stage 2 starts from a stage-1 model (Sec. 4.3): set "
                            f"model.init_checkpoint or train stage 1 in {run_dir} first")
                seed_everything(config.run.seed + 2)  # the same new head on resume
                model.to_stage2(sketch_dim=config.model.sketch_dim)
            if stage == 2 and config.model.stage2_temporal_pool is not None:
                model.set_temporal_pool(config.model.stage2_temporal_pool)  # Sec. 5.4: Long
            ctx = _stage_context(base_ctx, stage, first, kind)
            stage_resume = None
            if resume_state is not None and stage == resume_stage:
                _load_into(model, resume_path)
                stage_resume = resume_state
            state = fit_stage(model, stage, ctx, resume=stage_resume)
            # the model to keep from this stage: its best epoch
            best, _ = checkpoint_paths(run_dir / f"stage{stage}_best")
            distributed.barrier()
            if best.is_file():
                _load_into(model, best)
            stage_summary: dict[str, Any] = {
                "best_epoch": state.best_epoch,
                "best_metric": state.best_metric if math.isfinite(state.best_metric) else None,
                "best_by": "val_accuracy" if has_validation(ctx) else "last_epoch",
                "epochs": state.epoch}
            if config.data.val_list and config.run.final_eval:
                stage_summary["eval"] = _final_evaluation(model, ctx, stage)
            summary["stages"][stage] = stage_summary
    finally:
        if logger is not None:
            logger.close()

    # the final model: the final stage's best checkpoint (or its last); the summary points
    # only at files that exist
    final_stage = config.run.stages[-1]
    best_weights, _ = checkpoint_paths(run_dir / "best")
    source = None
    for name in (f"stage{final_stage}_best", f"stage{final_stage}_last"):
        if checkpoint_paths(run_dir / name)[0].is_file():
            source = checkpoint_paths(run_dir / name)[0]
            break
    if dist.is_main and source is not None:
        data = source.read_bytes()
        atomic_write(best_weights, lambda handle: handle.write(data))
    distributed.barrier()
    summary["best_checkpoint"] = str(best_weights) if source is not None else None
    summary["best_reason"] = _best_reason(config, summary["stages"].get(final_stage), source)
    if dist.is_main:
        from lgdnet.engine.records import read_jsonl

        history = read_jsonl(run_dir / "metrics.jsonl")
        summary["history"] = history
        if history:
            summary["training_curves"] = str(plot_training_curves(history, run_dir / "training_curves.png"))
        text = json.dumps({**summary, "config": config_to_dict(config)}, indent=2, default=str)
        atomic_write(run_dir / "summary.json", lambda handle: handle.write(text.encode()))
    distributed.barrier()
    return summary


def _best_reason(config: Any, stage_summary: dict[str, Any] | None, source: Any) -> str:
    """Why ``best`` is the model it is, for the summary."""
    if source is None:
        return "no checkpoint of the final stage was written"
    stage = config.run.stages[-1]
    epoch = (stage_summary or {}).get("best_epoch")
    if (stage_summary or {}).get("best_by") == "val_accuracy":
        return f"stage {stage} epoch {epoch}: the best one-view validation accuracy"
    why = ("no validation list (data.val_list)" if not config.data.val_list
           else "validation is off (run.eval_every=0)")
    return f"stage {stage} epoch {epoch}, the last: {why}, so no validation metric"


def _finished_stage_summary(run_dir: Any, stage: int) -> dict[str, Any]:
    """The summary of a stage finished before the checkpoint a run was resumed from."""
    from lgdnet.engine.checkpoint import checkpoint_paths, load_training_state

    if not checkpoint_paths(run_dir / f"stage{stage}_last")[1].is_file():
        return {}
    progress = load_training_state(run_dir / f"stage{stage}_last", complete=True)["progress"]
    best_metric = progress["best_metric"]
    validated = any("val_accuracy" in record for record in progress["history"])
    result: dict[str, Any] = {
        "best_epoch": progress["best_epoch"] or progress["epoch"],
        "best_metric": best_metric if math.isfinite(best_metric) else None,
        "best_by": "val_accuracy" if validated else "last_epoch", "epochs": progress["epoch"]}
    metrics_file = run_dir / f"stage{stage}_eval" / "metrics.json"
    if metrics_file.is_file():
        import json

        try:
            result["eval"] = json.loads(metrics_file.read_text(encoding="utf-8"))["metrics"]
        except (ValueError, KeyError, TypeError):
            pass
    return result


#: Settings whose change makes a resumed run differ from the uninterrupted one.
_RESUME_SENSITIVE = {
    "optim": ("batch_size", "micro_batch_size", "epochs", "stage2_epochs", "lr", "stage2_lr",
              "lr_step", "stage2_lr_step", "lr_gamma", "momentum", "weight_decay", "precision",
              "stage2_batch_size", "stage2_micro_batch_size", "backbone_lr_mult", "freeze_bn",
              "freeze_backbone_epochs"),
    "data": ("num_frames", "frame_stride", "crop_size", "train_resize", "train_list",
             "stage2_num_frames", "stage2_frame_stride"),
    "model": ("stage2_temporal_pool",),
    "run": ("seed", "stages"),
}


def _stage_batch_size(config: Any, kind: str, stage: int) -> int:
    """The stage's effective mini-batch: as configured, else Sec. 5.2's 64 clips (3D) or
    128 triples (2D)."""
    from lgdnet.engine.config import stage_batch

    return stage_batch(config.optim, stage)[0] or (64 if kind == "3d" else 128)


def _stage_context(ctx: StageContext, stage: int, first: int, kind: str) -> StageContext:
    """The context of ``stage``: ``ctx`` (built for the run's first stage) with the stage's
    own clips and mini-batch when its settings differ (stage 2 of Sec. 5.4's long recipe:
    128-frame clips, 16 per mini-batch)."""
    import dataclasses

    from lgdnet.engine import builders

    config, model_kind = ctx.config, kind
    if stage == first:
        return ctx
    changes: dict[str, Any] = {"batch_size": _stage_batch_size(config, model_kind, stage)}
    if builders.sampling_spec(config.data, model_kind, stage) != builders.sampling_spec(
            config.data, model_kind, first):
        changes["train_set"], _ = builders.build_train_dataset(config, model_kind, stage=stage)
        if ctx.val_set is not None:
            changes["val_set"] = builders.build_val_dataset(config, model_kind, ctx.classes,
                                                            views="one", stage=stage)
    return dataclasses.replace(ctx, **changes)


def _init_from_checkpoint(model: torch.nn.Module, config: Any, classes: list[str]) -> Any:
    """Fill a new run's network from ``model.init_checkpoint`` (lgdnet.engine.transfer).

    The network starts in the checkpoint's stage when the run's first stage is 2 and the
    checkpoint is a stage-2 one (its combination classifier then loads when the classes
    agree); a run that starts with stage 1 takes the backbone of a checkpoint of either stage.
    """
    from lgdnet.engine.checkpoint import read_metadata
    from lgdnet.engine.transfer import load_for_finetuning

    meta = read_metadata(config.model.init_checkpoint)
    if config.run.stages[0] == 2 and int(meta.get("stage", 1)) == 2:
        args = dict(meta.get("stage2_args") or {})
        if list(meta.get("classes") or []) != list(classes) and sorted(
                meta.get("classes") or []) != sorted(classes):
            args["sketch_dim"] = config.model.sketch_dim  # a new classifier: as configured
        model.to_stage2(**args)
    return load_for_finetuning(model, config.model.init_checkpoint, classes)


def _warn_changed_settings(saved: Any, config: Any, checkpoint: Any) -> None:
    """Warn when a run resumes with settings other than those its checkpoint was trained
    with: it then goes on, but no longer repeats the uninterrupted run."""
    from lgdnet.engine.config import config_to_dict

    if not isinstance(saved, dict):
        return
    now = config_to_dict(config)
    changes = []
    for section, keys in _RESUME_SENSITIVE.items():
        before = saved.get(section) or {}
        for key in keys:
            if key in before and before[key] != now[section].get(key):
                changes.append(f"{section}.{key} {before[key]!r} -> {now[section][key]!r}")
    if changes:
        log.warning("resuming from %s with changed settings: %s; the run goes on from the "
                    "checkpoint but will not repeat the uninterrupted run", checkpoint,
                    ", ".join(changes))


def _stage_history(run_dir: Any, stage: int) -> list[dict[str, Any]]:
    """Epoch records of a finished stage, from its last checkpoint."""
    from lgdnet.engine.checkpoint import checkpoint_paths, load_training_state

    if not checkpoint_paths(run_dir / f"stage{stage}_last")[1].is_file():
        return []
    return load_training_state(run_dir / f"stage{stage}_last", complete=True)["progress"]["history"]


def _last_steps(run_dir: Any, resume_stage: int, resume_state: dict[str, Any]) -> dict[int, int]:
    steps = {resume_stage: int(resume_state["progress"]["global_step"])}
    for stage in (1, 2):
        if stage < resume_stage:
            history = _stage_history(run_dir, stage)
            steps[stage] = int(history[-1]["steps"]) if history else 0
    return steps


def _final_evaluation(model: torch.nn.Module, ctx: StageContext, stage: int) -> dict[str, Any]:
    """Multi-view evaluation of the stage's best model on the validation list (Sec. 5.2)."""
    from lgdnet.engine import builders
    from lgdnet.engine.config import config_to_dict
    from lgdnet.engine.evaluate import evaluate, format_metrics, save_evaluation

    dataset = builders.build_val_dataset(ctx.config, model.kind, ctx.classes, views="all",
                                         stage=stage)
    result = evaluate(model, dataset, device=ctx.dist.device, precision=ctx.config.optim.precision,
                      progress=ctx.config.run.progress and is_tty(),
                      num_workers=ctx.config.data.num_workers, description=f"stage {stage} eval")
    if ctx.dist.is_main:
        save_evaluation(result, ctx.run_dir / f"stage{stage}_eval", ctx.classes,
                        config=config_to_dict(ctx.config), extra={"stage": stage})
        log.info("stage %d evaluation (%d views per video): %s", stage,
                 dataset.spec.num_test_views * dataset.spec.test_crops,
                 format_metrics(result.metrics, len(ctx.classes)))
    return dict(result.metrics)
