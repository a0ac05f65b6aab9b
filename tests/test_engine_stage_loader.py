"""The training stage's loader: workers started once, the epoch sent with every index."""

from __future__ import annotations

import os

import pytest
import torch

from lgdnet.engine.stage_loader import EpochItems, StageLoader


class EpochDataset(torch.utils.data.Dataset):
    """Items that show which epoch the loading process had set, and which process loaded them."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, int]:
        return {"index": index, "epoch": self.epoch, "value": 100 * self.epoch + index,
                "pid": os.getpid()}


def _collate(items):
    return {key: [item[key] for item in items] for key in items[0]}


def _run(loader) -> list[dict[str, list[int]]]:
    return list(loader)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_each_epoch_loads_with_its_own_epoch(num_workers):
    dataset = EpochDataset()
    with StageLoader(dataset, 3, num_workers, collate_fn=_collate) as stage:
        for epoch, order in ((1, [5, 2, 7, 0]), (2, [1, 3, 4, 6, 2]), (3, [7])):
            batches = _run(stage.epoch(epoch, order))
            assert [b["index"] for b in batches] == [order[i:i + 3] for i in range(0, len(order), 3)]
            got = [v for b in batches for v in b["value"]]
            assert got == [100 * epoch + i for i in order]  # as the main process would load them
            assert len(stage.epoch(epoch, order)) == len(batches)


def test_workers_persist_across_epochs_unless_told_otherwise():
    dataset = EpochDataset(size=12)
    pids = {}
    for persistent in (True, False):
        with StageLoader(dataset, 2, 2, collate_fn=_collate, persistent=persistent) as stage:
            per_epoch = [{pid for b in _run(stage.epoch(e, range(12))) for pid in b["pid"]}
                         for e in (1, 2, 3)]
        assert all(os.getpid() not in s for s in per_epoch)
        pids[persistent] = per_epoch
    assert pids[True][0] == pids[True][1] == pids[True][2]  # the same two processes
    assert not pids[False][0] & pids[False][1]  # new processes every epoch


def test_an_interrupted_epoch_then_the_next_one():
    """Resuming mid-epoch gives the loader the rest of the order; an epoch left half-read (an
    error in the training step) does not leak its batches into the next one."""
    dataset = EpochDataset(size=10)
    with StageLoader(dataset, 2, 2, collate_fn=_collate) as stage:
        iterator = iter(stage.epoch(1, range(10)))
        next(iterator)
        del iterator  # the epoch stopped after one batch
        rest = _run(stage.epoch(2, [4, 5, 6]))
    assert [b["value"] for b in rest] == [[204, 205], [206]]


def test_closed_loader_refuses_new_epochs():
    stage = StageLoader(EpochDataset(), 2, 0)
    stage.close()
    with pytest.raises(RuntimeError, match="closed"):
        stage.epoch(1, [0])


def test_epoch_items_works_with_datasets_that_have_no_epoch():
    items = EpochItems([10, 11, 12])
    assert len(items) == 3 and items[(4, 2)] == 12
