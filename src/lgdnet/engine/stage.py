"""One training stage (Sec. 4.3) in parts that each read on their own.

:func:`setup_stage` (the wrapped network, a fresh optimiser, sampler and loader),
:func:`resume_stage` (continue from a saved training state), :func:`run_epoch` (one epoch,
saving the progress first if anything interrupts it, :func:`save_interrupted`) and
:func:`fit_stage`, which runs the epochs with validation and checkpoints. The whole run of
both stages is :func:`lgdnet.engine.training.train`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from lgdnet.engine import distributed
from lgdnet.engine.checkpoint import set_rng_state
from lgdnet.engine.loop import (
    EpochState,
    batch_plan,
    collate_train,
    derived_seed,
    epoch_line,
    is_tty,
    train_one_epoch,
    validate_one_view,
)
from lgdnet.engine.stage_loader import StageLoader
from lgdnet.models.layout import resolve_memory_format, to_memory_format

log = logging.getLogger(__name__)


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
    collate_fn: Any = collate_train  # items -> a batch dict with "label" (None: all skipped)


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


@dataclass
class StageRun:
    """What :func:`setup_stage` builds for one stage: the wrapped network, the optimiser and
    its schedule, the sampler and the loader, and the stage's progress."""

    model: torch.nn.Module  # the network itself
    net: torch.nn.Module  # what training calls: ForwardParts(model), DDP-wrapped if distributed
    stage: int
    epochs: int
    micro: int
    accumulation: int
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    sampler: torch.utils.data.DistributedSampler
    loader: StageLoader
    state: StageState

    def training_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {}}


def setup_stage(model: torch.nn.Module, stage: int, ctx: StageContext) -> StageRun:
    """Place ``model`` (already in stage ``stage``), wrap it for training and build a fresh
    optimiser (Sec. 4.3: one per stage; Sec. 5.2: SGD with momentum, step decay), the
    sampler and the stage's loader."""
    from lgdnet.engine.config import stage_settings

    config, dist, device = ctx.config, ctx.dist, ctx.dist.device
    optim = config.optim
    epochs, lr, lr_step = stage_settings(optim, stage)
    micro, accumulation = batch_plan(ctx.batch_size, optim.micro_batch_size, dist.world_size)
    model.to(device)
    to_memory_format(model, resolve_memory_format(config.run.memory_format, device, optim.precision))
    net: torch.nn.Module = distributed.ForwardParts(model)
    if dist.is_distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=optim.momentum,
                                weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_step, gamma=optim.lr_gamma)
    scaler = torch.amp.GradScaler(device.type) if optim.precision == "fp16" else None
    # the order of the clips depends on (seed, stage, epoch) only, so a resumed run sees
    # the same batches; DistributedSampler gives each process its share
    sampler = torch.utils.data.DistributedSampler(
        ctx.train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
        seed=config.run.seed + stage, drop_last=False)
    # one loader for the whole stage, its workers started once (lgdnet.engine.stage_loader)
    loader = StageLoader(ctx.train_set, micro, config.data.num_workers, collate_fn=ctx.collate_fn,
                         pin_memory=device.type == "cuda",
                         persistent=config.data.persistent_workers)
    return StageRun(model=model, net=net, stage=stage, epochs=epochs, micro=micro,
                    accumulation=accumulation, optimizer=optimizer, scheduler=scheduler,
                    scaler=scaler, sampler=sampler, loader=loader, state=StageState(stage))


def resume_stage(run: StageRun, resume: dict[str, Any]) -> None:
    """Continue ``run`` from a training state saved in ``stage{N}_last``: optimiser,
    schedule, scaler, progress and the generators."""
    from lgdnet.errors import CheckpointError

    try:
        run.optimizer.load_state_dict(resume["optimizer"])
        run.scheduler.load_state_dict(resume["scheduler"])
        if run.scaler is not None and resume.get("scaler"):
            run.scaler.load_state_dict(resume["scaler"])
        run.state = StageState.from_dict(resume["progress"])
        set_rng_state(resume["rng"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"stage {run.stage} training state: not a state lgdnet wrote "
                              f"({type(error).__name__}: {error})") from None


def save_interrupted(run: StageRun, ctx: StageContext, progress: EpochState) -> None:
    """Record how far the interrupted epoch got and write ``stage{N}_last``, so ``--resume``
    continues from the last optimiser step: BatchNorm statistics are put back as of that
    step (the forward passes after it are undone)."""
    state = run.state
    state.global_step, state.batches_done = progress.global_step, progress.batches_done
    state.epoch_totals = progress.totals
    with torch.no_grad():
        for name, buffer in run.model.named_buffers():
            if name in progress.buffers:
                buffer.copy_(progress.buffers[name])
    try:
        _save(ctx, f"stage{run.stage}_last", run.model, state, run.training_state())
    except Exception as error:  # pragma: no cover - do not hide the original error
        log.error("could not save stage%d_last: %s", run.stage, error)


def run_epoch(run: StageRun, epoch: int, ctx: StageContext, show_bar: bool) -> dict[str, Any]:
    """Train epoch ``epoch`` of the stage (from where an interrupted one stopped) and return
    its record, averaged over the processes; on any exception the progress is saved first."""
    config, dist, device, state = ctx.config, ctx.dist, ctx.dist.device, run.state
    stage, optim = run.stage, config.optim
    run.sampler.set_epoch(epoch)
    start_batch = state.batches_done
    loader = run.loader.epoch(epoch, list(run.sampler)[start_batch * run.micro:])
    progress = EpochState(batches_done=start_batch, global_step=state.global_step,
                          totals=dict(state.epoch_totals))
    # the loader's worker seeds come from torch's generator: make them a function of the
    # epoch, so a resumed run draws the same ones
    torch.manual_seed(derived_seed(config.run.seed, stage, dist.rank, epoch))

    def log_step(record: dict[str, float]) -> None:
        if ctx.logger is None:
            return
        ctx.logger.log_step({"stage": stage, "epoch": epoch, **record})
        if not show_bar and record["step"] % config.run.log_every == 0:
            log.info("stage %d epoch %d/%d step %d: loss %.4f lr %.2e", stage, epoch,
                     run.epochs, record["step"], record["loss"], record["lr"])

    try:
        metrics = train_one_epoch(
            run.net, loader, run.optimizer, device=device, accumulation=run.accumulation,
            precision=optim.precision, scaler=run.scaler, grad_clip=optim.grad_clip,
            state=progress, start_batch=start_batch, on_step=log_step,
            step_seed=(config.run.seed, stage, dist.rank), progress=show_bar,
            description=f"stage {stage} epoch {epoch}/{run.epochs}")
    except BaseException:
        run.loader.close()
        save_interrupted(run, ctx, progress)  # never lose the work
        raise
    state.global_step, state.batches_done, state.epoch_totals = progress.global_step, 0, {}
    state.epoch = epoch
    lr_now = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()  # Sec. 5.2: divided by 10 every 20 epochs
    # average over all processes, weighting by clips
    keys = [k for k in ("loss", "global_loss", "local_loss", "accuracy") if k in metrics]
    sums = distributed.all_reduce_sum(
        [metrics[k] * metrics["clips"] for k in keys] + [metrics["clips"], metrics["clips_per_s"]],
        device=device)
    clips = max(sums[len(keys)], 1.0)
    return {"stage": stage, "epoch": epoch, "lr": lr_now,
            **{k: sums[i] / clips for i, k in enumerate(keys)},
            "clips_per_s": sums[len(keys) + 1], "seconds": metrics["seconds"],
            "steps": state.global_step}


def fit_stage(
    model: torch.nn.Module, stage: int, ctx: StageContext, resume: dict[str, Any] | None = None
) -> StageState:
    """Train ``model`` (already in stage ``stage``) for the stage's epochs (Sec. 4.3, 5.2).

    Validates every ``run.eval_every`` epochs (one view per video) and writes the checkpoints
    ``stage{N}_last`` (every epoch, with the training state) and ``stage{N}_best`` (the best
    validation accuracy; without a validation metric, that is without a validation list or
    with ``run.eval_every=0``, the model of the last epoch, see :func:`has_validation`). An
    epoch that trains on no clip at all (every video unreadable) stops the stage with a
    :class:`~lgdnet.errors.LgdnetError` before any checkpoint of it is written. If training
    stops with an exception or Ctrl-C, ``stage{N}_last`` is written first, recording how far
    the epoch got, so ``--resume`` continues from there.

    Args:
        model: the network (not wrapped); moved to the device and wrapped here.
        stage: 1 or 2.
        ctx: datasets, configuration, output directory, distributed context.
        resume: a training state loaded from ``stage{N}_last`` to continue from.

    Returns:
        The final :class:`StageState` (history of epoch records, best epoch).
    """
    config = ctx.config
    run = setup_stage(model, stage, ctx)
    if resume is not None:
        resume_stage(run, resume)
    state = run.state
    show_bar = config.run.progress and ctx.dist.is_main and is_tty()
    validated = has_validation(ctx)
    for epoch in range(state.epoch + 1, run.epochs + 1):
        steps_before = state.global_step
        record = run_epoch(run, epoch, ctx, show_bar)
        if state.global_step == steps_before:
            run.loader.close()
            from lgdnet.errors import LgdnetError

            raise LgdnetError(
                f"{config.data.train_list}: stage {stage} epoch {epoch} trained on no clip: "
                "every video was unreadable (the warnings above name them)")
        every = config.run.eval_every
        if validated and (epoch % every == 0 or epoch == run.epochs):
            record["val_accuracy"] = validate_one_view(
                model, ctx.val_set, device=ctx.dist.device, batch_size=run.micro,
                precision=config.optim.precision, num_workers=config.data.num_workers)
        state.history.append(record)
        if ctx.logger is not None:
            ctx.logger.log_epoch(record)
            log.info("%s", epoch_line(record, run.epochs))
        if validated:
            metric = record.get("val_accuracy", -math.inf)
            if metric > state.best_metric:
                state.best_metric, state.best_epoch = metric, epoch
                _save(ctx, f"stage{stage}_best", model, state, None)
        else:  # no validation metric: the stage's model is its last epoch's
            state.best_epoch = epoch
        _save(ctx, f"stage{stage}_last", model, state, run.training_state())
        distributed.barrier()
    run.loader.close()
    if not validated and state.epoch > 0:
        _save(ctx, f"stage{stage}_best", model, state, None)
        distributed.barrier()
    return state


def has_validation(ctx: StageContext) -> bool:
    """Whether the stage is validated: a validation list and ``run.eval_every > 0``; the
    stage's best model is then the best validation epoch's, otherwise the last epoch's."""
    return ctx.val_set is not None and bool(ctx.config.run.eval_every)
