"""Relation datasets: two-class tasks decided only by a relation between two distant events.

Each clip shows two *events* on a dim, noisy background. Each event has a binary *state*,
drawn independently and uniformly, and the class is whether the two states agree:

* ``relation="motion"`` (for 3D networks): each event is a column of movers going straight
  up or down together (state); classes ``same_direction`` / ``opposite_direction``. One
  frame says nothing.
* ``relation="shape"`` (for 2D networks, which see single frames): each event is a column of
  static filled discs or hollow rings (state); classes ``same_shape`` / ``different_shape``.
* ``relation="colour"`` (2D and 3D): each event is a column of static objects of a warm or
  a cool hue (state); classes ``same_colour`` / ``different_colour``. The state is in the
  pixels themselves, so a network's features tell it from the start and only the relation
  has to be learnt (motion and shape states have to be learnt from the relation alone).

Every event alone is uninformative: P(state | class) = 1/2 for either event (balanced
marginals), so the class is a relation between the two events (an XOR of their states).
Nuisances (colour, size, shape of the movers, position, speed, background, noise) are drawn
from the same distributions in both classes and for both states.

The *layout* decides how far apart the events are:

* ``"far"``: one event in a narrow band at the left edge, one at the right edge, so that
  the horizontal gap between their footprints (the pixels they ever touch) is at least
  :func:`far_gap` pixels. Choose the frame so that this gap exceeds the receptive field of
  the network's last local map: then no position of x_L sees both events, and a network that
  pools local features before a linear classifier cannot tell the classes (see
  ``docs/ablations.md``; :mod:`lgdnet.apps.relations` measures the receptive field).
* ``"near"``: the control. Same classes, the two events side by side (centres 2r+3 to 2r+10
  pixels apart) at a random place, well within any receptive field.

A scene (:class:`RelationScene`) holds every random draw except the two states, so
:func:`render_relation_clip` can draw the same scene with all four state combinations: the
tests use this to check that a plain network's pooled feature of the "opposite" pair is the
midpoint of the two "same" pairs.

Clips are MPEG-4 Part 2 in MP4 (:func:`lgdnet.data.synthetic.write_video`), deterministic
from ``seed``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from lgdnet.data.annotations import save_classes
from lgdnet.data.synthetic import SyntheticDataset, _colour, _paint, run_clip_jobs, write_video

RELATIONS = ("motion", "shape", "colour")
LAYOUTS = ("far", "near")
RELATION_CLASSES: dict[str, tuple[str, str]] = {
    "motion": ("same_direction", "opposite_direction"),
    "shape": ("same_shape", "different_shape"),
    "colour": ("same_colour", "different_colour"),
}
STATE_NAMES: dict[str, tuple[str, str]] = {"motion": ("up", "down"), "shape": ("disc", "ring"),
                                           "colour": ("warm", "cool")}
# colour: hue ranges (0-6 scale of lgdnet.data.synthetic._colour's hexcone) of each state
_HUES = ((-0.4, 0.6), (2.6, 3.6))  # warm: red to orange; cool: cyan to azure

# Geometry, in pixels, whatever the frame size (the receptive fields are in pixels too).
RADIUS = (3.0, 4.0)  # object radius range
# half-width of an object's footprint: a ring of radius r covers up to r + 1.8 pixels
_HALF = RADIUS[1] + 2.0
_EDGE = 1.0  # free pixels between a far event's footprint and the frame edge
JITTER = 3.0  # far layout: horizontal freedom of each event within its edge band
NEAR_SPACING = (3.0, 10.0)  # near layout: centre distance minus 2 * RADIUS[1]
AMPLITUDE = (10.0, 16.0)  # motion: vertical travel over the clip


def far_gap(width: int) -> float:
    """Smallest horizontal gap (pixels) between the two events' footprints in the far layout
    of a frame ``width`` pixels wide: ``width - 2 (edge + jitter) - 4 * half-width``."""
    return width - 2 * (_EDGE + JITTER) - 4 * _HALF


@dataclass(frozen=True)
class RelationScene:
    """Every random draw of one clip except the two events' states.

    An event is a vertical column of ``K`` objects that share its state (they all move up,
    or all down; or are all discs, or all rings): a column gives the networks K times the
    signal of one object without widening the event's footprint.

    Attributes:
        relation: ``"motion"``, ``"shape"`` or ``"colour"``.
        layout: ``"far"`` or ``"near"``.
        size: ``(H, W)``.
        num_frames: T.
        centres: ``(2, K, 2)`` centre (x, y) of each object of each event (the middle of a
            mover's path).
        radii, angles: ``(2, K)``, per object.
        amplitudes: ``(2,)``, per event, vertical travel of its movers over the clip (motion).
        mover_shapes: per event, the shapes of its objects (motion and colour; not the state).
        colours: ``(2, 3)`` per event; ``background``: ``(3,)``.
        noise: standard deviation of the per-frame sensor noise.
        noise_seed: seeds the noise, so every state combination gets the same noise.
        hue_draws: ``(2, K)`` in [0, 1), where in its state's hue range an object's colour
            lies (colour only).
    """

    relation: str
    layout: str
    size: tuple[int, int]
    num_frames: int
    centres: np.ndarray
    radii: np.ndarray
    angles: np.ndarray
    amplitudes: np.ndarray
    mover_shapes: tuple[tuple[str, ...], tuple[str, ...]]
    colours: np.ndarray
    background: np.ndarray
    noise: float
    noise_seed: int
    hue_draws: np.ndarray

    def footprints(self) -> np.ndarray:
        """``(2, 4)``: ``x0, x1, y0, y1`` of the pixels each event can touch (any state)."""
        boxes = []
        for centres, amplitude in zip(self.centres, self.amplitudes):
            reach = _HALF + amplitude / 2
            boxes.append((centres[:, 0].min() - _HALF, centres[:, 0].max() + _HALF,
                          centres[:, 1].min() - reach, centres[:, 1].max() + reach))
        return np.array(boxes)

    def gap(self) -> float:
        """Horizontal gap in pixels between the two footprints (negative if they overlap)."""
        (a0, a1, _, _), (b0, b1, _, _) = sorted(self.footprints().tolist())
        return b0 - a1


def sample_scene(rng: np.random.Generator, relation: str, layout: str, size: tuple[int, int],
                 num_frames: int, noise: float = 6.0, objects: int = 3) -> RelationScene:
    """Draw the nuisances of one clip (see the module docstring and :class:`RelationScene`).

    Raises:
        ValueError: unknown relation or layout, or a frame too small for the layout.
    """
    if relation not in RELATIONS or layout not in LAYOUTS:
        raise ValueError(f"relation must be one of {RELATIONS} and layout one of {LAYOUTS}, "
                         f"got {relation!r}, {layout!r}")
    if objects < 1:
        raise ValueError(f"objects must be at least 1, got {objects}")
    height, width = size
    amplitudes = rng.uniform(*AMPLITUDE, size=2) if relation == "motion" else np.zeros(2)
    spacing = 2 * _HALF + 1  # vertical distance of the objects of a column
    span = (objects - 1) * spacing + 2 * (_HALF + AMPLITUDE[1] / 2)
    if height < span + 2 or width < 8 * _HALF:
        raise ValueError(f"a {height}x{width} frame is too small for relation clips with "
                         f"{objects} objects per event")
    if layout == "far":
        lo = _EDGE + _HALF
        xs = [rng.uniform(lo, lo + JITTER), width - rng.uniform(lo, lo + JITTER)]
    else:
        gap = 2 * RADIUS[1] + rng.uniform(*NEAR_SPACING)
        left = rng.uniform(_HALF + 1, width - _HALF - 1 - gap)
        xs = [left, left + gap]
    rng.shuffle(xs)  # which event (A or B) is on the left
    centres = np.zeros((2, objects, 2))
    for event in range(2):
        reach = _HALF + amplitudes[event] / 2
        top = rng.uniform(reach + 1, height - reach - 1 - (objects - 1) * spacing)
        centres[event, :, 0] = xs[event]
        centres[event, :, 1] = top + spacing * np.arange(objects)
    mover_shapes = tuple(tuple(str(v) for v in rng.choice(["disc", "square"], size=objects))
                         for _ in range(2))
    return RelationScene(
        relation=relation, layout=layout, size=(height, width), num_frames=num_frames,
        centres=centres, radii=rng.uniform(*RADIUS, size=(2, objects)),
        angles=rng.uniform(0, math.pi, size=(2, objects)), amplitudes=amplitudes,
        mover_shapes=mover_shapes,  # type: ignore[arg-type]
        colours=np.stack([_colour(rng, (0.6, 1.0), (0.75, 1.0)) for _ in range(2)]),
        background=_colour(rng, (0.0, 0.5), (0.1, 0.35)), noise=float(noise),
        noise_seed=int(rng.integers(2**31)), hue_draws=rng.uniform(size=(2, objects)))


def render_relation_clip(scene: RelationScene, states: tuple[int, int]) -> np.ndarray:
    """Draw ``scene`` with the events in ``states`` (each 0 or 1, see :data:`STATE_NAMES`).

    Shape:
        returns uint8 ``(T, H, W, 3)``, RGB.
    """
    height, width = scene.size
    t = scene.num_frames
    frames = np.broadcast_to(scene.background.astype(np.float32), (t, height, width, 3)).copy()
    progress = np.linspace(-0.5, 0.5, t)
    for event in range(2):
        state = int(states[event])
        sign = 1.0 if state else -1.0  # motion: state 0 up (image y decreases), 1 down
        for k, centre in enumerate(scene.centres[event]):
            colour = scene.colours[event]
            if scene.relation == "colour":
                colour = _hued(colour, _HUES[state], scene.hue_draws[event, k])
            if scene.relation == "motion":
                offset = np.stack([np.zeros(t), sign * scene.amplitudes[event] * progress], 1)
                path, shape = centre[None] + offset, scene.mover_shapes[event][k]
            elif scene.relation == "shape":
                path, shape = np.repeat(centre[None], t, 0), STATE_NAMES["shape"][state]
            else:
                path, shape = np.repeat(centre[None], t, 0), scene.mover_shapes[event][k]
            _paint(frames, shape, path, float(scene.radii[event, k]),
                   float(scene.angles[event, k]), colour)
    noise = np.random.default_rng(scene.noise_seed).standard_normal((t, height, width, 1), dtype=np.float32)
    frames += noise * np.float32(scene.noise) + np.float32(0.5)
    return np.clip(frames, 0, 255, out=frames).astype(np.uint8)


def _hued(colour: np.ndarray, hues: tuple[float, float], draw: float) -> np.ndarray:
    """``colour``'s brightness and saturation with a hue from ``hues`` (``draw`` in [0, 1))."""
    value, low = colour.max() / 255.0, colour.min() / 255.0
    chroma = value - low
    hue = (hues[0] + draw * (hues[1] - hues[0])) % 6.0
    x = chroma * (1 - abs(hue % 2 - 1))
    rgb = [(chroma, x, 0), (x, chroma, 0), (0, chroma, x), (0, x, chroma), (x, 0, chroma),
           (chroma, 0, x)][int(hue) % 6]
    return ((np.array(rgb) + low) * 255.0).astype(np.float32)


def label_of(states: tuple[int, int]) -> int:
    """0 (same) when the states agree, 1 (different / opposite) otherwise."""
    return int(states[0] != states[1])


def draw_clip(rng: np.random.Generator, relation: str, layout: str, label: int,
              size: tuple[int, int], num_frames: int, noise: float = 6.0,
              objects: int = 3) -> tuple[np.ndarray, RelationScene, tuple[int, int]]:
    """One clip of class ``label``: a scene and states drawn so that each state is uniform.

    Returns ``(frames, scene, states)``.
    """
    scene = sample_scene(rng, relation, layout, size, num_frames, noise, objects)
    first = int(rng.integers(2))
    states = (first, first ^ int(label))
    return render_relation_clip(scene, states), scene, states


def _write_clip(job: tuple[str, str, str, int, int, int, tuple[int, int], int, int, float, int]) -> None:
    path, relation, layout, label, seed, number, size, num_frames, fps, noise, objects = job
    rng = np.random.default_rng([seed, RELATIONS.index(relation), LAYOUTS.index(layout), label, number])
    frames, _, _ = draw_clip(rng, relation, layout, label, size, num_frames, noise, objects)
    write_video(path, frames, fps)


def write_relation_dataset(
    out_dir: str | os.PathLike,
    *,
    relation: str = "motion",
    layout: str = "far",
    clips_per_class: int = 200,
    seed: int = 0,
    num_frames: int = 8,
    size: tuple[int, int] = (72, 72),
    val_fraction: float = 0.25,
    fps: int = 25,
    noise: float = 6.0,
    objects: int = 3,
    workers: int | None = None,
    progress: bool = True,
) -> SyntheticDataset:
    """Write a relation dataset: videos, ``train.txt``/``val.txt``, ``classes.txt``, README.

    Args:
        out_dir: dataset folder (created); videos go to ``videos/<class>/<class>_NNNN.mp4``.
        relation: ``"motion"`` (3D networks), ``"shape"`` (2D networks) or ``"colour"``.
        layout: ``"far"`` (events at opposite edges) or ``"near"`` (side by side).
        clips_per_class: clips per class (2 classes), split into train and val.
        seed: every clip is a function of ``(seed, relation, layout, class, clip number)``.
        num_frames: frames per clip.
        size: ``(H, W)``, even; the training pipeline crops squares, so use a square frame
            and a crop of its full side.
        val_fraction: share of each class's clips listed in ``val.txt``.
        noise: standard deviation of the sensor noise (grey levels).
        objects: objects per event (a column sharing the event's state).
        workers: processes that render and encode (default: up to 4).
        progress: show a progress bar.
    """
    if relation not in RELATIONS or layout not in LAYOUTS:
        raise ValueError(f"relation must be one of {RELATIONS} and layout one of {LAYOUTS}")
    if size[0] % 2 or size[1] % 2:
        raise ValueError(f"size must be even, got {size}")
    if clips_per_class < 1 or not 0.0 <= val_fraction < 1.0 or num_frames < 2:
        raise ValueError("clips_per_class >= 1, val_fraction in [0, 1) and num_frames >= 2 needed")
    sample_scene(np.random.default_rng(0), relation, layout, size, num_frames, noise, objects)  # checks


    from lgdnet.atomic import write_text
    from lgdnet.locking import ensure_output_dir

    out = ensure_output_dir(out_dir, "dataset folder")
    classes = list(RELATION_CLASSES[relation])
    num_val = round(clips_per_class * val_fraction)
    jobs, train_lines, val_lines = [], [], []
    for label, name in enumerate(classes):
        (out / "videos" / name).mkdir(parents=True, exist_ok=True)
        for number in range(clips_per_class):
            relative = f"videos/{name}/{name}_{number:04d}.mp4"
            jobs.append((os.fspath(out / relative), relation, layout, label, seed, number,
                         tuple(size), num_frames, fps, noise, objects))
            (val_lines if number < num_val else train_lines).append(f"{relative} {label}\n")
    run_clip_jobs(_write_clip, jobs, workers, f"{layout} {relation} clips", progress)
    dataset = SyntheticDataset(out, out / "train.txt", out / "val.txt", out / "classes.txt",
                               out / "README.md", classes, len(train_lines), len(val_lines))
    write_text(dataset.train_list, "".join(train_lines))
    write_text(dataset.val_list, "".join(val_lines))
    save_classes(dataset.classes_file, classes)
    write_text(dataset.readme, _readme(dataset, relation, layout, clips_per_class, seed, num_frames, size))
    return dataset


def _readme(dataset: SyntheticDataset, relation: str, layout: str, clips_per_class: int, seed: int,
            num_frames: int, size: tuple[int, int]) -> str:
    where = (f"at opposite edges of the frame, their footprints at least {far_gap(size[1]):.0f} "
             "pixels apart horizontally" if layout == "far" else "side by side, a few pixels apart")
    states = " or ".join(STATE_NAMES[relation])
    return f"""# lgdnet relation dataset ({layout}, {relation})

Written by `lgdnet.data.synthetic_relations.write_relation_dataset` with seed {seed}:
2 classes ({', '.join(dataset.classes)}) x {clips_per_class} clips, {num_frames} frames of
{size[0]}x{size[1]}; {dataset.num_train} clips in `train.txt`, {dataset.num_val} in `val.txt`.

Two events ({states}, each drawn uniformly and independently) lie {where}. The class is
whether their states agree: each event alone says nothing about it.
"""
