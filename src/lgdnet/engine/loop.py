"""One pass over the data: the inner training loop and the one-view validation of Sec. 4.3.

:func:`train_one_epoch` runs the micro-batches of one epoch with gradient accumulation,
mixed precision and per-step seeding (so a resumed run repeats the uninterrupted one);
:func:`validate_one_view` gives the quick single-view accuracy used between epochs. The
stages and the whole run are in :mod:`lgdnet.engine.training`.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lgdnet.engine import distributed
from lgdnet.engine.runtime import autocast
from lgdnet.errors import ConfigError


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(*keys: int) -> int:
    """A 63-bit seed that is a function of ``keys`` only (e.g. seed, stage, rank, step)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(2, np.uint64)[0] >> 1)


def batch_plan(batch_size: int, micro_batch_size: int, world_size: int) -> tuple[int, int]:
    """``(micro-batch per process, micro-batches accumulated per optimiser step)``.

    ``batch_size`` (effective, over all processes) = world_size x micro x accumulation.

    Raises:
        ConfigError: when the numbers do not divide.
    """
    if batch_size % world_size:
        raise ConfigError(f"optim.batch_size: {batch_size} is not divisible by {world_size} processes")
    per_process = batch_size // world_size
    micro = micro_batch_size or per_process
    if micro > per_process or per_process % micro:
        raise ConfigError(
            f"optim.micro_batch_size: {micro} must divide the per-process batch {per_process} "
            f"(optim.batch_size {batch_size} over {world_size} processes)"
        )
    return micro, per_process // micro


def collate_train(items: list[dict[str, Any] | None]) -> dict[str, torch.Tensor] | None:
    """Stack training items, leaving out ``None`` (videos skipped as unreadable)."""
    items = [item for item in items if item is not None]
    if not items:
        return None
    return {
        "video": torch.stack([item["video"] for item in items]),
        "label": torch.tensor([int(item["label"]) for item in items]),
        "index": torch.tensor([int(item["index"]) for item in items]),
    }


def snapshot_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of a module's buffers (BatchNorm running statistics, ...)."""
    return {name: buffer.detach().clone() for name, buffer in module.named_buffers()}


@dataclass
class EpochState:
    """Progress within the epoch being trained, as of the last optimiser step.

    :func:`train_one_epoch` updates it after every step; when a run is interrupted this is
    what the saved checkpoint records, so that resuming repeats nothing and skips nothing.
    """

    batches_done: int = 0  # micro-batches covered by completed optimiser steps
    global_step: int = 0
    totals: dict[str, float] = field(default_factory=dict)  # loss sums etc. of those batches
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. BatchNorm statistics


def train_one_epoch(
    model: torch.nn.Module,
    loader: Sequence | torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    accumulation: int = 1,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float = 0.0,
    state: EpochState | None = None,
    start_batch: int = 0,
    on_step: Callable[[dict[str, float]], None] | None = None,
    step_seed: Sequence[int] | None = None,
    progress: bool = False,
    description: str = "train",
) -> dict[str, float]:
    """One pass over ``loader`` with gradient accumulation.

    Every ``accumulation`` micro-batches make one optimiser step; the last group of an epoch
    may be shorter and its loss is averaged over its own length. The loss is
    ``lgdnet.models.heads.stage_loss``: Eq. (6) in stage 1, Eq. (7) in stage 2.

    Args:
        model: the network in its current stage (any module with ``forward_parts``), or
            that network already wrapped in :class:`~lgdnet.engine.distributed.ForwardParts`
            and DDP, as :func:`~lgdnet.engine.stage.setup_stage` wraps it.
        loader: yields ``{"video": (N, C, T, H, W), "label": (N,)}`` micro-batches (or None),
            plus any other tensors the network's ``input_keys`` name; the loss and accuracy
            are over the entries of ``label`` (clips, or a detector's proposals).
        optimizer: steps once per group of ``accumulation`` micro-batches.
        device: where the model is.
        accumulation: micro-batches per optimiser step.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast; fp16 with ``scaler``).
        scaler: a gradient scaler for fp16 (``None`` otherwise).
        grad_clip: clip the gradient norm to this value (0: no clipping).
        state: updated after each optimiser step (for saving an interrupted run).
        start_batch: index of the first micro-batch of ``loader`` within the epoch (resuming
            mid-epoch), so the accumulation groups fall where they did.
        on_step: called after each optimiser step with that step's losses, its wall time
            ``seconds`` (from the end of the previous step, so loading included; on CUDA the
            kernels still queued are counted in the step that waits for them) and
            ``data_seconds``, the part of it spent waiting for the loader.
        step_seed: if given, torch's generator is seeded with ``(*step_seed, step)`` before
            each optimiser step's micro-batches, so that the random draws of a step (dropout)
            do not depend on what ran before it: a run resumed mid-epoch repeats them.
        progress: show a tqdm bar with clips/s and ETA.

    Returns:
        Mean ``loss`` (and ``global_loss``/``local_loss`` in stage 1) and ``accuracy`` over
        this process's clips, ``clips``, ``clips_per_s``, ``seconds``, ``steps``.
    """
    from tqdm.auto import tqdm

    from lgdnet.models.heads import stage_loss

    state = state if state is not None else EpochState()
    if not isinstance(model, (torch.nn.parallel.DistributedDataParallel, distributed.ForwardParts)):
        model = distributed.ForwardParts(model)  # the per-classifier logits the loss needs
    model.train()
    total_batches = start_batch + len(loader)
    sums = {"loss": 0.0, "global_loss": 0.0, "local_loss": 0.0, "correct": 0.0, "clips": 0.0}
    sums.update(state.totals)  # resuming mid-epoch: what the first part of the epoch saw
    resumed_clips = sums["clips"]
    module = distributed.unwrap_model(model)
    # forward passes update BatchNorm statistics: keep them as of the last step
    state.buffers = snapshot_buffers(module)
    group: dict[str, float] = {}
    steps = 0
    started = time.perf_counter()
    step_started, data_seconds = started, 0.0
    bar = tqdm(total=len(loader), desc=description, unit="batch", disable=not progress,
               dynamic_ncols=True, leave=False)
    optimizer.zero_grad(set_to_none=True)
    waiting = time.perf_counter()
    for position, batch in enumerate(loader, start=start_batch):
        data_seconds += time.perf_counter() - waiting
        # groups are fixed within the epoch (start_batch is always a group boundary)
        group_start = position - position % accumulation
        group_end = min(group_start + accumulation, total_batches)
        is_step = position + 1 == group_end
        if position == group_start and step_seed is not None:
            torch.manual_seed(derived_seed(*step_seed, state.global_step + 1))
        if batch is not None:
            inputs = {key: value.to(device, non_blocking=True)
                      for key, value in batch.items() if torch.is_tensor(value)}
            target = inputs["label"]
            # under DDP, synchronise gradients only on the micro-batch that steps
            sync = is_step or not isinstance(model, torch.nn.parallel.DistributedDataParallel)
            with contextlib.nullcontext() if sync else model.no_sync():
                with autocast(device, precision):
                    outputs = model(inputs)
                outputs = {k: v.float() for k, v in outputs.items()}
                loss = stage_loss(outputs, target)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"{description}: the loss is {loss.item()} at micro-batch {position} "
                        f"(precision {precision}); lower optim.lr or use optim.precision=fp32")
                scaled = loss / (group_end - group_start)
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            n = float(target.shape[0])
            with torch.no_grad():
                parts = {"loss": loss.item()}
                if "global_logits" in outputs:  # stage 1: the two terms of Eq. (6)
                    parts["global_loss"] = F.cross_entropy(outputs["global_logits"], target).item()
                    parts["local_loss"] = F.cross_entropy(outputs["local_logits"], target).item()
                correct = (outputs["logits"].argmax(1) == target).sum().item()
            for key, value in parts.items():
                sums[key] += value * n
                group[key] = group.get(key, 0.0) + value * n
            group["clips"] = group.get("clips", 0.0) + n
            sums["correct"] += correct
            sums["clips"] += n
        if is_step:
            if scaler is not None:
                scaler.unscale_(optimizer)
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            state.global_step += 1
            state.batches_done = position + 1
            state.totals = dict(sums)
            state.buffers = snapshot_buffers(module)
            now = time.perf_counter()
            if on_step is not None and group.get("clips"):
                record = {k: v / group["clips"] for k, v in group.items() if k != "clips"}
                on_step({"step": state.global_step, "lr": optimizer.param_groups[0]["lr"], **record,
                         "seconds": now - step_started, "data_seconds": data_seconds})
            group = {}
            step_started, data_seconds = now, 0.0
        bar.update(1)
        elapsed = time.perf_counter() - started
        if sums["clips"]:
            bar.set_postfix(loss=f"{sums['loss'] / sums['clips']:.3f}",
                            clips_s=f"{(sums['clips'] - resumed_clips) / max(elapsed, 1e-9):.1f}")
        waiting = time.perf_counter()
    bar.close()
    seconds = time.perf_counter() - started
    clips = max(sums["clips"], 1.0)
    result = {
        "loss": sums["loss"] / clips,
        "accuracy": sums["correct"] / clips,
        "clips": sums["clips"],
        "clips_per_s": (sums["clips"] - resumed_clips) / max(seconds, 1e-9),
        "seconds": seconds,
        "steps": float(steps),
    }
    if sums["global_loss"] or sums["local_loss"]:
        result["global_loss"] = sums["global_loss"] / clips
        result["local_loss"] = sums["local_loss"] / clips
    return result


def _as_list(items: list[Any]) -> list[Any]:
    """Collate that keeps items as a list (a module-level function: workers pickle it)."""
    return [item for item in items if item is not None]


@torch.no_grad()
def validate_one_view(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    *,
    device: torch.device,
    batch_size: int = 8,
    precision: str = "fp32",
    num_workers: int = 0,
) -> float:
    """Top-1 accuracy from one view per video (the quick check run during training).

    Each process scores its own shard of the videos (no padding); the counts are summed over
    processes. The full multi-view protocol of Sec. 5.2 is ``lgdnet.engine.evaluate``.
    """
    model.eval()
    indices = distributed.shard_indices(len(dataset))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices),
                                         batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=_as_list)
    correct = total = 0.0
    for items in loader:
        # views of different videos may differ in size (full-frame test views): group by shape
        by_shape: dict[tuple[int, ...], list[dict[str, Any]]] = {}
        for item in items:
            by_shape.setdefault(tuple(item["video"].shape[1:]), []).append(item)
        for group in by_shape.values():
            video = torch.stack([item["video"][0] for item in group]).to(device)
            labels = torch.tensor([int(item["label"]) for item in group], device=device)
            with autocast(device, precision):
                logits = model(video)
            correct += (logits.float().argmax(1) == labels).sum().item()
            total += len(group)
    correct, total = distributed.all_reduce_sum([correct, total], device=device)
    return correct / total if total else math.nan


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """One log line summarising an epoch's record (used when no progress bar is shown)."""
    text = f"stage {record['stage']} epoch {record['epoch']}/{epochs}: loss {record['loss']:.4f}"
    if "global_loss" in record:
        text += f" (global {record['global_loss']:.4f}, local {record['local_loss']:.4f})"
    text += f"  train acc {100 * record['accuracy']:.1f}%"
    if record.get("val_accuracy") is not None:
        text += f"  val acc (1 view) {100 * record['val_accuracy']:.1f}%"
    return text + f"  {record['clips_per_s']:.1f} clips/s  lr {record['lr']:.2e}"


def is_tty() -> bool:
    """Progress bars only on a terminal; logs and pipes get one line per epoch instead."""
    return sys.stderr.isatty()
