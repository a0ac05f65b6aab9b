"""The relation datasets (lgdnet.data.synthetic_relations): balanced marginals, geometry of
the far and near layouts, events that touch only their footprints, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from lgdnet.data.synthetic_relations import (
    RELATIONS,
    draw_clip,
    far_gap,
    label_of,
    render_relation_clip,
    sample_scene,
    write_relation_dataset,
)


@pytest.mark.parametrize("relation", RELATIONS)
def test_each_event_alone_says_nothing_about_the_class(relation):
    rng = np.random.default_rng(0)
    counts = np.zeros((2, 2))  # [label, state of the left event]
    for i in range(800):
        label = i % 2
        _, scene, states = draw_clip(rng, relation, "far", label, (72, 72), 4)
        assert label_of(states) == label
        left = int(np.argmin(scene.centres[:, 0, 0]))
        counts[label, states[left]] += 1
    share = counts[:, 1] / counts.sum(1)  # P(left state = 1 | label)
    assert np.all(np.abs(share - 0.5) < 0.06), share


@pytest.mark.parametrize(("side", "field"), [(72, 39), (112, 75)])
def test_far_events_are_farther_apart_than_the_receptive_field(side, field):
    assert far_gap(side) > field
    rng = np.random.default_rng(1)
    for relation in RELATIONS:
        for _ in range(200):
            far = sample_scene(rng, relation, "far", (side, side), 8)
            near = sample_scene(rng, relation, "near", (side, side), 8)
            assert far.gap() >= far_gap(side) - 1e-9
            assert near.gap() < 12
            for scene in (far, near):  # footprints inside the frame
                boxes = scene.footprints()
                assert boxes[:, 0].min() >= 0 and boxes[:, 1].max() <= side
                assert boxes[:, 2].min() >= 0 and boxes[:, 3].max() <= side


@pytest.mark.parametrize("relation", RELATIONS)
def test_states_change_pixels_only_inside_their_event_footprint(relation):
    rng = np.random.default_rng(2)
    scene = sample_scene(rng, relation, "far", (72, 72), 8)
    base = render_relation_clip(scene, (0, 0)).astype(int)
    boxes = scene.footprints()
    for event in range(2):
        states = (1, 0) if event == 0 else (0, 1)
        changed = np.abs(render_relation_clip(scene, states).astype(int) - base).max((0, 3)) > 0
        ys, xs = np.nonzero(changed)
        assert len(xs) > 20, "the state must show"
        x0, x1, y0, y1 = boxes[event]
        assert xs.min() >= np.floor(x0) and xs.max() <= np.ceil(x1)
        assert ys.min() >= np.floor(y0) and ys.max() <= np.ceil(y1)


def test_motion_states_are_invisible_in_one_frame_but_not_in_two():
    rng = np.random.default_rng(3)
    scene = sample_scene(rng, "motion", "far", (72, 72), 9)
    up, down = render_relation_clip(scene, (0, 0)), render_relation_clip(scene, (1, 1))
    assert np.array_equal(up[4], down[4])  # the middle frame: both columns at their centre
    assert not np.array_equal(up[0], down[0])


def test_dataset_is_deterministic_and_lists_both_classes(tmp_path):
    first = write_relation_dataset(tmp_path / "a", relation="colour", layout="far",
                                   clips_per_class=3, size=(72, 72), num_frames=4,
                                   val_fraction=0.34, workers=1, progress=False)
    second = write_relation_dataset(tmp_path / "b", relation="colour", layout="far",
                                    clips_per_class=3, size=(72, 72), num_frames=4,
                                    val_fraction=0.34, workers=1, progress=False)
    assert first.classes == ["same_colour", "different_colour"]
    assert (first.num_train, first.num_val) == (4, 2)
    lines = first.train_list.read_text().splitlines()
    assert {line.split()[1] for line in lines} == {"0", "1"}
    for line in lines:
        path = line.split()[0]
        assert (first.root / path).read_bytes() == (second.root / path).read_bytes()
    from lgdnet.data import open_video

    video = open_video(first.root / lines[0].split()[0])
    assert (video.num_frames, video.height, video.width) == (4, 72, 72)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="relation"):
        sample_scene(np.random.default_rng(0), "texture", "far", (72, 72), 4)
    with pytest.raises(ValueError, match="too small"):
        sample_scene(np.random.default_rng(0), "motion", "far", (24, 24), 4)
    with pytest.raises(ValueError, match="even"):
        write_relation_dataset(tmp_path, size=(71, 71), progress=False)
