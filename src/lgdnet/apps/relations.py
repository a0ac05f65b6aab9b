"""The mechanism in miniature: does the global path solve what local units cannot?

The paper's claim (Sec. 1, 3.1, Table 2) is that convolutions are local and the LGD block's
global path supplies the long-range dependency they lack. This module tests it on the
relation datasets (:mod:`lgdnet.data.synthetic_relations`), two-class tasks decided only by
whether the states of two events agree:

* ``far``: the events lie farther apart than the receptive field of the tiny networks' last
  local map x_L (:func:`measure_receptive_field` measures it with gradients), so no
  position of x_L sees both. A network that averages x_L and applies a linear classifier
  (every variant's local classifier, and the plain networks' global one) then scores
  additive features: for one scene with states (a, b), ``S(a, b) = C + A(a) + B(b)``, so
  ``S(0,1) + S(1,0) = S(0,0) + S(1,1)`` (the pooled feature of the two "different" pairs has
  the midpoint of the two "same" pairs; :func:`pooled_interaction` checks it). A linear
  read-out is then right on at most 3 of the 4 state pairs of a scene, and with balanced
  classes its cross-entropy optimum is chance. The diffusion blocks break additivity: the
  global vector is fed back into every position (Eq. 2) and passes through ReLUs (Eq. 3).
* ``near``: the control, the same classes with the two events side by side.

:func:`run_relations` trains the grid (task x network x variant x initialisation x seed,
identical data and order per seed), scores every model on the held-out clips, probes the
global vectors g_l after each stage and P(x_L) with a linear classifier, trains the
combination classifier (stage 2, Eq. 7) against stage 1 continued for the same epochs on the
far task, and writes ``results.json``, ``tables.md`` and ``losses.png``. Finished runs are
skipped and interrupted ones resumed, as in :mod:`lgdnet.apps.ablation`, whose runner it uses.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lgdnet.apps.ablation import MODEL_NAMES, VARIANT_LABELS, VARIANTS, _run_one

TASKS = ("far", "near")
INITS = ("paper", "authors")
NETWORK_NAMES = {"2d": "LGD-2D (TSN-style)", "3d": "LGD-3D (P3D-style)"}


@dataclass(frozen=True)
class RelationSettings:
    """Size of the relation experiment. Every run of one seed sees the same clips in the
    same order with the same schedule; only the task, network, variant and initialisation
    differ.

    ``arms`` are ``variant:init:order`` triples; ``init`` is ``create_model``'s
    ``init_scheme`` (``paper``: Xavier, Sec. 5.2; ``authors``: the authors' public code) and
    ``order`` its ``block_order``.
    """

    tasks: tuple[str, ...] = TASKS
    networks: tuple[str, ...] = ("2d", "3d")
    arms: tuple[str, ...] = ("none:paper:paper", "v1:paper:paper", "v2:paper:paper",
                             "lgd:paper:paper", "lgd:paper:authors")
    relation_2d: str = "colour"
    relation_3d: str = "colour"
    size_2d: int = 112  # > the 2D networks' receptive field (75 px) plus two footprints
    size_3d: int = 72  # > the 3D networks' receptive field (39 px) plus two footprints
    objects: int = 3
    clips_per_class: int = 500
    val_fraction: float = 0.6  # 600 held-out clips with 500 per class
    data_seed: int = 0
    video_frames: int = 8
    clip_frames: int = 4  # 3D: frames per clip, every frame_stride-th
    frame_stride: int = 2
    segments: int = 1  # 2D: frames per clip (TSN segments)
    epochs: int = 12
    lr: float = 0.02  # 0.05 made 3 of 4 LGD runs diverge (docs/ablations.md)
    grad_clip: float = 0.0  # maximum gradient norm (0: none)
    batch_size: int = 8
    stage2_epochs: int = 4  # Table 3 on the far task (0: skip)
    sketch_dim: int = 512
    base_width: int = 8
    seeds: int = 5
    probe: bool = True  # linear probes of g_l and P(x_L) (needs the held-out features)
    memory_format: str = "auto"

    def __post_init__(self) -> None:
        for arm in self.arms:
            variant, init, order = parse_arm(arm)
            if variant not in VARIANTS or init not in INITS or order not in ("paper", "authors"):
                raise ValueError(f"bad arm {arm!r}: want variant:init:order with variant in "
                                 f"{VARIANTS}, init in {INITS}, order paper|authors")
        if not set(self.tasks) <= set(TASKS) or not set(self.networks) <= {"2d", "3d"}:
            raise ValueError(f"tasks must be in {TASKS} and networks in (2d, 3d)")
        if self.seeds < 1 or self.epochs < 1:
            raise ValueError("seeds and epochs must be at least 1")


def parse_arm(arm: str) -> tuple[str, str, str]:
    """``"lgd:authors:paper"`` -> ``("lgd", "authors", "paper")`` (missing parts: paper)."""
    parts = (arm.split(":") + ["paper", "paper"])[:3]
    return parts[0], parts[1], parts[2]


def arm_label(arm: str) -> str:
    variant, init, order = parse_arm(arm)
    label = VARIANT_LABELS[variant]
    return label + (", authors' order" if order == "authors" else "")


RELATION_MODES: dict[str, RelationSettings] = {
    "full": RelationSettings(),
    # the two initialisations side by side on the far task, paired by seed: the baseline and
    # the LGD block with each, and the authors' code as a whole (their initialisation and
    # their block order); about 25 minutes on 2 cores
    "authors-init": RelationSettings(tasks=("far",), stage2_epochs=0,
                                     arms=("none:paper:paper", "lgd:paper:paper",
                                           "none:authors:paper", "lgd:authors:paper",
                                           "lgd:authors:authors")),
    # about 6 minutes on one core: 2 seeds, 3D, far task, both initialisations
    "preliminary": RelationSettings(tasks=("far",), networks=("3d",), seeds=2,
                                    clips_per_class=200, val_fraction=0.4,
                                    arms=("none:paper:paper", "lgd:paper:paper",
                                          "none:authors:paper", "lgd:authors:paper"),
                                    stage2_epochs=0),
    # the test suite: proves the pipeline, not the result
    "quick": RelationSettings(networks=("3d",), size_3d=72, clips_per_class=6, val_fraction=0.5,
                              epochs=1, seeds=1, stage2_epochs=1, sketch_dim=32,
                              arms=("none:authors:paper", "lgd:authors:paper")),
}


@dataclass(frozen=True)
class RelationRun:
    """One training run; ``kind``: ``stage1``, ``com`` (stage 2) or ``continued``."""

    task: str
    network: str
    arm: str
    seed: int
    kind: str = "stage1"

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.task}-{self.network}-{self.arm.replace(':', '-')}-seed{self.seed}"

    # what apps.ablation's runner and reports expect
    @property
    def variant(self) -> str:
        return parse_arm(self.arm)[0]


def _run_guarded(job: tuple[Any, RelationRun, int]) -> dict[str, Any]:
    """:func:`lgdnet.apps.ablation._run_one`, but a run whose loss becomes NaN is recorded
    (``diverged``; scored as a constant prediction, 50% on the balanced held-out clips)
    instead of stopping the grid. Rerunning retries it (no ``result.json`` is written)."""
    try:
        return _run_one(job)
    except FloatingPointError as error:
        config, run, _ = job
        return {**dataclasses.asdict(run), "name": run.name, "stage": config.run.stages[-1],
                "metrics": {"top1": 0.5}, "history": [], "seconds": 0.0, "cpu_seconds": 0.0,
                "diverged": str(error), "skipped": False}


def _run_all(jobs: list[tuple[Any, RelationRun, int]], workers: int,
             echo: Callable[[str], None], progress: bool) -> list[dict[str, Any]]:
    results = []
    if workers <= 1:
        outcomes: Any = map(_run_guarded, jobs)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        outcomes = pool.map(_run_guarded, jobs)
    try:
        for result in outcomes:
            results.append(result)
            state = ("DIVERGED" if result.get("diverged") else
                     "done before" if result["skipped"] else f"{result['seconds']:.0f} s")
            echo(f"  {result['name']:<44} top-1 {100 * result['metrics']['top1']:5.1f}%  ({state})")
    finally:
        if workers > 1:
            pool.shutdown()
    return results


# ---------------------------------------------------------------------------------- data
def relation_of(settings: RelationSettings, network: str) -> str:
    return settings.relation_3d if network == "3d" else settings.relation_2d


def frame_size(settings: RelationSettings, network: str) -> int:
    return settings.size_3d if network == "3d" else settings.size_2d


def write_task_data(settings: RelationSettings, task: str, network: str, data_root: Path,
                    progress: bool = False) -> Any:
    """Write (or reuse) the dataset of one task for one network kind."""
    from lgdnet.data.synthetic import SyntheticDataset
    from lgdnet.data.synthetic_relations import RELATION_CLASSES, write_relation_dataset

    relation, side = relation_of(settings, network), frame_size(settings, network)
    folder = data_root / f"{task}-{relation}-{side}"
    stamp = {"relation": relation, "layout": task, "size": side, "objects": settings.objects,
             "clips_per_class": settings.clips_per_class, "val_fraction": settings.val_fraction,
             "frames": settings.video_frames, "seed": settings.data_seed}
    stamp_file = folder / "relations-data.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        num_val = round(settings.clips_per_class * settings.val_fraction)
        return SyntheticDataset(folder, folder / "train.txt", folder / "val.txt",
                                folder / "classes.txt", folder / "README.md",
                                list(RELATION_CLASSES[relation]),
                                2 * (settings.clips_per_class - num_val), 2 * num_val)
    dataset = write_relation_dataset(
        folder, relation=relation, layout=task, clips_per_class=settings.clips_per_class,
        seed=settings.data_seed, num_frames=settings.video_frames, size=(side, side),
        val_fraction=settings.val_fraction, objects=settings.objects, progress=progress)
    stamp_file.write_text(json.dumps(stamp))
    return dataset


def model_options(settings: RelationSettings, arm: str) -> dict[str, Any]:
    variant, init, order = parse_arm(arm)
    options: dict[str, Any] = {"base_width": settings.base_width}
    if init != "paper":
        options["init_scheme"] = init
    if order != "paper":
        options["block_order"] = order
    return options


def run_config(settings: RelationSettings, run: RelationRun, data: Any, runs_dir: Path) -> Any:
    """The :class:`~lgdnet.engine.config.Config` of one run (saved with its checkpoints).

    Training views are the whole frame (crop = frame side) with random flips, which keep
    both events in view and preserve the labels; test views are the whole frame.
    """
    from lgdnet.engine.config import config_from_dict

    side = frame_size(settings, run.network)
    variant = run.variant
    frames = ({"num_frames": settings.clip_frames, "frame_stride": settings.frame_stride}
              if run.network == "3d" else {"num_frames": settings.segments})
    model: dict[str, Any] = {"name": MODEL_NAMES[(run.network, variant != "none")],
                             "diffusion": variant, "sketch_dim": settings.sketch_dim,
                             "options": model_options(settings, run.arm)}
    if run.network == "2d":
        model["options"]["num_segments"] = settings.segments
    lr_step = max(1, round(0.75 * settings.epochs))
    optim: dict[str, Any] = {"lr": settings.lr, "lr_step": lr_step, "epochs": settings.epochs,
                             "batch_size": settings.batch_size, "grad_clip": settings.grad_clip}
    stages = [1]
    if run.kind != "stage1":
        # Table 3, a fair schedule for both: from the stage-1 model of the same seed, the same
        # epochs, starting at the stage-1 learning rate and divided by 10 halfway (a fresh
        # classifier needs the large rate; the backbone then settles at the small one)
        start = runs_dir / RelationRun(run.task, run.network, run.arm, run.seed).name / "stage1_last"
        model["init_checkpoint"] = str(start.with_suffix(".safetensors"))
        half = max(1, settings.stage2_epochs // 2)
        optim.update(epochs=settings.stage2_epochs, stage2_epochs=settings.stage2_epochs,
                     lr_step=half, stage2_lr=settings.lr, stage2_lr_step=half)
        stages = [2] if run.kind == "com" else [1]
    return config_from_dict({
        "model": model,
        "data": {"train_list": str(data.train_list), "val_list": str(data.val_list),
                 "root": str(data.root), "classes": str(data.classes_file), **frames,
                 "train_resize": [side, side], "crop_size": side, "test_short_side": side,
                 "num_test_views": 1, "num_workers": 0, "on_error": "raise"},
        "optim": optim,
        "run": {"out_dir": str(runs_dir / run.name), "seed": run.seed, "stages": stages,
                "device": "cpu", "eval_every": 0, "final_eval": True, "progress": False,
                "log_every": 10**6, "memory_format": settings.memory_format},
    })


# ------------------------------------------------------------------- receptive field
def measure_receptive_field(name: str, input_size: tuple[int, int, int], **options: Any) -> dict[str, Any]:
    """The input region that influences each position of x_L, measured with gradients.

    For every column j of x_L, the gradient of the sum of x_L over channels, time and rows
    at column j with respect to a random float64 input (eval mode, so BatchNorm is a fixed
    per-channel map) is non-zero exactly on the columns that influence it.

    Returns:
        ``local_shape`` (C, T', H', W'), ``columns`` (per x_L column, first and last input
        column that influences it), ``width`` (the largest span, the receptive field),
        ``effective_width`` (the span holding 95% of the gradient magnitude of the centre
        column) and ``stride`` (input columns between x_L columns).
    """
    import torch

    from lgdnet.models import create_model

    with torch.random.fork_rng():  # the same random network every call, global RNG untouched
        torch.manual_seed(0)
        model = create_model(name, 2, memory_format="contiguous", **options).eval().double()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, *input_size, dtype=torch.float64, generator=generator, requires_grad=True)
    local, _ = model.forward_features(x)
    columns, magnitude = [], None
    for j in range(local.shape[-1]):
        (grad,) = torch.autograd.grad(local[..., j].sum(), x, retain_graph=True)
        per_column = grad.abs().sum((0, 1, 2, 3))
        hit = (per_column > 0).nonzero().flatten()
        columns.append((int(hit.min()), int(hit.max())))
        if j == local.shape[-1] // 2:
            magnitude = per_column
    assert magnitude is not None
    order = torch.argsort(magnitude, descending=True)
    cumulative = torch.cumsum(magnitude[order], 0) / magnitude.sum()
    kept = order[: int((cumulative < 0.95).sum()) + 1]
    return {"name": name, "input_size": list(input_size), "local_shape": list(local.shape[1:]),
            "columns": columns, "width": max(b - a + 1 for a, b in columns),
            "effective_width": int(kept.max() - kept.min() + 1),
            "stride": input_size[-1] / local.shape[-1]}


def sees_both(columns: list[tuple[int, int]], footprints: Any) -> bool:
    """Whether some x_L column's input span touches both events' footprints
    (``(2, 4)`` boxes ``x0, x1, y0, y1`` in pixels; pixel i covers [i, i + 1))."""
    (a0, a1), (b0, b1) = ((math.floor(f[0]), math.ceil(f[1]) - 1) for f in footprints)
    return any(lo <= a1 and hi >= a0 and lo <= b1 and hi >= b0 for lo, hi in columns)


# ---------------------------------------------------------------------- pooling argument
def clip_tensor(frames: Any, network: str, settings: RelationSettings) -> Any:
    """Rendered uint8 frames ``(T, H, W, 3)`` as one network input ``(1, 3, T', H, W)``
    (the frames a training view takes, ImageNet-normalised as the data pipeline does)."""
    import torch

    from lgdnet.data.transforms import normalize_rgb

    if network == "3d":
        frames = frames[: settings.clip_frames * settings.frame_stride : settings.frame_stride]
    else:
        frames = frames[:: max(1, len(frames) // settings.segments)][: settings.segments]
    return normalize_rgb(torch.from_numpy(frames.copy()))[None]


def pooled_interaction(model: Any, scene: Any, network: str, settings: RelationSettings) -> dict[str, float]:
    """The interaction of the two events in the pooled features of one scene.

    Renders the scene with the four state pairs and returns, for P(x_L) and g_L,
    ``|S(0,0) + S(1,1) - S(0,1) - S(1,0)| / |S(0,0) - S(1,1)| + tiny`` (largest
    element): 0 when the feature is additive over the events (no position sees both).
    """
    import torch

    from lgdnet.data.synthetic_relations import render_relation_clip

    model.eval()
    features: dict[tuple[int, int], tuple[Any, Any]] = {}
    with torch.no_grad():
        for states in ((0, 0), (1, 1), (0, 1), (1, 0)):
            x = clip_tensor(render_relation_clip(scene, states), network, settings).to(torch.float64)
            local, g = model.forward_features(x)
            features[states] = (local.mean((2, 3, 4))[0], g[0])
    result = {}
    for index, key in enumerate(("pooled", "global")):
        same = features[(0, 0)][index] + features[(1, 1)][index]
        different = features[(0, 1)][index] + features[(1, 0)][index]
        scale = (features[(0, 0)][index] - features[(1, 1)][index]).abs().max() + 1e-30
        result[key] = float((same - different).abs().max() / scale)
    return result


# ---------------------------------------------------------------------------- the grid
def run_relations(
    out_dir: str | os.PathLike = "lgdnet-relations",
    *,
    settings: RelationSettings | None = None,
    mode: str = "full",
    workers: int = 1,
    threads: int = 1,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train and score the grid, probe the models, write the reports (module docstring).

    Args:
        out_dir: ``data/``, ``runs/<run>/`` and the reports ``results.json``, ``tables.md``,
            ``losses.png``, ``receptive_fields.json``.
        settings: the size; default the ``mode``'s (:data:`RELATION_MODES`).
        mode: ``"full"``, ``"authors-init"``, ``"preliminary"`` or ``"quick"``.
        workers: runs side by side (processes); threads: torch threads per run.
        progress, echo: progress bars and where the report lines go.
    """
    settings = settings or RELATION_MODES[mode]
    started = time.perf_counter()
    out = Path(out_dir).resolve()
    runs_dir = out / "runs"
    out.mkdir(parents=True, exist_ok=True)
    fields = {}
    for network in settings.networks:
        side = frame_size(settings, network)
        name = MODEL_NAMES[(network, False)]
        size = (settings.clip_frames if network == "3d" else settings.segments, side, side)
        fields[network] = measure_receptive_field(name, size)
    from lgdnet.data.synthetic_relations import far_gap

    for network, field in fields.items():
        echo(f"  {network}: receptive field of x_L {field['width']} px (95% of the gradient in "
             f"{field['effective_width']} px); far gap at least "
             f"{far_gap(frame_size(settings, network)):.0f} px")
    (out / "receptive_fields.json").write_text(json.dumps(fields, indent=2))

    datasets = {(t, n): write_task_data(settings, t, n, out / "data", progress)
                for t in settings.tasks for n in settings.networks}
    results: list[dict[str, Any]] = []

    def jobs(runs: list[RelationRun]) -> list[tuple[Any, RelationRun, int]]:
        return [(run_config(settings, r, datasets[(r.task, r.network)], runs_dir), r, threads)
                for r in runs]

    for seed in range(settings.seeds):  # seed by seed: an interruption leaves whole seeds
        stage1 = [RelationRun(t, n, a, seed) for t in settings.tasks for n in settings.networks
                  for a in settings.arms]
        echo(f"seed {seed}: {len(stage1)} stage-1 runs")
        results += _run_all(jobs(stage1), workers, echo, progress)
        lgd_arms = [a for a in settings.arms if parse_arm(a)[0] == "lgd"][:1]
        diverged = {(r["network"], r["arm"]) for r in results if r.get("diverged")
                    and r["seed"] == seed and r["task"] == "far"}
        if settings.stage2_epochs and "far" in settings.tasks and lgd_arms:
            extra = [RelationRun("far", n, lgd_arms[0], seed, kind) for n in settings.networks
                     for kind in ("com", "continued") if (n, lgd_arms[0]) not in diverged]
            results += _run_all(jobs(extra), workers, echo, progress)
    if settings.probe:
        from lgdnet.apps.relations_probes import write_probes

        write_probes(results, runs_dir, datasets)
    from lgdnet.apps.relations_report import plot_losses, summarise

    report = summarise(results, settings)
    report.update(settings=dataclasses.asdict(settings), receptive_fields=fields,
                  seconds=time.perf_counter() - started,
                  cpu_seconds=sum(r["cpu_seconds"] for r in results))
    (out / "tables.md").write_text(report["markdown"] + "\n", encoding="utf-8")
    plot_losses(results, settings, out / "losses.png")
    runs = [{k: v for k, v in r.items() if k != "config"} for r in results]
    (out / "results.json").write_text(json.dumps({**report, "runs": runs}, indent=2, default=str))
    echo(report["markdown"])
    echo(f"done in {report['seconds'] / 60:.1f} min; reports in {out}")
    return report
