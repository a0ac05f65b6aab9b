"""The embedded dataset: small labelled action clips written as real compressed videos.

Every clip shows the same cast on a cluttered, noisy background: two filled *movers* (a
disc, triangle, square or hexagon each), one hollow *marker* (a ring or a plus) and two small
drifting *distractor* dots. Colours, shapes, sizes, positions, directions, speeds and the
background are drawn afresh for every clip and from the same distributions in every class, so
one frame shows the same kind of picture whatever the label. The class lies only in how the
movers move *relative to each other or to the distant marker*: a network must relate objects
tens of pixels apart across many frames, the long-range spatio-temporal dependency that the
global path of LGD (Sec. 3) is meant to model. Classes come in pairs whose clips are each
other's time reversal (approach/separate, the two orbit senses, toward/away from the marker),
so the two classes of a pair have exactly the same distribution of single frames.

Clips are MPEG-4 Part 2 in MP4, 25 fps, deterministic from ``seed``: the same seed gives
byte-identical annotation lists and video files, hence identical decoded frames.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lgdnet.data.annotations import save_classes


def run_clip_jobs(write, jobs: list, workers: int | None, description: str,
                  progress: bool) -> None:
    """``write(job)`` for every job, in ``workers`` processes (default: up to 4), with a bar.

    ``write`` must be a module-level function (the workers pickle it). Processes are forked
    where the system can: the workers render with numpy and encode with PyAV only, never
    touching torch or OpenMP, and forking spares each one the package import.
    """
    from tqdm import tqdm

    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    bar = tqdm(total=len(jobs), desc=description, unit="clip", disable=not progress)
    try:
        if workers <= 1:
            for job in jobs:
                write(job)
                bar.update()
            return
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for _ in pool.map(write, jobs, chunksize=4):
                bar.update()
    finally:
        bar.close()


@dataclass(frozen=True)
class SyntheticClass:
    """One class of the embedded dataset: its name, what happens, and why one frame or one
    local patch cannot tell it."""

    name: str
    description: str
    why_global: str


SYNTHETIC_CLASSES: tuple[SyntheticClass, ...] = (
    SyntheticClass("approach", "the two movers travel toward each other along the line joining them",
                   "each mover alone just translates; only the other, distant mover says the motion is toward it. Frames match 'separate' exactly (time reversal)."),
    SyntheticClass("separate", "the two movers travel away from each other along the line joining them",
                   "the time reversal of 'approach': same frames, opposite order."),
    SyntheticClass("orbit_clockwise", "the two movers turn clockwise (as seen on screen) about a point between them",
                   "the sense of rotation is defined by the centre, between the movers; one patch sees only a short piece of arc. Horizontal flips turn it into 'orbit_counterclockwise'."),
    SyntheticClass("orbit_counterclockwise", "the two movers turn counter-clockwise about a point between them",
                   "the time reversal of 'orbit_clockwise'."),
    SyntheticClass("toward_marker", "one mover travels straight toward the marker; the other drifts sideways",
                   "the marker is static and far away at a random place; the same local motion means 'toward' or 'away' depending on where it is."),
    SyntheticClass("away_from_marker", "one mover travels straight away from the marker; the other drifts sideways",
                   "the time reversal of 'toward_marker'."),
    SyntheticClass("move_together", "the two movers travel side by side with the same velocity",
                   "each mover alone is a plain translation in a random direction; the class is that the distant other one moves identically."),
    SyntheticClass("pass_by", "the two movers travel in opposite directions on parallel tracks and pass each other",
                   "each mover alone is a plain translation; only both tracks together show opposite motion."),
)
CLASS_NAMES = tuple(c.name for c in SYNTHETIC_CLASSES)
# Horizontal flips mirror the rotation sense: training with random flips must swap these labels.
HFLIP_SWAPS = {"orbit_clockwise": "orbit_counterclockwise", "orbit_counterclockwise": "orbit_clockwise"}

_MARGIN = 10.0  # keeps whole objects inside the frame


@dataclass(frozen=True)
class SyntheticDataset:
    """Where :func:`write_synthetic_dataset` put things (the lists are ``list``-format)."""

    root: Path
    train_list: Path
    val_list: Path
    classes_file: Path
    readme: Path
    classes: list[str]
    num_train: int
    num_val: int

    @property
    def num_clips(self) -> int:
        return self.num_train + self.num_val


def hflip_label_map(classes: list[str]) -> list[int]:
    """``map[label]`` is the label of the horizontally flipped clip (identity but for the orbits)."""
    index = {name: i for i, name in enumerate(classes)}
    return [index.get(HFLIP_SWAPS.get(name, name), i) for i, name in enumerate(classes)]


# ------------------------------------------------------------------------------ trajectories
def _scale(height: int, width: int) -> float:
    """Lengths below are for 96x128 frames; other sizes scale them."""
    return min(height / 96.0, width / 128.0)


def _inside(points: np.ndarray, height: int, width: int) -> bool:
    x, y = points[..., 0], points[..., 1]
    margin = _MARGIN * _scale(height, width)
    return bool((x >= margin).all() and (x <= width - margin).all()
                and (y >= margin).all() and (y <= height - margin).all())


def _unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


def _uniform_point(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    margin = _MARGIN * _scale(height, width)
    return np.array([rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)])


def _path(start: np.ndarray, end: np.ndarray, progress: np.ndarray) -> np.ndarray:
    return start[None] + (end - start)[None] * progress[:, None]


def _trajectories(kind: str, rng: np.random.Generator, progress: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (T, 2) of mover A and mover B (x, y in pixels) and the marker (2,).

    Reversed classes reuse their partner's sampler and flip time, so the pair's single-frame
    statistics are identical by construction.
    """
    reverse = {"separate": "approach", "orbit_counterclockwise": "orbit_clockwise", "away_from_marker": "toward_marker"}
    if kind in reverse:
        a, b, marker = _trajectories(reverse[kind], rng, progress, height, width)
        return a[::-1].copy(), b[::-1].copy(), marker
    scale = _scale(height, width)
    for _ in range(10_000):
        marker = _uniform_point(rng, height, width)
        if kind == "approach":
            centre, u = _uniform_point(rng, height, width), _unit(rng.uniform(0, 2 * math.pi))
            start_gap, end_gap = rng.uniform(55, 100) * scale, rng.uniform(18, 28) * scale
            share = rng.uniform(0.25, 0.75)  # how much of the closing A does
            a0, b0 = centre - u * start_gap / 2, centre + u * start_gap / 2
            closing = start_gap - end_gap
            a = _path(a0, a0 + u * closing * share, progress)
            b = _path(b0, b0 - u * closing * (1 - share), progress)
        elif kind == "orbit_clockwise":
            centre = _uniform_point(rng, height, width)
            theta = rng.uniform(0, 2 * math.pi) + rng.uniform(0.6, 1.1) * math.pi * progress
            # Image y points down, so increasing theta turns clockwise on screen.
            ring = np.stack([np.cos(theta), np.sin(theta)], axis=1)
            a = centre + ring * rng.uniform(14, 34) * scale
            b = centre - ring * rng.uniform(14, 34) * scale
        elif kind == "toward_marker":
            u = _unit(rng.uniform(0, 2 * math.pi))
            far, near = rng.uniform(45, 90) * scale, rng.uniform(14, 22) * scale
            a = _path(marker + u * far, marker + u * near, progress)
            b0 = _uniform_point(rng, height, width)
            radial = b0 - marker
            if np.linalg.norm(radial) < 30 * scale:
                continue
            tangent = np.array([-radial[1], radial[0]]) / np.linalg.norm(radial)
            b = _path(b0, b0 + tangent * rng.choice([-1, 1]) * rng.uniform(8, 20) * scale, progress)
        elif kind == "move_together":
            a0 = _uniform_point(rng, height, width)
            b0 = a0 + _unit(rng.uniform(0, 2 * math.pi)) * rng.uniform(40, 90) * scale
            shift = _unit(rng.uniform(0, 2 * math.pi)) * rng.uniform(25, 55) * scale
            a, b = _path(a0, a0 + shift, progress), _path(b0, b0 + shift, progress)
        elif kind == "pass_by":
            centre, u = _uniform_point(rng, height, width), _unit(rng.uniform(0, 2 * math.pi))
            normal = np.array([-u[1], u[0]])
            gap, length, when = rng.uniform(20, 50) * scale, rng.uniform(40, 80) * scale, rng.uniform(0.3, 0.7)
            along = (progress - when)[:, None] * length * u[None]
            a = centre + normal * gap / 2 + along
            b = centre - normal * gap / 2 - along
        else:
            raise ValueError(f"unknown synthetic class {kind!r}; choose from {', '.join(CLASS_NAMES)}")
        # The marker must not sit on a mover's path in the classes where it is only scenery.
        clear = kind == "toward_marker" or min(np.linalg.norm(a - marker, axis=1).min(), np.linalg.norm(b - marker, axis=1).min()) > 16 * scale
        if clear and _inside(a, height, width) and _inside(b, height, width):
            return a, b, marker
    raise RuntimeError(f"could not place a {kind!r} clip in a {height}x{width} frame")


# ---------------------------------------------------------------------------------- drawing
def _coverage(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape centred at the origin, at offsets (dx, dy)."""
    if shape == "disc":
        distance = np.hypot(dx, dy) - radius
    elif shape == "ring":
        distance = np.abs(np.hypot(dx, dy) - radius) - 1.3
    elif shape == "plus":
        p = np.abs(dx * math.cos(angle) + dy * math.sin(angle))
        q = np.abs(-dx * math.sin(angle) + dy * math.cos(angle))
        distance = np.minimum(np.maximum(p - radius, q - 1.5), np.maximum(q - radius, p - 1.5))
    else:  # regular polygon: signed distance is the largest edge-normal projection
        sides = {"triangle": 3, "square": 4, "hexagon": 6}[shape]
        normals = [angle + 2 * math.pi * i / sides for i in range(sides)]
        distance = np.max([dx * math.cos(n) + dy * math.sin(n) for n in normals], axis=0) - 0.8 * radius
    return np.clip(0.5 - distance, 0.0, 1.0).astype(np.float32)


def _paint(frames: np.ndarray, shape: str, centres: np.ndarray, radius: float, angle: float, colour: np.ndarray) -> None:
    """Alpha-blend a shape at ``centres`` (T, 2) into ``frames`` (T, H, W, 3), in place.

    Only a small window around each centre is touched: the objects are a few pixels wide.
    """
    half = int(math.ceil(radius)) + 3
    corner = np.floor(centres).astype(int) - half  # (T, 2) top-left of each window, x then y
    offsets = np.arange(2 * half + 1, dtype=np.float32) + 0.5
    dx = corner[:, 0, None, None] + offsets[None, None, :] - centres[:, 0, None, None]
    dy = corner[:, 1, None, None] + offsets[None, :, None] - centres[:, 1, None, None]
    alpha = _coverage(shape, dx.astype(np.float32), dy.astype(np.float32), radius, angle)[..., None]
    height, width = frames.shape[1:3]
    for t, (x0, y0) in enumerate(corner):
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + 2 * half + 1, width), min(y0 + 2 * half + 1, height)
        if xa >= xb or ya >= yb:
            continue
        a = alpha[t, ya - y0 : yb - y0, xa - x0 : xb - x0]
        window = frames[t, ya:yb, xa:xb]
        window += a * (colour - window)


def _colour(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    hue, s, v = rng.uniform(0, 6), rng.uniform(*saturation), rng.uniform(*value)
    c = v * s
    x = c * (1 - abs(hue % 2 - 1))
    rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(hue) % 6]
    return ((np.array(rgb) + (v - c)) * 255.0).astype(np.float32)


def render_clip(kind: str, rng: np.random.Generator, num_frames: int, size: tuple[int, int], clutter: float = 1.0) -> np.ndarray:
    """Draw one clip of class ``kind``; ``clutter`` scales the background blobs, distractor
    dots and sensor noise (0: plain background, the same objects and motions).

    Shape:
        returns uint8 (num_frames, H, W, 3), RGB.
    """
    height, width = size
    progress = np.linspace(0.0, 1.0, num_frames)
    a, b, marker = _trajectories(kind, rng, progress, height, width)
    gx, gy = np.meshgrid(np.arange(width, dtype=np.float32) + 0.5, np.arange(height, dtype=np.float32) + 0.5)
    scale = _scale(height, width)

    # Background: a dim colour, a gentle gradient and faint static blobs (clutter).
    base = _colour(rng, (0.0, 0.5), (0.15, 0.45))
    slope = _unit(rng.uniform(0, 2 * math.pi)) * rng.uniform(0, 30)
    gradient = ((gx / width - 0.5) * slope[0] + (gy / height - 0.5) * slope[1])[..., None]
    background = (base + gradient).astype(np.float32)
    for _ in range(rng.integers(4, 9)):
        centre = _uniform_point(rng, height, width)
        blob = _coverage("disc", gx - centre[0], gy - centre[1], rng.uniform(4, 18) * scale, 0.0)
        background += blob[..., None] * rng.normal(0, 18 * clutter, size=3).astype(np.float32)
    frames = np.repeat(background[None], num_frames, axis=0)

    _paint(frames, str(rng.choice(["ring", "plus"])), np.repeat(marker[None], num_frames, 0), rng.uniform(6, 9) * scale,
           rng.uniform(0, math.pi), _colour(rng, (0.5, 1.0), (0.7, 1.0)))
    for _ in range(2):  # distractors: small dots on slow random drifts
        drift = _uniform_point(rng, height, width) + np.cumsum(rng.normal(0, 0.6, size=(num_frames, 2)), axis=0)
        radius, colour = rng.uniform(1.5, 2.5) * scale, _colour(rng, (0.3, 1.0), (0.6, 1.0))
        if clutter > 0:  # the draws above happen anyway, so clutter changes nothing else
            _paint(frames, "disc", drift, radius, 0.0, colour)
    movers = [a, b]
    rng.shuffle(movers)  # neither mover is always drawn on top
    for centres in movers:
        shape = str(rng.choice(["disc", "triangle", "square", "hexagon"]))
        _paint(frames, shape, centres, rng.uniform(5, 8) * scale, rng.uniform(0, math.pi), _colour(rng, (0.6, 1.0), (0.7, 1.0)))
    # Sensor noise, fresh in every frame (luminance only: a third of the cost of RGB noise).
    noise = rng.standard_normal(size=(num_frames, height, width, 1), dtype=np.float32)
    frames += noise * np.float32(rng.uniform(3, 8) * clutter) + np.float32(0.5)
    return np.clip(frames, 0, 255, out=frames).astype(np.uint8)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 25, bit_rate: int = 250_000) -> None:
    """Encode uint8 RGB frames (T, H, W, 3) as MPEG-4 Part 2 in MP4 (even H and W required).

    MPEG-4 Part 2 rather than H.264: the ``libx264`` that PyAV bundles gives slightly
    different bitstreams for the same frames from run to run, even on one thread, and the
    dataset must decode identically for a given seed. One keyframe per second, as cameras do.
    """
    import av

    with av.open(os.fspath(path), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": str(fps)}
        stream.codec_context.bit_rate = bit_rate
        stream.codec_context.thread_count = 1  # parallelism comes from the process pool
        for index, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            picture.pts = index
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_clip(job: tuple[str, str, int, int, int, tuple[int, int], int, float]) -> None:
    path, kind, seed, clip_number, num_frames, size, fps, clutter = job
    # Seeded by (seed, class, clip): a clip does not depend on worker order or on which
    # other classes are written.
    rng = np.random.default_rng([seed, CLASS_NAMES.index(kind), clip_number])
    write_video(path, render_clip(kind, rng, num_frames, size, clutter), fps)


def write_synthetic_dataset(
    out_dir: str | os.PathLike,
    clips_per_class: int = 40,
    seed: int = 0,
    num_frames: int = 40,
    size: tuple[int, int] = (96, 128),
    val_fraction: float = 0.25,
    fps: int = 25,
    classes: list[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    clutter: float = 1.0,
) -> SyntheticDataset:
    """Write the embedded dataset: videos, ``train.txt``/``val.txt``, ``classes.txt``, README.

    Args:
        out_dir: dataset folder (created); videos go to ``videos/<class>/<class>_NNNN.mp4``.
        clips_per_class: clips written per class, split into train and val.
        seed: every clip is a function of ``(seed, class, clip number)``.
        num_frames: frames per clip (at ``fps``).
        size: ``(H, W)`` of the frames, both even (4:2:0 chroma).
        val_fraction: share of each class's clips listed in ``val.txt``.
        classes: a subset of :data:`CLASS_NAMES` (default all), in label order.
        workers: processes used to render and encode (default: up to 4, one per core).
        progress: show a tqdm progress bar.
        clutter: scale of the background blobs, distractor dots and noise (0 for a plain
            background; objects and motions stay the same).
    """
    classes = list(classes) if classes is not None else list(CLASS_NAMES)
    unknown = [name for name in classes if name not in CLASS_NAMES]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"unknown or repeated synthetic classes {unknown or classes}; choose from {', '.join(CLASS_NAMES)}")
    if size[0] % 2 or size[1] % 2 or min(size) < 32:
        raise ValueError(f"size must be even and at least 32x32, got {size}")
    if clips_per_class < 1 or not 0.0 <= val_fraction < 1.0:
        raise ValueError("clips_per_class must be >= 1 and val_fraction in [0, 1)")
    if num_frames < 2:
        raise ValueError(f"num_frames must be at least 2 (the classes are motions), got {num_frames}")
    if not (clutter >= 0 and clutter < float("inf")):
        raise ValueError(f"clutter must be a finite number >= 0, got {clutter}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if fps < 1:
        raise ValueError(f"fps must be at least 1, got {fps}")
    from lgdnet.locking import ensure_output_dir

    out = ensure_output_dir(out_dir, "dataset folder")
    num_val = round(clips_per_class * val_fraction)
    jobs, train_lines, val_lines = [], [], []
    for label, kind in enumerate(classes):
        (out / "videos" / kind).mkdir(parents=True, exist_ok=True)
        for clip_number in range(clips_per_class):
            relative = f"videos/{kind}/{kind}_{clip_number:04d}.mp4"
            jobs.append((os.fspath(out / relative), kind, seed, clip_number, num_frames, tuple(size), fps, clutter))
            (val_lines if clip_number < num_val else train_lines).append(f"{relative} {label}\n")

    run_clip_jobs(_write_clip, jobs, workers, "synthetic clips", progress)

    dataset = SyntheticDataset(out, out / "train.txt", out / "val.txt", out / "classes.txt", out / "README.md",
                               classes, len(train_lines), len(val_lines))
    from lgdnet.atomic import write_text

    write_text(dataset.train_list, "".join(train_lines))
    write_text(dataset.val_list, "".join(val_lines))
    save_classes(dataset.classes_file, classes)
    write_text(dataset.readme, _readme(dataset, clips_per_class, seed, num_frames, size, fps, clutter))
    return dataset


def _readme(dataset: SyntheticDataset, clips_per_class: int, seed: int, num_frames: int, size: tuple[int, int], fps: int, clutter: float) -> str:
    rows = "\n".join(
        f"| {dataset.classes.index(c.name)} | `{c.name}` | {c.description} | {c.why_global} |"
        for c in sorted((c for c in SYNTHETIC_CLASSES if c.name in dataset.classes), key=lambda c: dataset.classes.index(c.name)))
    return f"""# lgdnet synthetic action dataset

Written by `lgdnet synthetic` (`lgdnet.data.synthetic.write_synthetic_dataset`) with seed {seed}:
{len(dataset.classes)} classes x {clips_per_class} clips, {num_frames} frames of {size[0]}x{size[1]} at {fps} fps,
MPEG-4 Part 2 in MP4. {dataset.num_train} clips are listed in `train.txt`, {dataset.num_val} in `val.txt`
(`relative/path label` lines, labels index `classes.txt`). The same seed writes the same dataset:

    lgdnet synthetic OUT_DIR --seed {seed} --clips-per-class {clips_per_class} --frames {num_frames} --size {size[0]}x{size[1]} --val-fraction {dataset.num_val / max(1, dataset.num_clips):g} --classes {",".join(dataset.classes)} --clutter {clutter:g}

## What every clip shows

Two filled movers (disc, triangle, square or hexagon), one hollow marker (ring or plus), two
small drifting distractor dots, on a dim background with a gradient, faint static blobs and
fresh sensor noise in every frame. Colours, shapes, sizes, positions, directions, speeds and
background are random per clip and drawn from the same distributions in every class, so a
single frame does not give the class away. The class is only in how the movers move relative
to each other or to the marker, tens of pixels apart: it takes temporal *and* long-range
reasoning. Classes come in time-reversed pairs (approach/separate, the orbits,
toward/away from the marker), whose single frames are identically distributed.

The test suite checks this: a linear classifier (ridge regression, or nearest class mean) on
a 12x16 thumbnail of one random frame per clip, fitted on `train.txt`, scores near chance on
`val.txt` at the default size, while the same classifier finds a planted single-frame cue.

## Classes

| label | name | what happens | why one frame or one patch is not enough |
|---|---|---|---|
{rows}

## Caveat: horizontal flips

A horizontal flip mirrors the sense of rotation: a flipped `orbit_clockwise` clip is an
`orbit_counterclockwise` clip. Train with random flips only if the labels of these two classes
are swapped with the clip (`lgdnet.data.synthetic.hflip_label_map`), or turn flips off.
"""
