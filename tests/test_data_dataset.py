"""VideoDataset on real clips (2D and 3D, train and test), bad files, flow, data loaders."""

from __future__ import annotations

import logging
import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import REAL_CLIPS, read_index
from torch.utils.data import DataLoader, DistributedSampler

from lgdnet.data import SamplingSpec, VideoDataset, collate_views, open_video
from lgdnet.data import transforms as T
from lgdnet.data.sampling import sample_rng, sample_train_indices
from lgdnet.errors import VideoReadError


@dataclass(frozen=True)
class Record:
    path: str
    label: int
    video_id: str


def _records(clips_dir, names):
    return [Record(str(clips_dir / name), i, name.rsplit(".", 1)[0]) for i, name in enumerate(names)]


NAMES = sorted(REAL_CLIPS)


# -- shapes on the real clips -------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_train_shapes_on_real_clips(clips_dir, name):
    records = _records(clips_dir, [name])
    item3d = VideoDataset(records, SamplingSpec.for_3d())[0]
    assert item3d["video"].shape == (3, 16, 112, 112) and item3d["video"].dtype == torch.float32
    assert (item3d["label"], item3d["index"]) == (0, 0)
    item2d = VideoDataset(records, SamplingSpec.for_2d())[0]
    assert item2d["video"].shape == (3, 3, 224, 224)


@pytest.mark.parametrize("name", NAMES)
def test_test_shapes_on_real_clips(clips_dir, name):
    height, width, _ = REAL_CLIPS[name]
    records = _records(clips_dir, [name])
    item = VideoDataset(records, SamplingSpec.for_3d(), mode="test")[0]
    assert item["video"].shape == (15, 3, 16, 120, round(width * 120 / height))
    assert item["video_id"] == name.rsplit(".", 1)[0]
    item = VideoDataset(records, SamplingSpec.for_2d(), mode="test")[0]
    assert item["video"].shape == (10, 3, 3, 240, round(width * 240 / height))


def test_three_crop_testing(clips_dir):
    records = _records(clips_dir, ["RATRACE_wave_f_nm_np1_fr_goo_37.avi"])
    spec = SamplingSpec.for_3d(test_crops=3, num_test_views=2)
    video = VideoDataset(records, spec, mode="test")[0]["video"]
    assert video.shape == (6, 3, 16, 120, 120)
    whole = VideoDataset(records, spec.replace(test_crops=1), mode="test")[0]["video"]
    # View 0's crops are its left, centre and right squares (the frame is 120x280).
    assert torch.equal(video[0], whole[0, ..., :120])
    assert torch.equal(video[1], whole[0, ..., 80:200])
    assert torch.equal(video[2], whole[0, ..., 160:])


@pytest.mark.parametrize("views_per_item", [1, 4, 6, 100])
def test_views_split_over_items_equal_all_views(clips_dir, views_per_item):
    """Chunks of at most K views (decoding only their clips) put together are the item that
    holds every view; indices, labels and view ranges say where each chunk belongs."""
    records = _records(clips_dir, ["v_SoccerJuggling_g23_c01.avi", "RATRACE_wave_f_nm_np1_fr_goo_37.avi"])
    spec = SamplingSpec.for_3d(test_crops=3, num_test_views=3, num_frames=4)  # 9 views
    whole = VideoDataset(records, spec, mode="test")
    split = VideoDataset(records, spec, mode="test", views_per_item=views_per_item)
    chunks = -(-9 // views_per_item)
    assert len(whole) == 2 and len(split) == 2 * chunks
    for video in range(2):
        items = [split[video * chunks + k] for k in range(chunks)]
        assert [item["chunk"] for item in items] == list(range(chunks))
        assert all(item["index"] == video and item["label"] == video for item in items)
        assert [item["views"] for item in items] == [
            (k * views_per_item, min(9, (k + 1) * views_per_item)) for k in range(chunks)]
        assert max(item["video"].shape[0] for item in items) == min(views_per_item, 9)
        assert torch.equal(torch.cat([item["video"] for item in items]), whole[video]["video"])


def test_short_clip_loops(clips_dir):
    # 16 frames at stride 5 span 76 frames, more than the 72-frame HMDB51 clip holds.
    name = "RATRACE_wave_f_nm_np1_fr_goo_37.avi"
    records = _records(clips_dir, [name])
    spec = SamplingSpec.for_3d(frame_stride=5, num_test_views=1)
    assert VideoDataset(records, spec)[0]["video"].shape == (3, 16, 112, 112)
    video = VideoDataset(records, spec, mode="test")[0]["video"][0]
    with open_video(clips_dir / name) as source:
        expected_indices = (np.arange(16) * 5) % source.num_frames
        assert expected_indices[-1] < expected_indices[-2]  # it wraps around
        frames = source.get_frames(expected_indices.tolist(), size=(120, 280))
    assert torch.allclose(video, T.normalize_rgb(frames))


# -- determinism, epochs, workers -----------------------------------------------------------


def _index_dataset(make_index_video, count=4, **options):
    records = [
        Record(str(make_index_video(f"v{i}.mp4", 40 + 10 * i, size=(48, 64))), i, f"v{i}")
        for i in range(count)
    ]
    spec = SamplingSpec.for_3d(num_frames=4, train_resize=(48, 64), crop_size=32)
    return VideoDataset(records, spec, **options)


def test_same_seed_same_items_new_epoch_differs(make_index_video):
    dataset = _index_dataset(make_index_video)
    first = [dataset[i]["video"] for i in range(4)]
    assert all(torch.equal(a, dataset[i]["video"]) for i, a in enumerate(first))
    dataset.set_epoch(1)
    assert any(not torch.equal(a, dataset[i]["video"]) for i, a in enumerate(first))
    other_seed = _index_dataset(make_index_video, seed=1)
    assert any(not torch.equal(a, other_seed[i]["video"]) for i, a in enumerate(first))


@pytest.mark.slow
def test_results_independent_of_workers_and_sharding(make_index_video):
    dataset = _index_dataset(make_index_video, decode_threads=1)
    dataset.set_epoch(3)

    def batches(workers):
        loader = DataLoader(dataset, batch_size=2, num_workers=workers)
        return [(b["video"], b["index"]) for b in loader]

    single, parallel = batches(0), batches(2)
    assert len(single) == len(parallel) == 2
    for (video_a, index_a), (video_b, index_b) in zip(single, parallel):
        assert torch.equal(index_a, index_b) and torch.equal(video_a, video_b)
    # Two DistributedSampler shards see the same items as one process.
    by_index = {int(i): v for video, index in single for i, v in zip(index, video)}
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        for batch in DataLoader(dataset, batch_size=1, sampler=sampler):
            assert torch.equal(batch["video"][0], by_index[int(batch["index"][0])])


def test_train_items_hold_the_sampled_frames(make_index_video):
    # Crop = the whole resized frame, so the index code can be read back after the flip.
    path = make_index_video("v.mp4", 40, size=(48, 64))
    spec = SamplingSpec.for_3d(num_frames=6, frame_stride=3, train_resize=(48, 48), crop_size=48)
    dataset = VideoDataset([Record(str(path), 0, "v")], spec, seed=11)
    mean = torch.tensor(T.IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(T.IMAGENET_STD).view(3, 1, 1, 1)
    flips = set()
    for epoch in range(8):
        dataset.set_epoch(epoch)
        video = dataset[0]["video"]
        frames = ((video * std + mean) * 255).round().clamp(0, 255).permute(1, 2, 3, 0).numpy()
        expected = sample_train_indices(spec, 40, sample_rng(11, epoch, 0)).tolist()
        flipped = read_index(frames[:, :, ::-1]).tolist() == expected
        assert flipped or read_index(frames).tolist() == expected
        flips.add(flipped)
    assert flips == {True, False}


# -- bad files ----------------------------------------------------------------------------


def _mixed_records(clips_dir, tmp_path):
    empty = tmp_path / "empty.avi"
    empty.touch()
    good = str(clips_dir / "v_SoccerJuggling_g23_c01.avi")
    return [
        Record(good, 0, "good0"),
        Record(str(tmp_path / "missing.avi"), 1, "missing"),
        Record(str(empty), 2, "empty"),
        Record(good, 3, "good3"),
    ]


def test_on_error_raise(clips_dir, tmp_path):
    dataset = VideoDataset(_mixed_records(clips_dir, tmp_path), SamplingSpec.for_2d())
    with pytest.raises(VideoReadError, match="missing.avi"):
        dataset[1]


def test_on_error_skip_substitutes_logs_and_records(clips_dir, tmp_path, caplog):
    log_file = tmp_path / "bad_files.tsv"
    records = _mixed_records(clips_dir, tmp_path)
    dataset = VideoDataset(
        records, SamplingSpec.for_2d(), on_error="skip", bad_files_log=log_file
    )
    with caplog.at_level(logging.WARNING):
        item = dataset[1]
    assert item["index"] == 3 and item["label"] == 3  # the next readable sample
    assert item["video"].shape == (3, 3, 224, 224)
    assert [path for path, _ in dataset.bad_files] == [records[1].path, records[2].path]
    assert "missing.avi" in caplog.text and "empty.avi" in caplog.text
    lines = log_file.read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == [records[1].path, records[2].path]
    assert "empty" in lines[1].split("\t")[1]
    # Known bad samples are not opened again, and are substituted the same way.
    assert dataset[2]["index"] == 3
    assert len(dataset.bad_files) == 2
    assert dataset[0]["index"] == 0


def test_on_error_skip_all_bad_raises(tmp_path):
    records = [Record(str(tmp_path / f"gone{i}.mp4"), i, str(i)) for i in range(3)]
    dataset = VideoDataset(records, SamplingSpec.for_3d(), on_error="skip")
    with pytest.raises(VideoReadError, match="none of the 3 samples"):
        dataset[0]
    assert len(dataset.bad_files) == 3


def test_test_items_collate_into_lists(clips_dir):
    records = _records(clips_dir, ["v_SoccerJuggling_g23_c01.avi", "RATRACE_wave_f_nm_np1_fr_goo_37.avi"])
    spec = SamplingSpec.for_3d(num_test_views=2, num_frames=4)
    dataset = VideoDataset(records, spec, mode="test")
    batch = collate_views([dataset[0], dataset[1]])
    assert [tuple(v.shape) for v in batch["video"]] == [(2, 3, 4, 120, 160), (2, 3, 4, 120, 280)]
    assert batch["label"].tolist() == [0, 1] and batch["index"].tolist() == [0, 1]
    assert batch["video_id"] == ["v_SoccerJuggling_g23_c01", "RATRACE_wave_f_nm_np1_fr_goo_37"]


# -- optical flow -------------------------------------------------------------------------


class FakeFlow:
    """A flow source whose frame i has x code i and y code 100 + i everywhere."""

    def __init__(self, path, num_frames=20, height=30, width=40):
        self.path, self.num_frames, self.fps = path, num_frames, 30.0
        self.height, self.width = height, width

    def get_frames(self, indices):
        indices = torch.as_tensor(list(indices), dtype=torch.uint8)
        frames = torch.empty((len(indices), self.height, self.width, 2), dtype=torch.uint8)
        frames[..., 0] = indices.view(-1, 1, 1)
        frames[..., 1] = 100 + indices.view(-1, 1, 1)
        return frames

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def fake_flow_module(monkeypatch):
    module = types.ModuleType("lgdnet.data.flow")
    module.open_flow = lambda path: FakeFlow(path)
    monkeypatch.setitem(sys.modules, "lgdnet.data.flow", module)


def test_flow_segments_stack_consecutive_frames(fake_flow_module):
    spec = SamplingSpec.for_2d(train_resize=(30, 40), crop_size=24, test_short_side=30)
    records = [Record("flow_of_video_a", 4, "a")]
    video = VideoDataset(records, spec, mode="test", modality="flow")[0]["video"]
    assert video.shape == (10, 10, 3, 30, 40)  # views, 2 x flow_stack, T, H, W
    # 16 snippet starts (20 frames - 5 + 1) in 3 segments; view 0 starts at 0, 5 and 10.
    for t, start in enumerate((0, 5, 10)):
        for step in range(5):
            assert torch.allclose(video[0, 2 * step, t], torch.tensor((start + step) / 127.5 - 1))
            assert torch.allclose(video[0, 2 * step + 1, t], torch.tensor((100 + start + step) / 127.5 - 1))
    train = VideoDataset(records, spec, modality="flow")
    assert train[0]["video"].shape == (10, 3, 24, 24)


def test_flow_clip_and_flip_negates_x(fake_flow_module):
    spec = SamplingSpec.for_3d(num_frames=4, train_resize=(30, 40), crop_size=24)
    dataset = VideoDataset([Record("flow", 0, "f")], spec, modality="flow")
    signs = set()
    for epoch in range(12):
        dataset.set_epoch(epoch)
        video = dataset[0]["video"]
        assert video.shape == (2, 4, 24, 24)
        codes = (video + 1) * 127.5  # back to uint8 codes
        y_index = codes[1, :, 0, 0] - 100
        x_code = codes[0, :, 0, 0]
        if torch.allclose(x_code, y_index, atol=1e-3):
            signs.add("as is")
        else:
            assert torch.allclose(x_code, 255 - y_index, atol=1e-3)  # flipped: x' = 255 - x
            signs.add("flipped")
    assert signs == {"as is", "flipped"}


@pytest.mark.parametrize("enabled", [True, False])
def test_horizontal_flip_can_be_turned_off(clips_dir, monkeypatch, enabled):
    flips = []
    real_flip = T.flip_horizontal
    monkeypatch.setattr(T, "flip_horizontal", lambda *a, **k: flips.append(1) or real_flip(*a, **k))
    spec = SamplingSpec.for_3d(num_frames=4, train_resize=(48, 64), crop_size=32,
                               horizontal_flip=enabled)
    dataset = VideoDataset(_records(clips_dir, ["v_SoccerJuggling_g23_c01.avi"]), spec)
    for epoch in range(12):
        dataset.set_epoch(epoch)
        dataset[0]
    assert (len(flips) > 0) == enabled
