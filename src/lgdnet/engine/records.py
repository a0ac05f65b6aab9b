"""What a training run leaves behind besides checkpoints: metrics files and curves.

* ``metrics.jsonl`` / ``metrics.csv``: one record per epoch (stage, epoch, losses, accuracy,
  learning rate, throughput, validation accuracy).
* ``steps.jsonl``: one record per optimiser step (stage, epoch, step, losses, lr, the step's
  wall time ``seconds`` and its loader wait ``data_seconds``), appended
  line by line (a line cut short by a kill is dropped on resume).

The epoch files and the curves are rewritten whole through :mod:`lgdnet.atomic`.
* optionally TensorBoard event files under ``tensorboard/`` (when ``tensorboard`` is
  installed).
* ``training_curves.png``: the local and global losses of stage 1 drawn separately (as in
  Fig. 4 of the paper), the stage-2 loss and the accuracies, per epoch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from lgdnet.atomic import append_line, write_bytes, write_text

EPOCH_FIELDS = [
    "stage", "epoch", "lr", "loss", "global_loss", "local_loss", "accuracy", "val_accuracy",
    "clips_per_s", "seconds", "steps",
]


class MetricsLogger:
    """Appends per-epoch and per-step records to files in ``run_dir`` (rank 0 only).

    Args:
        run_dir: the run's output directory.
        tensorboard: also write TensorBoard events (skipped with a warning when the
            ``tensorboard`` package is missing).
    """

    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.epochs_path = self.run_dir / "metrics.jsonl"
        self.csv_path = self.run_dir / "metrics.csv"
        self.steps_path = self.run_dir / "steps.jsonl"
        self.writer = None
        self._epochs: list[dict[str, Any]] = []
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                import warnings

                warnings.warn("tensorboard is not installed; not writing TensorBoard events",
                              stacklevel=2)

    def restart(self, epoch_records: list[dict[str, Any]], last_step: dict[int, int]) -> None:
        """Resume: rewrite the files to hold only what the resumed checkpoint had seen.

        Args:
            epoch_records: the epoch records saved in the checkpoint.
            last_step: per stage, the last optimiser step the checkpoint includes; later
                step records (written after that checkpoint by a killed run) are dropped.
        """
        self._write_epochs(list(epoch_records))
        kept = []
        if self.steps_path.exists():
            for line in self.steps_path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:  # a line cut short by the kill
                    continue
                if record.get("step", 0) <= last_step.get(record.get("stage"), 0):
                    kept.append(line)
        write_text(self.steps_path, "".join(f"{line}\n" for line in kept))

    def _write_epochs(self, records: list[dict[str, Any]]) -> None:
        """Both epoch files, each written whole (:func:`lgdnet.atomic.atomic_write`)."""
        self._epochs = records
        write_text(self.epochs_path, "".join(json.dumps(r) + "\n" for r in records))
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=EPOCH_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow(record)
        write_text(self.csv_path, buffer.getvalue())

    def log_epoch(self, record: dict[str, Any]) -> None:
        """Add one epoch record to ``metrics.jsonl`` and ``metrics.csv`` (rewritten whole:
        a full disk leaves the previous files, never a half line)."""
        self._write_epochs([*self._epochs, record])
        if self.writer is not None:
            step = record["epoch"]
            for key in ("loss", "global_loss", "local_loss", "accuracy", "val_accuracy", "lr"):
                value = record.get(key)
                if value is not None:
                    self.writer.add_scalar(f"stage{record['stage']}/epoch_{key}", value, step)
            self.writer.flush()

    def log_step(self, record: dict[str, Any]) -> None:
        """Append one optimiser-step record to ``steps.jsonl``."""
        append_line(self.steps_path, json.dumps(record))
        if self.writer is not None:
            for key in ("loss", "global_loss", "local_loss", "lr"):
                value = record.get(key)
                if value is not None:
                    self.writer.add_scalar(f"stage{record['stage']}/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


TIMING_FIELDS = ("seconds", "data_seconds", "clips_per_s")


def read_jsonl(path: str | os.PathLike, timing: bool = True) -> list[dict[str, Any]]:
    """All records of a JSON-lines file; ``timing=False`` drops the fields that measure time
    (:data:`TIMING_FIELDS`), which differ between two runs that computed the same thing."""
    records = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not timing:
        records = [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]
    return records


def _series(records: list[dict[str, Any]], stage: int, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for record in records:
        value = record.get(key)
        if record.get("stage") == stage and value is not None and math.isfinite(value):
            xs.append(record["epoch"])
            ys.append(value)
    return xs, ys


def plot_training_curves(records: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Draw the per-epoch losses and accuracies of a run into a PNG.

    Stage 1's global loss and local loss (the two terms of Eq. 6) are drawn as separate
    curves, as in Fig. 4 of the paper; stage 2's loss is Eq. (7).

    Args:
        records: epoch records (``metrics.jsonl``).
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    stages = sorted({r["stage"] for r in records})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    loss_ax, acc_ax = axes
    offset = 0  # stage 2's epochs continue after stage 1's on one axis
    for stage in stages:
        if stage == 1:
            for key, label, style in (("global_loss", "stage 1 global loss", "-"),
                                      ("local_loss", "stage 1 local loss", "--")):
                xs, ys = _series(records, 1, key)
                if xs:
                    loss_ax.plot(xs, ys, style, marker="o", markersize=3, label=label)
        else:
            xs, ys = _series(records, stage, "loss")
            if xs:
                loss_ax.plot([x + offset for x in xs], ys, "-", marker="o", markersize=3,
                             label=f"stage {stage} loss (Eq. 7)")
        for key, label in (("accuracy", "train"), ("val_accuracy", "val (1 view)")):
            xs, ys = _series(records, stage, key)
            if xs:
                acc_ax.plot([x + offset for x in xs], [100 * y for y in ys], marker="o",
                            markersize=3, label=f"stage {stage} {label}")
        offset += max((r["epoch"] for r in records if r["stage"] == stage), default=0)
        if stage != stages[-1]:  # mark where the next stage starts
            for ax in axes:
                ax.axvline(offset + 0.5, color="grey", linestyle=":", linewidth=1)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="Training losses")
    acc_ax.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="Accuracy")
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, dpi=100, format="png")
    plt.close(fig)
    write_bytes(path, image.getvalue())
    return path
