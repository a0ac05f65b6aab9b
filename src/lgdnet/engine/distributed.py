"""Data-parallel training with ``torch.distributed``: one process per device.

A single process needs no launcher: ``lgdnet train --config run.yaml`` just runs. For
several processes, PyTorch's own launcher ``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``, and :func:`init_distributed` joins the process group (``gloo`` on CPU,
``nccl`` on CUDA, one GPU per process)::

    # one machine, 8 GPUs
    torchrun --nproc_per_node=8 -m lgdnet.cli train --config run.yaml

    # two machines with 8 GPUs each: run on both, node_rank 0 on the first one
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 \\
        --master_addr=10.0.0.1 --master_port=29500 -m lgdnet.cli train --config run.yaml
    torchrun --nnodes=2 --node_rank=1 --nproc_per_node=8 \\
        --master_addr=10.0.0.1 --master_port=29500 -m lgdnet.cli train --config run.yaml

    # CPU only (gloo), e.g. to try it out
    torchrun --nproc_per_node=2 -m lgdnet.cli train --config run.yaml --set run.device=cpu

``optim.batch_size`` is the effective batch summed over all processes (Sec. 5.2: 64 clips
or 128 triples "implemented with multiple GPUs in parallel"); each process takes its share,
with gradient accumulation where ``optim.micro_batch_size`` is smaller. Only rank 0 writes
checkpoints, records and progress bars. All processes must see the same files
(``data.root``, ``run.out_dir`` on a shared file system, or at least the data everywhere).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from lgdnet.engine.runtime import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group started by ``torchrun`` (if any) and pick this process's device.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
            Under ``torchrun`` with CUDA, each process takes GPU ``LOCAL_RANK``.

    Returns:
        The :class:`DistributedContext` of this process; a single process (no
        ``WORLD_SIZE`` or ``WORLD_SIZE=1``) gets rank 0 of 1 without a process group.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
            dist.init_process_group(backend="nccl", device_id=resolved)
        else:
            dist.init_process_group(backend="gloo")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=resolved)


def cleanup(synchronize: bool = True) -> None:
    """Leave the process group (no-op in a single process).

    With ``synchronize`` (the normal end of a run) the ranks first meet at a barrier, so that
    none tears its communicators down while another still finishes the last collective
    (gloo can abort a process at exit then). After an error pass ``False``: the other ranks
    may be waiting in another collective, which a barrier would not match.
    """
    if dist.is_available() and dist.is_initialized():
        try:
            if synchronize:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if get_world_size() > 1:
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Gather one picklable object from every process; ``[obj]`` in a single process.

    Returns:
        A list of ``world_size`` objects, indexed by rank, identical on every process.
    """
    world_size = get_world_size()
    if world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_sum(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Sum a list of numbers over all processes (each process passes the same length)."""
    if get_world_size() == 1:
        return list(values)
    # nccl reduces CUDA tensors only; gloo reduces CPU tensors
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def shard_indices(n: int, rank: int | None = None, world_size: int | None = None) -> list[int]:
    """This process's share of ``range(n)`` for evaluation: ``rank::world_size``, no padding.

    Unlike ``DistributedSampler``, no index is repeated, so gathering per-video results
    from every process counts each video exactly once.
    """
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    return list(range(rank, n, world_size))


class ForwardParts(torch.nn.Module):
    """A network whose ``forward`` takes a training batch and returns its ``forward_parts``:
    the per-classifier logits the stage loss needs (Eq. 6). Training calls this wrapper (and
    DDP wraps it), so the loss's terms come out of the one forward pass that DDP
    synchronises, while the network's own ``forward`` stays the plain logits.

    The batch entries passed to ``forward_parts`` are those the network names in its
    ``input_keys`` attribute (``("video",)`` when it has none; the detector takes
    ``("video", "rois")``)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self.input_keys = tuple(getattr(module, "input_keys", ("video",)))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.module.forward_parts(*(batch[key] for key in self.input_keys))


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside ``DistributedDataParallel`` and :class:`ForwardParts` wrappers."""
    while isinstance(model, (torch.nn.parallel.DistributedDataParallel, ForwardParts)):
        model = model.module
    return model
