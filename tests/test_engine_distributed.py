"""Distributed data parallel: torchrun with 2 CPU processes (gloo) keeps the ranks in step."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lgdnet.engine import distributed


def test_single_process_needs_no_launcher(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = distributed.init_distributed("cpu")
    assert (context.rank, context.world_size, context.is_distributed) == (0, 1, False)
    assert context.device == torch.device("cpu")
    assert distributed.get_world_size() == 1 and distributed.is_main_process()
    assert distributed.all_gather_object({"a": 1}) == [{"a": 1}]
    assert distributed.all_reduce_sum([1.0, 2.5]) == [1.0, 2.5]
    distributed.barrier()
    distributed.cleanup()


def test_cleanup_meets_at_a_barrier_only_on_the_normal_path(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    distributed.cleanup()
    assert calls == ["barrier", "destroy"]
    calls.clear()
    distributed.cleanup(synchronize=False)  # after an error: no barrier the others may not reach
    assert calls == ["destroy"]


def test_shard_indices_cover_everything_once_without_padding():
    shards = [distributed.shard_indices(10, rank=r, world_size=3) for r in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(i for shard in shards for i in shard) == list(range(10))
    assert distributed.shard_indices(2, rank=3, world_size=4) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


WORKER = textwrap.dedent('''
    import json, sys
    from pathlib import Path

    import torch

    from lgdnet.engine import distributed, training
    from lgdnet.engine.config import Config, apply_overrides
    from lgdnet.models import create_model

    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    context = distributed.init_distributed("cpu")


    class Clips(torch.utils.data.Dataset):
        def __init__(self):
            generator = torch.Generator().manual_seed(0)
            self.videos = torch.randn(12, 3, 8, 32, 32, generator=generator)

        def __len__(self):
            return 12

        def __getitem__(self, index):
            return {"video": self.videos[index], "label": index % 3, "index": index}


    config = apply_overrides(Config(), [
        "model.name=lgd3d_tiny", "optim.epochs=2", "optim.micro_batch_size=1",
        "data.num_workers=0", "run.progress=false", f"run.out_dir={out}"])
    # different initial weights on each rank: DDP must start every rank from rank 0's
    torch.manual_seed(100 + context.rank)
    model = create_model("lgd3d_tiny", 3, base_width=4)
    initial = {k: v.clone() for k, v in model.named_parameters()}
    stage = training.StageContext(config=config, dist=context, train_set=Clips(), val_set=None,
                                  classes=["a", "b", "c"], run_dir=out, batch_size=4)
    state = training.fit_stage(model, 1, stage)
    torch.save({"initial": initial, "final": dict(model.named_parameters())},
               out / f"rank{context.rank}.pt")
    gathered = distributed.all_gather_object({"rank": context.rank, "steps": state.global_step})
    total = distributed.all_reduce_sum([float(context.rank + 1)])
    shard = distributed.shard_indices(5)
    (out / f"rank{context.rank}.json").write_text(json.dumps(
        {"gathered": gathered, "total": total, "shard": shard,
         "world": distributed.get_world_size(), "history": state.history}))
    distributed.cleanup()
''')


@pytest.mark.slow
def test_two_processes_end_with_identical_parameters(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    torchrun(["worker.py", str(tmp_path)], cwd=tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    names = list(ranks[0]["final"])
    assert names
    # the ranks started apart, trained on different shards, and ended identical
    assert any(not torch.equal(ranks[0]["initial"][n], ranks[1]["initial"][n]) for n in names)
    for name in names:
        assert torch.equal(ranks[0]["final"][name], ranks[1]["final"][name]), name
    assert any(not torch.equal(ranks[0]["final"][n], ranks[0]["initial"][n]) for n in names)
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, info in enumerate(infos):
        assert info["world"] == 2
        # batch 4 = 2 processes x micro-batch 1 x 2 accumulations; 12 clips -> 3 steps/epoch
        assert info["gathered"] == [{"rank": 0, "steps": 6}, {"rank": 1, "steps": 6}]
        assert info["total"] == [3.0]
        assert info["shard"] == [[0, 2, 4], [1, 3]][rank]
    # the epoch records (averaged over both processes) agree
    assert infos[0]["history"][-1]["loss"] == infos[1]["history"][-1]["loss"]
    # only rank 0 writes checkpoints
    assert (tmp_path / "stage1_last.safetensors").is_file()


@pytest.mark.slow
def test_lgdnet_train_under_torchrun(tmp_path):
    from lgdnet.data import write_synthetic_dataset
    from lgdnet.engine.checkpoint import load_model

    data = write_synthetic_dataset(tmp_path / "data", clips_per_class=3,
                                   classes=["approach", "separate"], num_frames=12, size=(48, 64),
                                   workers=1, progress=False)
    torchrun(["-m", "lgdnet.cli", "train", "--model", "lgd3d_tiny", "--device", "cpu",
              "--train-list", str(data.train_list), "--val-list", str(data.val_list),
              "--out", str(tmp_path / "run"),
              "--set", "model.options.base_width=4", "--set", "model.sketch_dim=32",
              "--set", "data.num_frames=8", "--set", "data.train_resize=40,48",
              "--set", "data.crop_size=32", "--set", "data.test_short_side=32",
              "--set", "data.num_test_views=2", "--set", "data.num_workers=0",
              "--set", "optim.epochs=1", "--set", "optim.batch_size=2",
              "--set", "run.progress=false"], cwd=tmp_path)
    model, config, classes = load_model(tmp_path / "run" / "best.safetensors")
    assert model.stage == 2 and classes == ["approach", "separate"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stages"]["2"]["eval"]["num_videos"] == 2  # each video counted once
