"""The paper's ablations in miniature: Table 2, Table 3 and Fig. 4 on the embedded dataset.

Sec. 5.3 compares, with ResNet-50 backbones trained from scratch on Kinetics-600, the plain
networks (TSN for 2D, P3D for 3D) with the three diffusion blocks: block_v1 (Eq. 8), block_v2
(Eq. 9) and the LGD block (Eq. 2-3) (Table 2), and draws the training losses of the local and
global paths (Fig. 4). Sec. 5.4 (Table 3) adds the local and global combination classifier
(Eq. 4-5, 7) on top. This module repeats those comparisons at CPU scale:

* data: the embedded dataset (``lgdnet.data.synthetic``), whose classes are told apart only
  by how objects tens of pixels apart move relative to each other, written once and shared;
* stage 1 (Table 2, Fig. 4): for the 2D (``tsn_tiny``/``lgd2d_tiny``) and the 3D
  (``p3d_tiny``/``lgd3d_tiny``) network, the variants ``none``, ``v1``, ``v2``, ``lgd``, each
  for several seeds, every run with the same data, schedule and seed set;
* stage 2 (Table 3): from each stage-1 LGD model, the combination classifier trained for a
  few epochs (Sec. 4.3); and, as a control for the extra epochs, the same epochs of stage 1
  continued with the Eq. (6) head;
* every model is scored by multi-clip evaluation on the held-out split (Sec. 5.2), using the
  model of the last epoch (no model selection on the held-out clips).

All runs go through :func:`lgdnet.engine.training.train`. A run that finished (its
``result.json`` holds the same configuration) is skipped when the ablation is rerun, and an
interrupted one resumes from its last checkpoint. Orbit classes are left out: random
horizontal flips (Sec. 5.2) swap their labels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lgdnet.apps.demo import DEMO_CLASSES

VARIANTS = ("none", "v1", "v2", "lgd")
NETWORKS = ("2d", "3d")
# model names per network: the plain baselines for "none", the LGD networks otherwise
MODEL_NAMES = {("2d", False): "tsn_tiny", ("2d", True): "lgd2d_tiny",
               ("3d", False): "p3d_tiny", ("3d", True): "lgd3d_tiny"}
VARIANT_LABELS = {"none": "baseline (no diffusion)", "v1": "block_v1 (Eq. 8)",
                  "v2": "block_v2 (Eq. 9)", "lgd": "LGD block (Eq. 2-3)"}
NETWORK_LABELS = {"2d": "LGD-2D (TSN-style, 3 segments)", "3d": "LGD-3D (P3D-style clips)"}


@dataclass(frozen=True)
class AblationSettings:
    """The size of the ablation: data, views, schedule and grid.

    Every run of the grid uses the same data and schedule; only the network, the diffusion
    variant and the seed change. The defaults are sized from measured runs to take about an
    hour on 2 idle CPU cores with two runs side by side (``workers=2``, one thread each):
    one stage-1 run of 30 epochs on 60 clips per class took 47 s (2D) and 73 s (3D) of CPU
    time, and these defaults have four times that work per run.
    """

    classes: tuple[str, ...] = DEMO_CLASSES
    clips_per_class: int = 120
    val_fraction: float = 0.25
    data_seed: int = 0
    video_frames: int = 16  # frames written per clip; the motion spans all of them
    video_size: tuple[int, int] = (48, 64)
    clip_frames: int = 8  # 3D: frames per clip
    frame_stride: int = 2  # 3D: so one clip sees the whole motion
    segments: int = 3  # 2D: T frames, one per segment (TSN, Sec. 4.1)
    crop_size: int = 40
    test_views: int = 5  # clips (3D) or triples of frames (2D) per held-out video
    epochs: int = 60
    lr: float = 0.01  # the paper's (Sec. 5.2)
    lr_step: int = 0  # epochs between divisions by 10; 0: once, after 3/4 of the epochs
    batch_size: int = 8
    stage2_epochs: int = 3
    stage2_lr: float = 0.01
    sketch_dim: int = 512
    base_width: int = 8
    seeds: int = 3
    networks: tuple[str, ...] = NETWORKS
    variants: tuple[str, ...] = VARIANTS
    global_residual_init: str = "xavier"  # or "zero": W^{x,g} starts at 0 (create_model)
    memory_format: str = "auto"  # activations' layout (run.memory_format); same maths, other rounding

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.epochs < 1 or self.stage2_epochs < 0:
            raise ValueError("seeds and epochs must be at least 1, stage2_epochs at least 0")
        for name, allowed in (("networks", NETWORKS), ("variants", VARIANTS)):
            unknown = [v for v in getattr(self, name) if v not in allowed]
            if unknown or not getattr(self, name):
                raise ValueError(f"{name}: unknown {unknown or 'empty'}; choose from {allowed}")

    @property
    def lr_step_epochs(self) -> int:
        return self.lr_step or max(1, round(0.75 * self.epochs))


ABLATION_MODES: dict[str, AblationSettings] = {
    "full": AblationSettings(),
    # `lgdnet ablate --quick` and the test suite: proves the pipeline runs, not the ordering
    "quick": AblationSettings(classes=DEMO_CLASSES[:3], clips_per_class=4, video_frames=8,
                              video_size=(32, 32), clip_frames=4, frame_stride=1, crop_size=32,
                              test_views=2, epochs=1, batch_size=4, stage2_epochs=1,
                              sketch_dim=64, seeds=1),
}


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid. ``kind``: ``"stage1"`` (Table 2), ``"com"`` (stage 2
    with the combination classifier) or ``"continued"`` (stage 1 trained on for the same
    epochs, the control for ``"com"``)."""

    network: str
    variant: str
    seed: int
    kind: str = "stage1"

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.network}-{self.variant}-seed{self.seed}"


def run_config(settings: AblationSettings, spec: RunSpec, data: Any, runs_dir: Path) -> Any:
    """The :class:`~lgdnet.engine.config.Config` of one run (saved with its checkpoints)."""
    from lgdnet.engine.config import config_from_dict

    height, width = settings.video_size
    frames = {"num_frames": settings.clip_frames, "frame_stride": settings.frame_stride} \
        if spec.network == "3d" else {"num_frames": settings.segments}
    model: dict[str, Any] = {
        "name": MODEL_NAMES[(spec.network, spec.variant != "none")], "diffusion": spec.variant,
        "sketch_dim": settings.sketch_dim, "options": {"base_width": settings.base_width}}
    if spec.variant != "none" and settings.global_residual_init != "xavier":
        model["options"]["global_residual_init"] = settings.global_residual_init
    optim: dict[str, Any] = {"lr": settings.lr, "lr_step": settings.lr_step_epochs,
                             "epochs": settings.epochs, "batch_size": settings.batch_size}
    stages = [1]
    if spec.kind != "stage1":
        # both continue from the stage-1 model of the same seed, for the same epochs and lr
        start = runs_dir / RunSpec(spec.network, spec.variant, spec.seed).name / "stage1_last"
        model["init_checkpoint"] = str(start.with_suffix(".safetensors"))
        optim.update(lr=settings.stage2_lr, stage2_lr=settings.stage2_lr, epochs=settings.stage2_epochs,
                     stage2_epochs=settings.stage2_epochs, lr_step=max(1, settings.stage2_epochs))
        stages = [2] if spec.kind == "com" else [1]
    return config_from_dict({
        "model": model,
        "data": {"train_list": str(data.train_list), "val_list": str(data.val_list),
                 "root": str(data.root), "classes": str(data.classes_file), **frames,
                 "train_resize": [height, width], "crop_size": settings.crop_size,
                 "test_short_side": min(height, width), "num_test_views": settings.test_views,
                 "num_workers": 0, "on_error": "raise"},
        "optim": optim,
        # no validation during training: the held-out clips are scored once, at the end
        "run": {"out_dir": str(runs_dir / spec.name), "seed": spec.seed, "stages": stages,
                "device": "cpu", "eval_every": 0, "final_eval": True, "progress": False,
                "log_every": 10**6, "memory_format": settings.memory_format},
    })


@contextlib.contextmanager
def quiet_engine() -> Iterator[None]:
    """Hold back the engine's per-epoch log lines (warnings and errors still pass)."""
    engine = logging.getLogger("lgdnet.engine")
    previous = engine.level
    engine.setLevel(logging.WARNING)
    try:
        yield
    finally:
        engine.setLevel(previous)


def _run_one(job: tuple[Any, RunSpec, int]) -> dict[str, Any]:
    """Train and evaluate one run, or return its stored result (resumable)."""
    import torch

    from lgdnet.engine.config import config_from_dict, config_to_dict, load_config
    from lgdnet.engine.records import read_jsonl
    from lgdnet.engine.training import train
    from lgdnet.errors import CheckpointError, ConfigError

    config, spec, threads = job
    run_dir = Path(config.run.out_dir)
    result_file = run_dir / "result.json"
    stored = config_to_dict(config)
    if result_file.is_file():
        result = json.loads(result_file.read_text(encoding="utf-8"))
        try:  # through the current dataclasses, so that a newly added option keeps its default
            same = config_to_dict(config_from_dict(result.get("config") or {})) == stored
        except ConfigError:
            same = False
        if same:
            return {**result, "skipped": True}
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or previous_threads)
    started, cpu_started = time.perf_counter(), time.process_time()
    # an interrupted run of the same configuration goes on from its last checkpoint
    saved = run_dir / "config.yaml"
    resume = saved.is_file() and config_to_dict(load_config(saved)) == stored
    try:
        with quiet_engine():  # one line per run, not per epoch
            try:
                summary = train(config, resume=resume)
            except CheckpointError:  # nothing saved yet
                summary = train(config)
    finally:
        threads_used = torch.get_num_threads()
        torch.set_num_threads(previous_threads)
    stage = config.run.stages[-1]
    history = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("stage") == stage]
    result = {**dataclasses.asdict(spec), "name": spec.name, "stage": stage,
              "metrics": summary["stages"][stage]["eval"], "history": history,
              "seconds": time.perf_counter() - started,
              "cpu_seconds": time.process_time() - cpu_started, "threads": threads_used,
              "config": stored}
    text = json.dumps(result, indent=2)
    tmp = result_file.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, result_file)
    return {**result, "skipped": False}


def _run_all(jobs: list[tuple[Any, RunSpec, int]], workers: int, echo: Callable[[str], None],
             progress: bool) -> list[dict[str, Any]]:
    from tqdm import tqdm

    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc="ablation runs", unit="run", disable=not progress)

    def report(result: dict[str, Any]) -> None:
        results.append(result)
        state = "done before" if result["skipped"] else f"{result['seconds']:.0f} s"
        line = f"  {result['name']:<28} top-1 {100 * result['metrics']['top1']:5.1f}%  ({state})"
        if progress:
            bar.write(line)
        else:
            echo(line)
        bar.update()

    try:
        if workers <= 1:
            for job in jobs:
                report(_run_one(job))
        else:
            import multiprocessing

            # spawn: fresh interpreters, no forked torch thread pools
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                for result in pool.map(_run_one, jobs):
                    report(result)
    finally:
        bar.close()
    return results


def run_ablation(
    out_dir: str | os.PathLike = "lgdnet-ablation",
    *,
    settings: AblationSettings | None = None,
    mode: str = "full",
    workers: int = 1,
    threads: int = 0,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the grid (see the module docstring), then write the tables and the loss plot.

    Args:
        out_dir: ``data/`` (the embedded dataset), ``runs/<run>/`` (one training run each)
            and the reports: ``results.json``, ``table2.md``, ``table3.md``, ``losses.png``.
        settings: the size of the ablation; default: the ``mode``'s.
        mode: ``"full"`` or ``"quick"`` (:data:`ABLATION_MODES`).
        workers: runs trained side by side, in separate processes.
        threads: torch threads per run (0: torch's default).
        progress: show progress bars.
        echo: where the report lines go.

    Returns:
        The content of ``results.json``: ``settings``, ``runs`` (one record per run with its
        multi-clip metrics and per-epoch losses), ``table2``/``table3`` (mean and standard
        deviation over seeds), ``seconds`` and the report ``paths``.
    """
    from lgdnet.apps.demo import write_demo_data

    settings = settings or ABLATION_MODES[mode]
    started = time.perf_counter()
    out = Path(out_dir).resolve()
    runs_dir = out / "runs"
    seeds = range(settings.seeds)
    echo(f"lgdnet ablate: {len(settings.networks)} networks x {len(settings.variants)} variants "
         f"x {settings.seeds} seeds, {settings.epochs} epochs each; into {out}")
    data = write_demo_data(settings, out / "data", settings.data_seed, progress)  # type: ignore[arg-type]
    echo(f"  data: {data.num_train} training and {data.num_val} held-out clips, "
         f"{len(data.classes)} classes ({', '.join(data.classes)})")

    def jobs_for(specs: list[RunSpec]) -> list[tuple[Any, RunSpec, int]]:
        return [(run_config(settings, s, data, runs_dir), s, threads) for s in specs]

    # seed by seed, so that an interrupted ablation leaves whole seeds behind
    results: list[dict[str, Any]] = []
    for seed in seeds:
        stage1 = [RunSpec(n, v, seed) for n in settings.networks for v in settings.variants]
        echo(f"seed {seed}: stage 1 (Eq. 6), {len(stage1)} runs")
        results += _run_all(jobs_for(stage1), workers, echo, progress)
        if settings.stage2_epochs and "lgd" in settings.variants:
            stage2 = [RunSpec(n, "lgd", seed, kind) for n in settings.networks
                      for kind in ("com", "continued")]
            echo(f"seed {seed}: {settings.stage2_epochs} more epochs from each stage-1 LGD model "
                 f"(combination classifier, Eq. 7; stage 1 continued), {len(stage2)} runs")
            results += _run_all(jobs_for(stage2), workers, echo, progress)

    seconds = time.perf_counter() - started
    report = summarise(results, settings)
    report.update(settings=dataclasses.asdict(settings), seconds=seconds, workers=workers,
                  train_seconds=sum(r["seconds"] for r in results if not r["skipped"]),
                  cpu_seconds=sum(r["cpu_seconds"] for r in results))
    report["paths"] = {k: str(v) for k, v in write_reports(report, out).items()}
    echo(report["table2_markdown"])
    echo(report["table3_markdown"])
    echo(f"done in {seconds / 60:.1f} min; reports in {out}")
    return report


# ------------------------------------------------------------------------------ reports
def _mean_std(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (0 for one value) of accuracies in %."""
    import statistics

    values = [100.0 * v for v in values]
    return {"mean": statistics.fmean(values) if values else float("nan"),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values),
            "values": values}


def _cell(stats: dict[str, Any] | None) -> str:
    if not stats or not stats["n"]:
        return "-"
    return f"{stats['mean']:.1f} ± {stats['std']:.1f}"


def summarise(results: list[dict[str, Any]], settings: AblationSettings) -> dict[str, Any]:
    """Table 2 and Table 3 analogues (top-1 in %, mean ± std over seeds) from run records.

    Table 2 also gives each variant's gain over the baseline of the same seed (same data
    order, paired), whose spread is smaller than the spread of the accuracies themselves.
    """
    by_key = {(r["kind"], r["network"], r["variant"], r["seed"]): r for r in results}

    def top1(kind: str, network: str, variant: str) -> list[float]:
        return [by_key[k]["metrics"]["top1"] for k in sorted(by_key)
                if k[:3] == (kind, network, variant)]

    table2: dict[str, dict[str, Any]] = {}
    for network in settings.networks:
        for variant in settings.variants:
            entry = {"top1": _mean_std(top1("stage1", network, variant))}
            gains = [by_key[("stage1", network, variant, s)]["metrics"]["top1"]
                     - by_key[("stage1", network, "none", s)]["metrics"]["top1"]
                     for s in range(settings.seeds)
                     if ("stage1", network, variant, s) in by_key
                     and ("stage1", network, "none", s) in by_key]
            if variant != "none" and gains:
                entry["gain_over_baseline"] = _mean_std(gains)
            losses = [by_key[k]["history"][-1]["loss"] for k in sorted(by_key)
                      if k[:3] == ("stage1", network, variant) and by_key[k]["history"]]
            entry["final_train_loss"] = sum(losses) / len(losses) if losses else float("nan")
            table2[f"{network}/{variant}"] = entry
    table3 = {f"{network}/{kind}": {"top1": _mean_std(top1(kind, network, "lgd"))}
              for network in settings.networks for kind in ("stage1", "continued", "com")}

    epochs, extra = settings.epochs, settings.stage2_epochs
    lines = ["| Method | " + " | ".join(NETWORK_LABELS[n] for n in settings.networks) + " |",
             "|---|" + "---|" * len(settings.networks)]
    for variant in settings.variants:
        cells = []
        for network in settings.networks:
            entry = table2[f"{network}/{variant}"]
            gain = entry.get("gain_over_baseline")
            cells.append(_cell(entry["top1"]) + (f" ({gain['mean']:+.1f} ± {gain['std']:.1f})" if gain else ""))
        lines.append(f"| {VARIANT_LABELS[variant]} | " + " | ".join(cells) + " |")
    table2_md = "\n".join(lines)
    lines = ["| Method | Epochs | " + " | ".join(NETWORK_LABELS[n] for n in settings.networks) + " |",
             "|---|---|" + "---|" * len(settings.networks)]
    for kind, label, total in (("stage1", "stage 1, Eq. (6) head", epochs),
                               ("continued", "stage 1 continued (control)", epochs + extra),
                               ("com", "+ combination classifier (Eq. 7)", epochs + extra)):
        lines.append(f"| {label} | {total} | " + " | ".join(
            _cell(table3[f"{n}/{kind}"]["top1"]) for n in settings.networks) + " |")
    return {"runs": sorted(results, key=lambda r: r["name"]), "table2": table2, "table3": table3,
            "table2_markdown": table2_md, "table3_markdown": "\n".join(lines)}


def plot_losses(results: list[dict[str, Any]], settings: AblationSettings,
                path: str | os.PathLike) -> Path:
    """The Fig. 4 analogue: stage-1 training loss per epoch of the local path (solid) and of
    the global path (dashed) for every variant, averaged over seeds; one panel per network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"none": "tab:grey", "v1": "tab:blue", "v2": "tab:orange", "lgd": "tab:red"}
    fig, axes = plt.subplots(1, len(settings.networks), figsize=(5.5 * len(settings.networks), 4),
                             squeeze=False)
    for ax, network in zip(axes[0], settings.networks):
        for variant in settings.variants:
            runs = [r for r in results if (r["kind"], r["network"], r["variant"]) == ("stage1", network, variant)]
            for key, style, path_name in (("local_loss", "-", "local"), ("global_loss", "--", "global")):
                per_epoch = losses_per_epoch(runs, key)
                if per_epoch:
                    xs = sorted(per_epoch)
                    ax.plot(xs, [sum(per_epoch[x]) / len(per_epoch[x]) for x in xs], style,
                            color=colours[variant], marker="o", markersize=3,
                            label=f"{VARIANT_LABELS[variant].split(' (')[0]} {path_name}")
        ax.set(title=NETWORK_LABELS[network], xlabel="epoch", ylabel="training cross-entropy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"Training loss of the local (solid) and global (dashed) paths, mean of "
                 f"{settings.seeds} seed(s)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_reports(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """``results.json``, ``table2.md``, ``table3.md`` and ``losses.png`` under ``out``."""
    settings = AblationSettings(**{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in report["settings"].items()})
    paths = {"results": out / "results.json", "table2": out / "table2.md",
             "table3": out / "table3.md", "losses": out / "losses.png"}
    caption2 = ("Table 2 analogue: multi-clip top-1 (%) on the held-out clips, mean ± std over "
                f"{settings.seeds} seed(s); in brackets the gain over the baseline of the same seed.")
    caption3 = ("Table 3 analogue: LGD networks, multi-clip top-1 (%) on the held-out clips, "
                f"mean ± std over {settings.seeds} seed(s).")
    paths["table2"].write_text(f"{caption2}\n\n{report['table2_markdown']}\n", encoding="utf-8")
    paths["table3"].write_text(f"{caption3}\n\n{report['table3_markdown']}\n", encoding="utf-8")
    plot_losses(report["runs"], settings, paths["losses"])
    runs = [{k: v for k, v in r.items() if k != "config"} for r in report["runs"]]
    configs = {r["name"]: r["config"] for r in report["runs"]}
    text = json.dumps({**report, "runs": runs, "configs": configs}, indent=2, default=str)
    paths["results"].write_text(text + "\n", encoding="utf-8")
    return paths


def losses_per_epoch(runs: list[dict[str, Any]], key: str) -> dict[int, list[float]]:
    """Every run's ``key`` loss (``local_loss``/``global_loss``), grouped by epoch."""
    per_epoch: dict[int, list[float]] = {}
    for run in runs:
        for record in run["history"]:
            if record.get(key) is not None:
                per_epoch.setdefault(int(record["epoch"]), []).append(float(record[key]))
    return per_epoch
