"""Multi-view evaluation: view averaging, bounded chunks, saved results, 2 ranks = 1 rank."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from lgdnet.engine.evaluate import evaluate, save_evaluation, score_views, view_features
from lgdnet.engine.metrics import load_scores
from lgdnet.errors import ConfigError

NUM_CLASSES = 5


class TinyVideoNet(nn.Module):
    """A stand-in LGD network: conv, pooling, linear; records every batch size it sees."""

    kind = "3d"
    num_classes = NUM_CLASSES

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(4)
        self.fc = nn.Linear(4, NUM_CLASSES)
        self.batch_sizes: list[int] = []

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.batch_sizes.append(x.shape[0])
        local = torch.relu(self.norm(self.conv(x)))
        return local, local.mean((2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x)[1])


class ViewDataset(torch.utils.data.Dataset):
    """Test-mode items like ``VideoDataset(mode="test")``: all views of one video."""

    def __init__(self, num_videos: int = 7, num_views: int = 5, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.videos = torch.randn(num_videos, num_views, 3, 4, 8, 8, generator=generator)
        self.labels = [i % NUM_CLASSES for i in range(num_videos)]

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict:
        return {"video": self.videos[index], "label": self.labels[index], "index": index,
                "video_id": f"video_{index:02d}"}


def make_model(seed: int = 0) -> TinyVideoNet:
    torch.manual_seed(seed)
    model = TinyVideoNet()
    model.norm.running_mean.uniform_(-0.1, 0.1)  # eval mode must use running statistics
    return model


def test_scores_are_softmax_averaged_over_views():
    model = make_model().eval()
    views = torch.randn(6, 3, 4, 8, 8)
    expected = torch.softmax(model(views), dim=1).mean(0)
    scores = score_views(model, views, views_per_chunk=4)
    torch.testing.assert_close(scores, expected.detach())
    assert scores.sum().item() == pytest.approx(1.0, abs=1e-5)
    # averaging probabilities is not softmax of averaged logits
    not_expected = torch.softmax(model(views).mean(0), dim=0)
    assert not torch.allclose(scores, not_expected.detach())


@pytest.mark.parametrize("views_per_chunk", [1, 2, 3])
def test_chunked_equals_unchunked_with_bounded_chunks(views_per_chunk):
    dataset = ViewDataset(num_videos=4, num_views=5)
    model = make_model()
    whole = evaluate(model, dataset, views_per_chunk=100, progress=False)
    assert max(model.batch_sizes) == 5
    model.batch_sizes.clear()
    chunked = evaluate(model, dataset, views_per_chunk=views_per_chunk, progress=False)
    assert max(model.batch_sizes) == views_per_chunk
    assert sum(model.batch_sizes) == 4 * 5  # every view seen once
    np.testing.assert_allclose(chunked.scores, whole.scores, rtol=1e-5, atol=1e-6)
    assert chunked.metrics == whole.metrics


class ChunkedViewDataset(ViewDataset):
    """The same videos split into items of at most ``per_item`` views, as
    ``VideoDataset(..., views_per_item=K)`` yields them (chunk k of video i at i * C + k)."""

    def __init__(self, per_item: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.per_item = per_item
        self.chunks = -(-self.videos.shape[1] // per_item)

    def __len__(self) -> int:
        return len(self.videos) * self.chunks

    def __getitem__(self, index: int) -> dict:
        video, chunk = divmod(index, self.chunks)
        views = (chunk * self.per_item, min((chunk + 1) * self.per_item, self.videos.shape[1]))
        item = super().__getitem__(video)
        return {**item, "video": item["video"][views[0]:views[1]], "chunk": chunk, "views": views}


@pytest.mark.parametrize("per_item", [1, 2, 5])
def test_views_split_over_items_give_the_same_scores(per_item):
    """Probabilities are summed over a video's items and divided by its view count, so a
    last, smaller chunk weighs each of its views like the others."""
    model = make_model()
    whole = evaluate(model, ViewDataset(num_videos=4, num_views=5), progress=False)
    split = evaluate(model, ChunkedViewDataset(per_item, num_videos=4, num_views=5),
                     progress=False)
    np.testing.assert_allclose(split.scores, whole.scores, rtol=1e-5, atol=1e-6)
    assert split.video_ids == whole.video_ids and split.indices == whole.indices
    assert split.metrics == whole.metrics


def test_view_features_chunked_match_whole():
    model = make_model().eval()
    views = torch.randn(5, 3, 4, 8, 8)
    local, global_ = view_features(model, views, views_per_chunk=2)
    whole_local, whole_global = model.forward_features(views)
    assert local.shape == (5, 4, 4, 8, 8) and global_.shape == (5, 4)
    torch.testing.assert_close(local, whole_local.detach())
    torch.testing.assert_close(global_, whole_global.detach())


def test_evaluate_result_order_metrics_and_mode():
    dataset = ViewDataset(num_videos=7, num_views=3)
    model = make_model().train()
    result = evaluate(model, dataset, views_per_chunk=2, progress=False)
    assert model.training  # restored after evaluation
    assert result.video_ids == [f"video_{i:02d}" for i in range(7)]
    assert result.scores.shape == (7, NUM_CLASSES)
    np.testing.assert_array_equal(result.labels, dataset.labels)
    hits = (result.scores.argmax(1) == np.array(dataset.labels)).mean()
    assert result.metrics["top1"] == pytest.approx(hits)
    assert result.metrics["top5"] == pytest.approx(1.0)  # 5 classes
    assert result.metrics["num_videos"] == 7


def test_bf16_precision_close_to_fp32():
    dataset = ViewDataset(num_videos=3, num_views=2)
    model = make_model()
    full = evaluate(model, dataset, progress=False)
    half = evaluate(model, dataset, precision="bf16", progress=False)
    np.testing.assert_allclose(half.scores, full.scores, atol=0.05)
    with pytest.raises(ConfigError, match="unknown precision"):
        evaluate(model, dataset, precision="int3", progress=False)


def test_save_evaluation_writes_scores_metrics_and_png(tmp_path):
    dataset = ViewDataset(num_videos=6, num_views=2)
    result = evaluate(make_model(), dataset, progress=False)
    classes = [f"class {i}" for i in range(NUM_CLASSES)]
    config = {"model": {"name": "tiny"}, "data": {"num_test_views": 2}}
    paths = save_evaluation(result, tmp_path / "eval", classes, config=config)
    saved = load_scores(paths["scores"])
    np.testing.assert_allclose(saved.scores, result.scores, rtol=1e-6)
    assert saved.video_ids == result.video_ids and saved.classes == classes
    record = json.loads(paths["metrics"].read_text())
    assert record["metrics"] == result.metrics
    assert record["config"] == config
    assert paths["confusion_matrix"].read_bytes()[:4] == b"\x89PNG"


# --- two processes (gloo) give the same result as one ------------------------------------


def _distributed_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    try:
        torch.set_num_threads(1)
        model = make_model()
        result = evaluate(model, ViewDataset(num_videos=7, num_views=3), views_per_chunk=2,
                          progress=False)
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), scores=result.scores,
                 labels=result.labels, video_ids=np.array(result.video_ids),
                 seen=np.array(model.batch_sizes), top1=result.metrics["top1"],
                 mca=result.metrics["mean_class_accuracy"])
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_match_one_rank(tmp_path):
    import torch.multiprocessing as mp

    single = evaluate(make_model(), ViewDataset(num_videos=7, num_views=3), views_per_chunk=2,
                      progress=False)
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
             join=True)
    views_seen = 0
    for rank in range(2):
        with np.load(tmp_path / f"rank{rank}.npz") as data:
            np.testing.assert_allclose(data["scores"], single.scores, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(data["labels"], single.labels)
            assert list(data["video_ids"]) == single.video_ids
            assert float(data["top1"]) == pytest.approx(single.metrics["top1"])
            assert float(data["mca"]) == pytest.approx(single.metrics["mean_class_accuracy"])
            views_seen += int(data["seen"].sum())
    assert views_seen == 7 * 3  # the 7 videos were split, not scored twice or padded


def test_split_views_skip_broken_videos(clips_dir, tmp_path):
    """Real clips split into items of 8 views, with a missing and an empty file among them:
    the broken videos are left out, and each readable one is scored over all its views."""
    from lgdnet.data import SamplingSpec, VideoDataset, VideoRecord

    (tmp_path / "empty.mp4").write_bytes(b"")
    paths = [clips_dir / "v_SoccerJuggling_g23_c01.avi", tmp_path / "missing.mp4",
             tmp_path / "empty.mp4", clips_dir / "R6llTwEh07w.mp4"]
    records = [VideoRecord(path=str(p), label=i % 2, video_id=p.stem) for i, p in enumerate(paths)]
    spec = SamplingSpec.for_3d(num_test_views=20, num_frames=4, test_short_side=32)
    dataset = VideoDataset(records, spec, mode="test", on_error="skip", views_per_item=8)
    model = make_model()
    counted = []
    model.register_forward_pre_hook(lambda module, args: counted.append(args[0].shape[0]))
    result = evaluate(model, dataset, progress=False)
    assert result.indices == [0, 3]
    assert result.video_ids == ["v_SoccerJuggling_g23_c01", "R6llTwEh07w"]
    assert len(dataset.bad_files) == 2
    np.testing.assert_allclose(result.scores.sum(1), 1.0, rtol=1e-5)
    # the chunks of the two broken videos were replaced by the next readable video's, whose
    # duplicates count once: 20 views of the first video, 3 x 20 of the last
    assert max(counted) <= 8 and sum(counted) == 20 + 3 * 20
    whole = VideoDataset([records[0]], spec, mode="test")[0]["video"]
    with torch.no_grad():
        expected = torch.softmax(model.eval()(whole), 1).mean(0).numpy()
    np.testing.assert_allclose(result.scores[0], expected, rtol=1e-4, atol=1e-6)
