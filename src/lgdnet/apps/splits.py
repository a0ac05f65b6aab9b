"""The three official splits of UCF101 or HMDB51 and the Table 6 summary (Sec. 5.6).

:func:`run_splits` trains one run per split and stream (RGB, and flow when a flow
configuration is given) with :func:`lgdnet.engine.training.train`, each in its own folder
``OUT/<stream>/split<N>``. A finished run (its ``summary.json`` exists) is skipped; an
interrupted one (a ``stage{N}_last`` checkpoint but no summary) is resumed exactly; the rest
start fresh. Then ``OUT/table6.md`` and ``OUT/table6.json`` give the multi-view top-1 of the
final stage per split and their mean, per stream and, when both streams ran, fused as
``lgdnet fuse`` fuses (flow weighted 1.5 against RGB 1, as TSN does, by default).

In a configuration, ``{split}`` in ``data.train_list``, ``data.val_list``, ``data.root``,
``data.classes`` and ``model.init_checkpoint`` is replaced by the split number (flow lists
are written per split: ``flow/flow_list_ucf101_train_split{split}.txt``), and
``data.split`` is set to it (UCF101/HMDB51 split folders).

Every split is checked before the first run trains: a split that does not exist stops the
command, and videos that a split names but the root lacks are counted and named in a warning
(an error with ``data.on_error=raise`` or when none of a subset's videos exists).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from lgdnet.errors import AnnotationError, ConfigError

log = logging.getLogger(__name__)

#: Datasets and their official split numbers.
DATASETS = {"ucf101": (1, 2, 3), "hmdb51": (1, 2, 3)}
DEFAULT_FUSION = (1.0, 1.5)  # RGB, flow


def split_config(config: Any, dataset: str, split: int, out_dir: str | os.PathLike,
                 stream: str) -> Any:
    """The configuration of one split's run: ``{split}`` filled in, ``data.split`` set and
    ``run.out_dir`` = ``out_dir/<stream>/split<N>``.

    Raises:
        ConfigError: an unknown dataset or split number, a configuration of the other
            dataset's format, or one without a validation list or final evaluation.
    """
    if dataset not in DATASETS:
        raise ConfigError(f"--dataset: expected one of {', '.join(DATASETS)}, got {dataset!r}")
    if split not in DATASETS[dataset]:
        raise ConfigError(f"--splits: {dataset} has splits "
                          f"{', '.join(map(str, DATASETS[dataset]))}, not {split}")
    other = [name for name in DATASETS if name != dataset]
    if config.data.format in other:
        raise ConfigError(f"data.format: {config.data.format!r} in the {stream} configuration, "
                          f"but --dataset is {dataset}")
    if not config.data.val_list or not config.run.final_eval:
        raise ConfigError(f"the {stream} configuration needs data.val_list and run.final_eval: "
                          "the table is the multi-view evaluation of each split's test list")

    def fill(text: str) -> str:
        return text.replace("{split}", str(split))

    data = dataclasses.replace(config.data, split=split, train_list=fill(config.data.train_list),
                               val_list=fill(config.data.val_list), root=fill(config.data.root),
                               classes=fill(config.data.classes))
    model = dataclasses.replace(config.model, init_checkpoint=fill(config.model.init_checkpoint))
    run = dataclasses.replace(config.run, out_dir=str(Path(out_dir) / stream / f"split{split}"))
    return dataclasses.replace(config, data=data, model=model, run=run)


def check_split(config: Any, stream: str) -> list[str]:
    """Read a split's training and test lists and check that their videos exist.

    Returns:
        Warnings naming the split file and the absent videos (also logged).

    Raises:
        AnnotationError: the split does not exist, a list is malformed, or videos are absent
            and ``data.on_error`` is ``"raise"`` or none of a subset's videos exists.
    """
    from lgdnet.engine import builders

    warnings = []
    classes = None
    for which in ("train", "val"):
        annotations = builders.load_split(config.data, which, classes=classes)
        classes = list(annotations.classes)
        missing = [r.path for r in annotations.records if not os.path.exists(r.path)]
        if not missing:
            continue
        source = annotations.source
        text = (f"{stream} split {config.data.split}: {len(missing)} of "
                f"{len(annotations.records)} {which} videos named by {source} are not under "
                f"{config.data.root or 'the list folder'} (e.g. {', '.join(missing[:3])})")
        if config.data.on_error == "raise" or len(missing) == len(annotations.records):
            raise AnnotationError(source, None, text.split(": ", 1)[1] +
                                  ("" if len(missing) < len(annotations.records)
                                   else "; is data.root right?"))
        log.warning("%s; they are skipped (data.on_error=skip)", text)
        warnings.append(text)
    return warnings


def run_split(config: Any) -> dict[str, Any]:
    """Train one split's run, skipping it when finished and resuming it when interrupted;
    returns its summary."""
    from lgdnet.engine.checkpoint import checkpoint_paths
    from lgdnet.engine.training import train

    run_dir = Path(config.run.out_dir)
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        log.info("%s: finished, skipped", run_dir)
        return json.loads(summary_file.read_text(encoding="utf-8"))
    started = any(checkpoint_paths(run_dir / f"stage{s}_last")[1].is_file() for s in (1, 2))
    log.info("%s: %s", run_dir, "resuming" if started else "training")
    return train(config, resume=True if started else None)


def _final_scores(run_dir: Path, summary: dict[str, Any]) -> tuple[float, Path]:
    stages = summary.get("stages") or {}
    final = max(int(s) for s in stages)
    stage = stages.get(str(final), stages.get(final)) or {}
    top1 = (stage.get("eval") or {}).get("top1")
    scores = run_dir / f"stage{final}_eval" / "scores.npz"
    if top1 is None or not scores.is_file():
        raise AnnotationError(run_dir, None, f"stage {final} has no multi-view evaluation "
                              "(scores.npz): was run.final_eval off?")
    return float(top1), scores


def run_splits(config: Any, dataset: str, splits: tuple[int, ...] = (1, 2, 3), *,
               flow_config: Any = None, out_dir: str | os.PathLike | None = None,
               fusion_weights: tuple[float, float] = DEFAULT_FUSION) -> dict[str, Any]:
    """Run the splits of ``dataset`` for the RGB (and flow) configuration and write the
    Table 6 summary.

    Args:
        config: the RGB (or single-stream) configuration (``{split}`` placeholders allowed).
        dataset: ``"ucf101"`` or ``"hmdb51"``.
        splits: split numbers to run.
        flow_config: the flow stream's configuration, or ``None``.
        out_dir: where the runs and the table go (default: ``config.run.out_dir``).
        fusion_weights: RGB and flow weights of the late fusion.

    Returns:
        The table as written to ``table6.json``: ``rows`` (per split: top-1 per stream and
        fused), ``mean``, ``streams``, ``runs``, ``warnings`` and the configurations.

    Raises:
        ConfigError, AnnotationError: bad split numbers or split files (checked for every
            split before anything trains).
    """
    from lgdnet.atomic import write_text
    from lgdnet.engine.config import config_to_dict
    from lgdnet.engine.metrics import (
        align_score_files,
        classification_metrics,
        fuse_scores,
        load_scores,
    )

    out = Path(out_dir if out_dir is not None else config.run.out_dir)
    if not splits or len(set(splits)) != len(splits):
        raise ConfigError(f"--splits: expected distinct split numbers, got {list(splits)}")
    streams = {"rgb": config} if flow_config is None else {"rgb": config, "flow": flow_config}
    runs = {(stream, split): split_config(c, dataset, split, out, stream)
            for stream, c in streams.items() for split in splits}
    warnings = [w for (stream, _), c in runs.items() for w in check_split(c, stream)]

    rows = []
    for split in splits:
        row: dict[str, Any] = {"split": split}
        scores = {}
        for stream in streams:
            split_run = runs[(stream, split)]
            summary = run_split(split_run)
            row[stream], scores[stream] = _final_scores(Path(split_run.run.out_dir), summary)
        if len(scores) == 2:
            files = align_score_files([load_scores(scores["rgb"]), load_scores(scores["flow"])])
            fused = fuse_scores([f.scores for f in files], list(fusion_weights))
            row["fused"] = float(classification_metrics(fused, files[0].labels)["top1"])
        rows.append(row)
    columns = [*streams, *(["fused"] if len(streams) == 2 else [])]
    mean = {c: sum(r[c] for r in rows) / len(rows) for c in columns}
    table = {"dataset": dataset, "splits": list(splits), "streams": list(streams),
             "columns": columns, "rows": rows, "mean": mean,
             "fusion_weights": {"rgb": fusion_weights[0], "flow": fusion_weights[1]}
             if "fused" in columns else None,
             "runs": {f"{s}/split{n}": c.run.out_dir for (s, n), c in runs.items()},
             "warnings": warnings,
             "configs": {stream: config_to_dict(c) for stream, c in streams.items()}}
    write_text(out / "table6.json", json.dumps(table, indent=2) + "\n")
    write_text(out / "table6.md", format_table(table))
    return table


def format_table(table: dict[str, Any]) -> str:
    """The Table 6 style Markdown: one row per split and the mean, top-1 in percent."""
    names = {"rgb": "RGB", "flow": "Flow", "fused": "Two-stream"}
    columns = table["columns"]
    lines = [f"# {table['dataset'].upper()}: top-1 (%) over splits {', '.join(map(str, table['splits']))}",
             "", "| split | " + " | ".join(names.get(c, c) for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for row in table["rows"]:
        lines.append(f"| {row['split']} | " + " | ".join(f"{100 * row[c]:.1f}" for c in columns) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{100 * table['mean'][c]:.1f}**" for c in columns) + " |")
    if table.get("fusion_weights"):
        weights = table["fusion_weights"]
        lines += ["", f"Two-stream: late fusion of the per-video scores, RGB {weights['rgb']:g} : "
                  f"flow {weights['flow']:g}."]
    lines += ["", "Multi-view evaluation of each run's final stage (Sec. 5.2); runs: "
              + ", ".join(f"`{path}`" for path in table["runs"].values()) + "."]
    return "\n".join(lines) + "\n"
