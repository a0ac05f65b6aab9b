"""One data loader for all the epochs of a training stage, its workers started once.

A ``DataLoader`` built anew every epoch forks new worker processes every epoch. A forked
worker shares the training process's memory copy-on-write, so for as long as it lives, every
page the training process writes (activations, gradients, the optimiser's buffers, reused
from one step to the next) is first copied: about a million page faults, 4 GiB copied, in
the first steps after each fork for `lgd3d_r50` at batch 4 on a CPU, enough to take 15-20%
off the throughput of short epochs (``benchmarks/RESULTS.md``, input pipeline). Here the
workers persist for the whole stage, and the epoch travels to them with every index:
the sampler yields ``(epoch, index)`` pairs and :class:`EpochItems` sets the dataset's
epoch before it loads, so the clips and augmentations drawn depend on ``(seed, epoch,
index)`` only, exactly as with fresh workers (and as a resumed run draws them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["EpochItems", "EpochOrder", "StageLoader"]


class EpochOrder(Sampler):
    """The samples of the current epoch as ``(epoch, index)`` pairs (set before each epoch)."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int]] = []

    def set(self, epoch: int, indices: Sequence[int]) -> None:
        self.items = [(int(epoch), int(i)) for i in indices]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(list(self.items))

    def __len__(self) -> int:
        return len(self.items)


class EpochItems(Dataset):
    """``dataset`` indexed by ``(epoch, index)``: sets the epoch (``set_epoch``, when the
    dataset has one) in whichever process loads the item, then returns ``dataset[index]``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if hasattr(self.dataset, "set_epoch") and getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


class StageLoader:
    """Batches of ``dataset`` epoch after epoch from one ``DataLoader``.

    Args:
        dataset: map-style dataset (``VideoDataset``; ``set_epoch`` is used when present).
        batch_size: samples per batch.
        num_workers: loading processes; with ``persistent`` they live until :meth:`close`.
        collate_fn: how samples form a batch.
        pin_memory: page-locked batches (for CUDA).
        persistent: keep the workers from one epoch to the next (the default); ``False``
            starts them anew every epoch, as a fresh ``DataLoader`` does.
    """

    def __init__(self, dataset: Any, batch_size: int, num_workers: int,
                 collate_fn: Callable[[list[Any]], Any] | None = None, pin_memory: bool = False,
                 persistent: bool = True) -> None:
        self.order = EpochOrder()
        self.loader: DataLoader | None = DataLoader(
            EpochItems(dataset), batch_size=batch_size, sampler=self.order,
            num_workers=num_workers, collate_fn=collate_fn, pin_memory=pin_memory,
            persistent_workers=persistent and num_workers > 0)

    def epoch(self, epoch: int, indices: Sequence[int]) -> DataLoader:
        """The loader, set to yield the batches of ``indices`` (in this order) for ``epoch``."""
        if self.loader is None:
            raise RuntimeError("the stage loader is closed")
        self.order.set(epoch, indices)
        return self.loader

    def close(self) -> None:
        """Stop the workers (also done when the loader is garbage-collected)."""
        loader, self.loader = self.loader, None
        iterator = getattr(loader, "_iterator", None) if loader is not None else None
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()

    def __enter__(self) -> StageLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
