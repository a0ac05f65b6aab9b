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
from lgdnet.engine.compilation import apply_compile
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
from lgdnet.engine.optimizer import load_sgd_state, make_sgd
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
    epochs: float  # as configured, possibly fractional (12.5)
    micro: int
    accumulation: int
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    sampler: torch.utils.data.DistributedSampler
    loader: StageLoader
    state: StageState
    num_epochs: int = 0  # epochs run: ceil(epochs)
    last_fraction: float = 1.0  # share of the last epoch's optimiser steps that are run
    parts: Any = None  # the TrainParts inside ``net``

    def training_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {}}


def setup_stage(model: torch.nn.Module, stage: int, ctx: StageContext) -> StageRun:
    """Place ``model`` (already in stage ``stage``), wrap it for training and build a fresh
    optimiser (Sec. 4.3: one per stage; Sec. 5.2: SGD with momentum, step decay), the
    sampler and the stage's loader."""
    from lgdnet.engine.config import epoch_plan, stage_batch, stage_settings

    config, dist, device = ctx.config, ctx.dist, ctx.dist.device
    optim = config.optim
    epochs, lr, lr_step = stage_settings(optim, stage)
    micro, accumulation = batch_plan(ctx.batch_size, stage_batch(optim, stage)[1], dist.world_size)
    model.to(device)
    to_memory_format(model, resolve_memory_format(config.run.memory_format, device, optim.precision))
    parts = TrainParts(model, frozen_norms(model, optim.freeze_bn))
    apply_compile(parts, config.run.compile, device)
    net = _wrap(parts, dist)
    optimizer = make_sgd(param_groups(model, lr, optim.backbone_lr_mult), lr=lr,
                         momentum=optim.momentum, weight_decay=optim.weight_decay,
                         kernel=optim.sgd_kernel)
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
    num_epochs, last_fraction = epoch_plan(epochs)
    return StageRun(model=model, net=net, stage=stage, epochs=epochs, micro=micro,
                    accumulation=accumulation, optimizer=optimizer, scheduler=scheduler,
                    scaler=scaler, sampler=sampler, loader=loader, state=StageState(stage),
                    num_epochs=num_epochs, last_fraction=last_fraction, parts=parts)


class TrainParts(distributed.ForwardParts):
    """:class:`~lgdnet.engine.distributed.ForwardParts` that keeps some BatchNorm layers in
    eval mode while the rest trains (frozen running statistics, ``optim.freeze_bn``, and the
    whole backbone during ``optim.freeze_backbone_epochs``)."""

    def __init__(self, module: torch.nn.Module, frozen: list[torch.nn.Module]) -> None:
        super().__init__(module)
        self.frozen = list(frozen)  # a plain list: not registered, so no change to the keys

    def train(self, mode: bool = True) -> TrainParts:
        super().train(mode)
        for norm in self.frozen:
            norm.eval()
        return self


_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


def frozen_norms(model: torch.nn.Module, freeze_bn: str) -> list[torch.nn.Module]:
    """The BatchNorm layers whose statistics stay fixed: none, all, or ``"partial"``: all but
    the first (TSN's partial BN, which adapts the first layer to the new input)."""
    norms = [m for m in model.modules() if isinstance(m, _NORMS)]
    if freeze_bn == "all":
        return norms
    if freeze_bn == "partial":
        return norms[1:]
    return []


def head_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The classifier's parameters (``get_classifier()``)."""
    return list(model.get_classifier().parameters())


def param_groups(model: torch.nn.Module, lr: float, backbone_lr_mult: float) -> list[dict[str, Any]]:
    """SGD parameter groups: one (the paper's) when the backbone learns at ``lr``; else the
    classifier at ``lr`` first and the backbone at ``lr * backbone_lr_mult`` (fine-tuning)."""
    if backbone_lr_mult == 1.0:
        return [{"params": list(model.parameters())}]
    head = {id(p) for p in head_parameters(model)}
    return [{"params": [p for p in model.parameters() if id(p) in head], "lr": lr},
            {"params": [p for p in model.parameters() if id(p) not in head],
             "lr": lr * backbone_lr_mult}]


def _wrap(parts: torch.nn.Module, dist: distributed.DistributedContext) -> torch.nn.Module:
    if not dist.is_distributed:
        return parts
    device = dist.device
    return torch.nn.parallel.DistributedDataParallel(
        parts, device_ids=[device.index] if device.type == "cuda" else None)


def set_backbone_frozen(run: StageRun, ctx: StageContext, frozen: bool) -> None:
    """Train the classifier only (``frozen``) or the whole network: the backbone's parameters
    stop (or start) taking gradients, so SGD leaves them, their momentum and their weight
    decay alone, and its BatchNorm statistics stay fixed. Under DDP the wrapper is rebuilt,
    as DDP fixes the parameters it reduces when built."""
    head = {id(p) for p in head_parameters(run.model)}
    backbone = [p for p in run.model.parameters() if id(p) not in head]
    if all(p.requires_grad != frozen for p in backbone):
        return
    for p in backbone:
        p.requires_grad_(not frozen)
    run.parts.frozen = (frozen_norms(run.model, "all") if frozen
                        else frozen_norms(run.model, ctx.config.optim.freeze_bn))
    if ctx.dist.is_distributed:
        run.net = _wrap(run.parts, ctx.dist)


def resume_stage(run: StageRun, resume: dict[str, Any]) -> None:
    """Continue ``run`` from a training state saved in ``stage{N}_last``: optimiser,
    schedule, scaler, progress and the generators."""
    from lgdnet.errors import CheckpointError

    try:
        load_sgd_state(run.optimizer, resume["optimizer"])
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
    order = epoch_order(run, epoch)
    loader = run.loader.epoch(epoch, order[start_batch * run.micro:])
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
                     run.num_epochs, record["step"], record["loss"], record["lr"])

    try:
        metrics = train_one_epoch(
            run.net, loader, run.optimizer, device=device, accumulation=run.accumulation,
            precision=optim.precision, scaler=run.scaler, grad_clip=optim.grad_clip,
            state=progress, start_batch=start_batch, on_step=log_step,
            step_seed=(config.run.seed, stage, dist.rank), progress=show_bar,
            description=f"stage {stage} epoch {epoch}/{run.epochs:g}")
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
    record = {"stage": stage, "epoch": epoch, "lr": lr_now,
              **{k: sums[i] / clips for i, k in enumerate(keys)},
              "clips_per_s": sums[len(keys) + 1], "seconds": metrics["seconds"],
              "steps": state.global_step}
    if epoch == run.num_epochs and run.last_fraction < 1.0:
        record["fraction"] = run.last_fraction  # a partial last epoch (e.g. 12.5 epochs)
    return record


def epoch_order(run: StageRun, epoch: int) -> list[int]:
    """This process's sample indices of ``epoch``, in order; the partial last epoch of a
    fractional count keeps the first ``round(fraction x steps per epoch)`` optimiser steps
    (at least one), so a resumed run cuts it at the same place."""
    order = list(run.sampler)
    if epoch != run.num_epochs or run.last_fraction >= 1.0:
        return order
    batches = math.ceil(len(order) / run.micro)
    # rounded half up (Python's round() rounds 2.5 to 2)
    steps = max(1, math.floor(run.last_fraction * math.ceil(batches / run.accumulation) + 0.5))
    return order[:min(batches, steps * run.accumulation) * run.micro]


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
    try:
        _fit_epochs(run, ctx, show_bar, validated)
    finally:  # the network leaves the stage with every parameter trainable
        for p in model.parameters():
            p.requires_grad_(True)
    run.loader.close()
    if not validated and state.epoch > 0:
        _save(ctx, f"stage{stage}_best", model, state, None)
        distributed.barrier()
    return state


def _fit_epochs(run: StageRun, ctx: StageContext, show_bar: bool, validated: bool) -> None:
    config, model, stage, state = ctx.config, run.model, run.stage, run.state
    for epoch in range(state.epoch + 1, run.num_epochs + 1):
        # the first optim.freeze_backbone_epochs epochs train the classifier only
        set_backbone_frozen(run, ctx, epoch <= config.optim.freeze_backbone_epochs)
        steps_before = state.global_step
        record = run_epoch(run, epoch, ctx, show_bar)
        if state.global_step == steps_before:
            run.loader.close()
            from lgdnet.errors import LgdnetError

            raise LgdnetError(
                f"{config.data.train_list}: stage {stage} epoch {epoch} trained on no clip: "
                "every video was unreadable (the warnings above name them)")
        every = config.run.eval_every
        if validated and (epoch % every == 0 or epoch == run.num_epochs):
            record["val_accuracy"] = validate_one_view(
                model, ctx.val_set, device=ctx.dist.device, batch_size=run.micro,
                precision=config.optim.precision, num_workers=config.data.num_workers)
        state.history.append(record)
        if ctx.logger is not None:
            ctx.logger.log_epoch(record)
            log.info("%s", epoch_line(record, run.num_epochs))
        if validated:
            metric = record.get("val_accuracy", -math.inf)
            if metric > state.best_metric:
                state.best_metric, state.best_epoch = metric, epoch
                _save(ctx, f"stage{stage}_best", model, state, None)
        else:  # no validation metric: the stage's model is its last epoch's
            state.best_epoch = epoch
        _save(ctx, f"stage{stage}_last", model, state, run.training_state())
        distributed.barrier()


def has_validation(ctx: StageContext) -> bool:
    """Whether the stage is validated: a validation list and ``run.eval_every > 0``; the
    stage's best model is then the best validation epoch's, otherwise the last epoch's."""
    return ctx.val_set is not None and bool(ctx.config.run.eval_every)
