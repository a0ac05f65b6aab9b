"""Frame sampling for LGD-2D and LGD-3D (Sec. 4.1, 4.2, 5.2)."""

from __future__ import annotations

import numpy as np
import pytest

from lgdnet.data import SamplingSpec
from lgdnet.data.sampling import (
    expand_snippets,
    sample_rng,
    sample_test_indices,
    sample_train_indices,
    segment_edges,
)
from lgdnet.errors import ConfigError


def test_paper_settings():
    spec3d = SamplingSpec.for_3d()
    assert (spec3d.scheme, spec3d.num_frames, spec3d.num_test_views) == ("clip", 16, 15)
    assert (spec3d.train_resize, spec3d.crop_size, spec3d.test_short_side) == ((120, 160), 112, 120)
    spec2d = SamplingSpec.for_2d()
    assert (spec2d.scheme, spec2d.num_frames, spec2d.num_test_views) == ("segments", 3, 10)
    assert (spec2d.train_resize, spec2d.crop_size, spec2d.test_short_side) == ((240, 320), 224, 240)
    assert SamplingSpec.for_3d(num_frames=128).num_frames == 128  # the long variant
    assert SamplingSpec.for_2d(test_crops=3).replace(num_frames=5).num_frames == 5


@pytest.mark.parametrize(
    "changes",
    [{"scheme": "tubes"}, {"crop_size": 200}, {"test_crops": 2}, {"pad": "zeros"}, {"num_frames": 0}],
)
def test_invalid_settings(changes):
    with pytest.raises(ConfigError):
        SamplingSpec.for_3d(**changes)


def test_clip_is_consecutive_at_stride_and_inside_the_video():
    spec = SamplingSpec.for_3d(frame_stride=2)
    starts = set()
    for index in range(200):
        indices = sample_train_indices(spec, 100, sample_rng(0, 0, index))
        assert indices.shape == (16,)
        assert np.all(np.diff(indices) == 2)
        assert 0 <= indices[0] and indices[-1] < 100
        starts.add(int(indices[0]))
    assert min(starts) == 0 and max(starts) == 100 - spec.clip_span  # every start reachable


def test_same_seed_same_indices_new_epoch_new_indices():
    spec = SamplingSpec.for_3d()
    draw = lambda seed, epoch: [  # noqa: E731
        sample_train_indices(spec, 300, sample_rng(seed, epoch, i)).tolist() for i in range(20)
    ]
    assert draw(0, 0) == draw(0, 0)
    assert draw(0, 0) != draw(0, 1)
    assert draw(0, 0) != draw(1, 0)


def test_short_video_loops_or_repeats_last():
    looped = sample_train_indices(SamplingSpec.for_3d(), 10, sample_rng(0, 0, 0))
    np.testing.assert_array_equal(looped, np.arange(16) % 10)
    padded = sample_train_indices(SamplingSpec.for_3d(pad="repeat_last"), 10, sample_rng(0, 0, 0))
    np.testing.assert_array_equal(padded, np.minimum(np.arange(16), 9))
    strided = sample_test_indices(SamplingSpec.for_3d(frame_stride=4, num_test_views=2), 50)
    np.testing.assert_array_equal(strided[0], (np.arange(16) * 4) % 50)


def test_segments_one_frame_in_each_and_all_frames_reachable():
    spec = SamplingSpec.for_2d()
    num_frames = 31
    edges = segment_edges(num_frames, 3)
    seen = [set() for _ in range(3)]
    for index in range(400):
        indices = sample_train_indices(spec, num_frames, sample_rng(5, 0, index))
        for segment, frame in enumerate(indices):
            assert edges[segment] - 1 < frame < edges[segment + 1]
            seen[segment].add(int(frame))
    covered = sorted(set().union(*seen))
    assert covered == list(range(num_frames))


def test_segments_shorter_than_segment_count():
    indices = sample_train_indices(SamplingSpec.for_2d(num_frames=5), 2, sample_rng(0, 0, 0))
    assert indices.shape == (5,) and indices.min() >= 0 and indices.max() <= 1
    assert np.all(np.diff(indices) >= 0)


def test_test_clips_uniformly_placed():
    spec = SamplingSpec.for_3d()
    views = sample_test_indices(spec, 300)
    assert views.shape == (15, 16)
    starts = views[:, 0]
    assert starts[0] == 0 and starts[-1] == 300 - 16
    steps = np.diff(starts)
    assert steps.max() - steps.min() <= 1
    assert np.all(np.diff(views, axis=1) == 1)


def test_test_triples_uniformly_placed_in_each_segment():
    spec = SamplingSpec.for_2d()
    views = sample_test_indices(spec, 300)
    assert views.shape == (10, 3)
    # View v sits at (v + 0.5) / 10 of each 100-frame segment.
    expected = np.floor((np.arange(10) + 0.5) * 10)[:, None] + np.array([0, 100, 200])[None]
    np.testing.assert_array_equal(views, expected)


def test_expand_snippets():
    out = expand_snippets(np.array([0, 8]), 5, 10, "loop")
    np.testing.assert_array_equal(out, [[0, 1, 2, 3, 4], [8, 9, 0, 1, 2]])
    out = expand_snippets(np.array([8]), 3, 10, "repeat_last")
    np.testing.assert_array_equal(out, [[8, 9, 9]])
