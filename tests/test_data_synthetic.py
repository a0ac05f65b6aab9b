"""The embedded synthetic dataset: determinism, layout, real decodable videos, and classes that
one frame cannot tell apart."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lgdnet.cli import main as cli_main
from lgdnet.data.annotations import load_annotations
from lgdnet.data.decoding import open_video
from lgdnet.data.synthetic import (
    CLASS_NAMES,
    SYNTHETIC_CLASSES,
    _trajectories,
    hflip_label_map,
    render_clip,
    write_synthetic_dataset,
)

TINY = dict(clips_per_class=2, num_frames=12, size=(48, 64), val_fraction=0.5, workers=1, progress=False)


def _decode_all(path) -> np.ndarray:
    with open_video(path) as video:
        return video.get_frames(range(video.num_frames)).numpy()


def test_tiny_dataset_layout_counts_and_decoding(tmp_path):
    dataset = write_synthetic_dataset(tmp_path / "a", seed=3, **TINY)
    assert dataset.classes == list(CLASS_NAMES) and len(CLASS_NAMES) == 8
    assert (dataset.num_train, dataset.num_val) == (8, 8)
    for list_path, count in ((dataset.train_list, 8), (dataset.val_list, 8)):
        annotations = load_annotations(list_path)  # classes.txt beside the list names the labels
        assert annotations.classes == list(CLASS_NAMES)
        assert Counter(r.label for r in annotations.records) == dict.fromkeys(range(8), count // 8)
        for record in annotations.records:
            assert record.video_id.split("/")[1] == CLASS_NAMES[record.label]
    readme = dataset.readme.read_text()
    assert all(f"`{c.name}`" in readme and c.why_global in readme for c in SYNTHETIC_CLASSES)
    record = load_annotations(dataset.train_list).records[0]
    with open_video(record.path) as video:
        assert (video.num_frames, video.height, video.width, round(video.fps)) == (12, 48, 64, 25)
        frames = video.get_frames([0, 11])
    assert frames.shape == (2, 48, 64, 3) and frames.float().std() > 10  # a real picture, not blank


def test_same_seed_same_dataset_other_seed_other_clips(tmp_path):
    first = write_synthetic_dataset(tmp_path / "a", seed=5, **TINY)
    again = write_synthetic_dataset(tmp_path / "b", seed=5, **{**TINY, "workers": 2})
    other = write_synthetic_dataset(tmp_path / "c", seed=6, **TINY)
    assert first.train_list.read_bytes() == again.train_list.read_bytes()
    assert first.val_list.read_bytes() == again.val_list.read_bytes()
    relative = "videos/pass_by/pass_by_0001.mp4"
    for clip in sorted((first.root / "videos").rglob("*.mp4")):  # one and two processes alike
        assert clip.read_bytes() == (again.root / clip.relative_to(first.root)).read_bytes(), clip
    reference = _decode_all(first.root / relative)
    np.testing.assert_array_equal(reference, _decode_all(again.root / relative))
    assert np.abs(reference.astype(int) - _decode_all(other.root / relative)).mean() > 5


def test_class_subset_keeps_each_clip(tmp_path):
    subset = write_synthetic_dataset(tmp_path / "s", seed=1, classes=["pass_by", "approach"], **TINY)
    full = write_synthetic_dataset(tmp_path / "f", seed=1, **TINY)
    assert subset.classes == ["pass_by", "approach"]
    assert load_annotations(subset.train_list).records[0].label == 0
    relative = "videos/approach/approach_0001.mp4"  # a clip depends on (seed, class, number) only
    np.testing.assert_array_equal(_decode_all(subset.root / relative), _decode_all(full.root / relative))
    with pytest.raises(ValueError, match="unknown or repeated synthetic classes"):
        write_synthetic_dataset(tmp_path / "x", classes=["juggling"], **TINY)


def _motion_signature(kind: str, seed: int) -> dict[str, float]:
    progress = np.linspace(0, 1, 40)
    a, b, marker = _trajectories(kind, np.random.default_rng(seed), progress, 96, 128)
    gap = np.linalg.norm(a - b, axis=1)
    to_marker = np.linalg.norm(a - marker, axis=1)
    relative = a - b
    turn = relative[:-1, 0] * relative[1:, 1] - relative[:-1, 1] * relative[1:, 0]  # z of cross product
    va, vb = a[-1] - a[0], b[-1] - b[0]
    cosine = float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))
    return {"gap_change": gap[-1] - gap[0], "marker_change": to_marker[-1] - to_marker[0],
            "turn": float(np.sign(turn).mean()), "cosine": cosine, "gap_spread": float(np.ptp(gap))}


@pytest.mark.parametrize("seed", range(12))
def test_every_class_moves_as_documented(seed):
    s = {kind: _motion_signature(kind, seed) for kind in CLASS_NAMES}
    assert s["approach"]["gap_change"] < -20 and s["separate"]["gap_change"] > 20
    # Image y points down: a positive cross product turns clockwise on screen.
    assert s["orbit_clockwise"]["turn"] == 1.0 and s["orbit_counterclockwise"]["turn"] == -1.0
    assert s["orbit_clockwise"]["gap_spread"] < 1e-6
    assert s["toward_marker"]["marker_change"] < -20 and s["away_from_marker"]["marker_change"] > 20
    assert s["move_together"]["cosine"] > 0.999 and s["move_together"]["gap_spread"] < 1e-6
    assert s["pass_by"]["cosine"] < -0.999


def test_paired_classes_are_time_reversals():
    progress = np.linspace(0, 1, 20)
    for forward, backward in (("approach", "separate"), ("orbit_clockwise", "orbit_counterclockwise"),
                              ("toward_marker", "away_from_marker")):
        a, b, m = _trajectories(forward, np.random.default_rng(9), progress, 96, 128)
        ra, rb, rm = _trajectories(backward, np.random.default_rng(9), progress, 96, 128)
        np.testing.assert_allclose(ra, a[::-1])
        np.testing.assert_allclose(rb, b[::-1])
        np.testing.assert_allclose(rm, m)


def test_hflip_swaps_only_the_orbit_senses():
    progress = np.linspace(0, 1, 40)
    a, b, _ = _trajectories("orbit_clockwise", np.random.default_rng(0), progress, 96, 128)
    mirrored = (a - b) * np.array([-1, 1])  # x -> W - x
    turn = mirrored[:-1, 0] * mirrored[1:, 1] - mirrored[:-1, 1] * mirrored[1:, 0]
    assert (turn < 0).all()  # a flipped clockwise orbit turns counter-clockwise
    mapping = hflip_label_map(list(CLASS_NAMES))
    assert [CLASS_NAMES[i] for i in mapping] == [
        "approach", "separate", "orbit_counterclockwise", "orbit_clockwise",
        "toward_marker", "away_from_marker", "move_together", "pass_by"]


def test_render_clip_shape_and_range():
    clip = render_clip("toward_marker", np.random.default_rng(0), 16, (96, 128))
    assert clip.shape == (16, 96, 128, 3) and clip.dtype == np.uint8
    assert np.abs(np.diff(clip.astype(np.int16), axis=0)).mean() > 1  # things move, noise is fresh


def test_clutter_scales_background_and_noise_only():
    busy = render_clip("pass_by", np.random.default_rng(4), 8, (48, 64)).astype(np.int16)
    plain = render_clip("pass_by", np.random.default_rng(4), 8, (48, 64), clutter=0.0).astype(np.int16)
    changed = lambda clip: (np.abs(clip[1] - clip[0]).max(-1) > 2).mean()  # noqa: E731
    assert changed(busy) > 0.3 and 0 < changed(plain) < 0.1  # fresh noise vs only the movers


def test_cli_writes_a_dataset(tmp_path, capsys):
    status = cli_main(["synthetic", str(tmp_path / "d"), "--clips-per-class", "1", "--frames", "8",
                       "--size", "32x48", "--val-fraction", "0", "--classes", "approach,separate",
                       "--workers", "1", "--quiet"])
    assert status == 0
    assert "wrote 2 clips" in capsys.readouterr().out
    assert (tmp_path / "d" / "classes.txt").read_text() == "approach\nseparate\n"
    assert (tmp_path / "d" / "train.txt").read_text().splitlines() == [
        "videos/approach/approach_0000.mp4 0", "videos/separate/separate_0000.mp4 1"]
    assert cli_main(["synthetic", str(tmp_path / "e"), "--size", "33x48", "--quiet"]) == 2  # odd size


def _ridge_accuracy(train_x, train_y, val_x, val_y, num_classes, penalty=10.0) -> float:
    """One-vs-all ridge regression on standardised features: a linear single-frame classifier."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x, v = (train_x - mean) / std, (val_x - mean) / std
    targets = np.eye(num_classes)[train_y]
    weights = np.linalg.solve(x.T @ x + penalty * np.eye(x.shape[1]), x.T @ targets)
    return float(((v @ weights).argmax(1) == val_y).mean())


def _nearest_centroid_accuracy(train_x, train_y, val_x, val_y, num_classes) -> float:
    centroids = np.stack([train_x[train_y == c].mean(0) for c in range(num_classes)])
    distances = ((val_x[:, None] - centroids[None]) ** 2).sum(-1)
    return float((distances.argmin(1) == val_y).mean())


@pytest.mark.slow
def test_default_dataset_defeats_a_single_frame_classifier(tmp_path):
    """Default size (8 classes x 40 clips): a classifier that sees one random frame of each clip
    stays near chance (1/8), although the same classifier finds a planted single-frame cue."""
    dataset = write_synthetic_dataset(tmp_path / "synthetic", progress=False)
    assert (dataset.num_train, dataset.num_val) == (240, 80)
    rng = np.random.default_rng(0)

    def features(list_path):
        records = load_annotations(list_path).records
        rows, labels = [], []
        for record in records:
            with open_video(record.path) as video:
                assert (video.num_frames, video.height, video.width) == (40, 96, 128)
                frame = video.get_frames([int(rng.integers(40))]).numpy()[0].astype(np.float32)
            rows.append(frame.reshape(12, 8, 16, 8, 3).mean((1, 3)).ravel())  # 12x16 colour thumbnail
            labels.append(record.label)
        return np.stack(rows), np.array(labels)

    train_x, train_y = features(dataset.train_list)
    val_x, val_y = features(dataset.val_list)
    assert Counter(train_y.tolist()) == dict.fromkeys(range(8), 30)
    chance = 1 / 8
    ridge = _ridge_accuracy(train_x, train_y, val_x, val_y, 8)
    centroid = _nearest_centroid_accuracy(train_x, train_y, val_x, val_y, 8)
    # 80 validation clips: the standard error at chance is 0.037, so 0.15 above chance is 4 sigma.
    assert ridge < chance + 0.15, ridge
    assert centroid < chance + 0.15, centroid
    # Positive control: the same classifier finds a single-frame cue when one exists, here a
    # brighter thumbnail cell at a class-specific place (as if one class kept an object there).
    def plant(x, y):
        planted = x.copy()
        planted[np.arange(len(y)), y * 3 * 16] += 60.0
        return planted

    assert _ridge_accuracy(plant(train_x, train_y), train_y, plant(val_x, val_y), val_y, 8) > 0.8
