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

import math
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from lgdnet.engine import distributed
from lgdnet.engine.checkpoint import find_resume_checkpoint, set_rng_state
from lgdnet.engine.loop import (  # noqa: F401  (re-exported: the loop's public names)
    EpochState,
    autocast,
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
from lgdnet.engine.stage_loader import StageLoader
from lgdnet.errors import ConfigError
from lgdnet.models.layout import resolve_memory_format, to_memory_format


@dataclass
class StageState:
    """What a checkpoint records about a stage in progress."""

    stage: int
    epoch: int = 0  # epochs completed
    global_step: int = 0
    batches_done: int = 0  # micro-batches done in epoch ``epoch + 1`` (an interrupted run)
    epoch_totals: dict[str, float] = field(default_factory=dict)  # their loss sums etc.
    best_metric: float = -math.inf
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageState:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass
class StageContext:
    """The fixed inputs of :func:`fit_stage` (built once by :func:`train`)."""

    config: Any  # lgdnet.engine.config.Config
    dist: distributed.DistributedContext
    train_set: torch.utils.data.Dataset
    val_set: torch.utils.data.Dataset | None  # one view per video
    classes: list[str]
    run_dir: Any  # pathlib.Path
    batch_size: int  # effective
    logger: Any = None  # MetricsLogger on rank 0, else None


def _save(ctx: StageContext, name: str, model: torch.nn.Module, state: StageState,
          training: dict[str, Any] | None) -> None:
    """Write checkpoint ``run_dir/name`` (rank 0 only)."""
    from lgdnet.engine.checkpoint import rng_state, save_checkpoint
    from lgdnet.engine.config import config_to_dict

    if not ctx.dist.is_main:
        return
    training_state = None
    if training is not None:
        training_state = {**training, "progress": state.to_dict(), "rng": rng_state()}
    save_checkpoint(ctx.run_dir / name, distributed.unwrap_model(model),
                    config=config_to_dict(ctx.config), classes=ctx.classes, epoch=state.epoch,
                    training_state=training_state)


def fit_stage(
    model: torch.nn.Module, stage: int, ctx: StageContext, resume: dict[str, Any] | None = None
) -> StageState:
    """Train ``model`` (already in stage ``stage``) for the stage's epochs (Sec. 4.3, 5.2).

    Validates every ``run.eval_every`` epochs (one view per video) and writes the checkpoints
    ``stage{N}_last`` (every epoch, with the training state) and ``stage{N}_best`` (the best
    validation accuracy; the lowest training loss without a validation set). If training
    stops with an exception or Ctrl-C, ``stage{N}_last`` is written first, recording how far
    the epoch got, so ``--resume`` continues from there.

    Args:
        model: the network (not wrapped); moved to the device and wrapped in DDP here.
        stage: 1 or 2.
        ctx: datasets, configuration, output directory, distributed context.
        resume: a training state loaded from ``stage{N}_last`` to continue from.

    Returns:
        The final :class:`StageState` (history of epoch records, best epoch).
    """
    from lgdnet.engine.config import stage_settings

    config, dist, device = ctx.config, ctx.dist, ctx.dist.device
    optim = config.optim
    epochs, lr, lr_step = stage_settings(optim, stage)
    micro, accumulation = batch_plan(ctx.batch_size, optim.micro_batch_size, dist.world_size)
    model.to(device)
    to_memory_format(model, resolve_memory_format(config.run.memory_format, device, optim.precision))
    net = model
    if dist.is_distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    # Sec. 5.2: plain SGD with momentum; a fresh optimiser for each stage (Sec. 4.3)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=optim.momentum,
                                weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_step, gamma=optim.lr_gamma)
    scaler = torch.amp.GradScaler(device.type) if optim.precision == "fp16" else None
    state = StageState(stage)
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        state = StageState.from_dict(resume["progress"])
        set_rng_state(resume["rng"])

    def training_state() -> dict[str, Any]:
        return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {}}

    # the order of the clips depends on (seed, stage, epoch) only, so a resumed run sees
    # the same batches; DistributedSampler gives each process its share
    sampler = torch.utils.data.DistributedSampler(
        ctx.train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
        seed=config.run.seed + stage, drop_last=False)
    show_bar = config.run.progress and dist.is_main and is_tty()
    # one loader for the whole stage, its workers started once (lgdnet.engine.stage_loader)
    stage_loader = StageLoader(ctx.train_set, micro, config.data.num_workers,
                               collate_fn=collate_train, pin_memory=device.type == "cuda",
                               persistent=config.data.persistent_workers)
    for epoch in range(state.epoch + 1, epochs + 1):
        sampler.set_epoch(epoch)
        start_batch = state.batches_done
        loader = stage_loader.epoch(epoch, list(sampler)[start_batch * micro:])
        progress = EpochState(batches_done=start_batch, global_step=state.global_step,
                              totals=dict(state.epoch_totals))
        # the loader's worker seeds come from torch's generator: make them a function of the
        # epoch, so a resumed run draws the same ones
        torch.manual_seed(derived_seed(config.run.seed, stage, dist.rank, epoch))

        def log_step(record: dict[str, float], epoch: int = epoch) -> None:
            if ctx.logger is not None:
                ctx.logger.log_step({"stage": stage, "epoch": epoch, **record})
            if ctx.logger is not None and not show_bar and record["step"] % config.run.log_every == 0:
                print(f"stage {stage} epoch {epoch}/{epochs} step {record['step']}: "
                      f"loss {record['loss']:.4f} lr {record['lr']:.2e}", flush=True)

        try:
            metrics = train_one_epoch(
                net, loader, optimizer, device=device, accumulation=accumulation,
                precision=optim.precision, scaler=scaler, grad_clip=optim.grad_clip,
                state=progress, start_batch=start_batch, on_step=log_step,
                step_seed=(config.run.seed, stage, dist.rank), progress=show_bar,
                description=f"stage {stage} epoch {epoch}/{epochs}")
        except BaseException:
            stage_loader.close()
            # never lose the work: keep how far this epoch got, then let the error through
            state.global_step, state.batches_done = progress.global_step, progress.batches_done
            state.epoch_totals = progress.totals
            with torch.no_grad():  # undo the forward passes after the last step
                for name, buffer in model.named_buffers():
                    if name in progress.buffers:
                        buffer.copy_(progress.buffers[name])
            try:
                _save(ctx, f"stage{stage}_last", model, state, training_state())
            except Exception as error:  # pragma: no cover - do not hide the original error
                print(f"could not save stage{stage}_last: {error}", file=sys.stderr)
            raise
        state.global_step, state.batches_done, state.epoch_totals = progress.global_step, 0, {}
        state.epoch = epoch
        lr_now = optimizer.param_groups[0]["lr"]
        scheduler.step()  # Sec. 5.2: divided by 10 every 20 epochs
        # average over all processes, weighting by clips
        keys = [k for k in ("loss", "global_loss", "local_loss", "accuracy") if k in metrics]
        sums = distributed.all_reduce_sum(
            [metrics[k] * metrics["clips"] for k in keys] + [metrics["clips"], metrics["clips_per_s"]],
            device=device)
        clips = max(sums[len(keys)], 1.0)
        record: dict[str, Any] = {"stage": stage, "epoch": epoch, "lr": lr_now,
                                  **{k: sums[i] / clips for i, k in enumerate(keys)},
                                  "clips_per_s": sums[len(keys) + 1],
                                  "seconds": metrics["seconds"], "steps": state.global_step}
        every = config.run.eval_every
        if ctx.val_set is not None and every and (epoch % every == 0 or epoch == epochs):
            record["val_accuracy"] = validate_one_view(
                model, ctx.val_set, device=device, batch_size=micro, precision=optim.precision,
                num_workers=config.data.num_workers)
        state.history.append(record)
        if ctx.logger is not None:
            ctx.logger.log_epoch(record)
            print(epoch_line(record, epochs), flush=True)
        if ctx.val_set is not None:
            metric = record.get("val_accuracy", -math.inf)
        else:
            metric = -record["loss"]
        if metric > state.best_metric:
            state.best_metric, state.best_epoch = metric, epoch
            _save(ctx, f"stage{stage}_best", model, state, None)
        _save(ctx, f"stage{stage}_last", model, state, training_state())
        distributed.barrier()
    stage_loader.close()
    return state


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
    (the final model to use), ``config.yaml``, ``metrics.jsonl``/``.csv``, ``steps.jsonl``,
    ``training_curves.png``, ``stage{N}_eval/`` (scores, metrics, confusion matrix).
    """
    import signal
    import threading

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
    classes = list(builders.load_split(config.data, "train").classes)
    model = builders.build_model(config, num_classes=len(classes))
    kind = model.kind
    train_set, classes = builders.build_train_dataset(config, kind)
    val_one = builders.build_val_dataset(config, kind, classes, views="one") if config.data.val_list else None
    batch_size = config.optim.batch_size or (64 if kind == "3d" else 128)  # Sec. 5.2

    resume_path, resume_stage, resume_state = None, 0, None
    if resume:
        resume_path = find_resume_checkpoint(run_dir, resume)
        resume_stage = int(read_metadata(resume_path)["stage"])
        resume_state = load_training_state(resume_path)
    elif config.model.init_checkpoint:
        meta = read_metadata(config.model.init_checkpoint)
        if int(meta.get("stage", 1)) == 2:
            model.to_stage2(**(meta.get("stage2_args") or {}))
        _load_into(model, checkpoint_paths(config.model.init_checkpoint)[0])

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
    try:
        for stage in config.run.stages:
            if stage < resume_stage:
                continue  # finished before the resumed checkpoint
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
            stage_summary: dict[str, Any] = {"best_epoch": state.best_epoch,
                                             "best_metric": state.best_metric,
                                             "epochs": state.epoch}
            if config.data.val_list and config.run.final_eval:
                stage_summary["eval"] = _final_evaluation(model, ctx, stage)
            summary["stages"][stage] = stage_summary
    finally:
        if logger is not None:
            logger.close()

    final = checkpoint_paths(run_dir / f"stage{model.stage}_best")
    best_weights, _ = checkpoint_paths(run_dir / "best")
    if dist.is_main and final[0].is_file():
        data = final[0].read_bytes()
        atomic_write(best_weights, lambda handle: handle.write(data))
    summary["best_checkpoint"] = str(best_weights)
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


def _stage_history(run_dir: Any, stage: int) -> list[dict[str, Any]]:
    """Epoch records of a finished stage, from its last checkpoint."""
    from lgdnet.engine.checkpoint import checkpoint_paths, load_training_state

    if not checkpoint_paths(run_dir / f"stage{stage}_last")[1].is_file():
        return []
    return load_training_state(run_dir / f"stage{stage}_last")["progress"]["history"]


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

    dataset = builders.build_val_dataset(ctx.config, model.kind, ctx.classes, views="all")
    result = evaluate(model, dataset, device=ctx.dist.device, precision=ctx.config.optim.precision,
                      progress=ctx.config.run.progress and is_tty(),
                      num_workers=ctx.config.data.num_workers, description=f"stage {stage} eval")
    if ctx.dist.is_main:
        save_evaluation(result, ctx.run_dir / f"stage{stage}_eval", ctx.classes,
                        config=config_to_dict(ctx.config), extra={"stage": stage})
        print(f"stage {stage} evaluation ({dataset.spec.num_test_views * dataset.spec.test_crops} "
              f"views per video): {format_metrics(result.metrics, len(ctx.classes))}", flush=True)
    return dict(result.metrics)
