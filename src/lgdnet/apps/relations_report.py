"""The relation grid's reports: Table 2 on both tasks with paired gains and 95% intervals,
the probes, Table 3 (stage 2 against stage 1 continued) and the Fig. 4 loss panels."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from lgdnet.apps.ablation import losses_per_epoch
from lgdnet.apps.relations import NETWORK_NAMES, RelationSettings, arm_label, parse_arm

_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086]


def paired(differences: list[float]) -> dict[str, Any]:
    """Mean and 95% confidence interval (Student's t) of paired differences (points)."""
    n = len(differences)
    mean = statistics.fmean(differences) if n else float("nan")
    if n < 2:
        return {"mean": mean, "low": float("nan"), "high": float("nan"), "n": n, "values": differences}
    half = _T975[min(n - 2, len(_T975) - 1)] * statistics.stdev(differences) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n, "values": differences}


def summarise(results: list[dict[str, Any]], settings: RelationSettings) -> dict[str, Any]:
    """Top-1 per cell (mean ± std over seeds) and each arm's paired gain over the baseline of
    the same seed, task, network and initialisation (mean and 95% CI), plus Table 3."""
    by_key = {(r["kind"], r["task"], r["network"], r["arm"], r["seed"]): r for r in results}

    def acc(kind: str, task: str, network: str, arm: str) -> dict[int, float]:
        return {k[4]: 100 * by_key[k]["metrics"]["top1"] for k in by_key
                if k[:4] == (kind, task, network, arm)}

    cells: dict[str, Any] = {}
    lines = ["| Method | init | " + " | ".join(f"{NETWORK_NAMES[n]}, {t}" for t in settings.tasks
                                               for n in settings.networks) + " |",
             "|---|---|" + "---|" * (len(settings.tasks) * len(settings.networks))]
    for arm in settings.arms:
        variant, init, _ = parse_arm(arm)
        row = []
        for task in settings.tasks:
            for network in settings.networks:
                values = acc("stage1", task, network, arm)
                base = acc("stage1", task, network, f"none:{init}:paper")
                entry: dict[str, Any] = {"top1": list(values.values())}
                text = "-"
                if values:
                    std = statistics.stdev(values.values()) if len(values) > 1 else 0.0
                    text = f"{statistics.fmean(values.values()):.1f} ± {std:.1f}"
                if variant != "none" and base:
                    gain = paired([values[s] - base[s] for s in values if s in base])
                    entry["gain"] = gain
                    text += f" ({gain['mean']:+.1f} [{gain['low']:+.1f}, {gain['high']:+.1f}])"
                probes = [by_key[k]["probe"] for k in by_key
                          if k[:4] == ("stage1", task, network, arm) and "probe" in by_key[k]]
                if probes:
                    entry["probe"] = {key: statistics.fmean(100 * p[key]["test"] for p in probes)
                                      for key in probes[0]}
                cells[f"{task}/{network}/{arm}"] = entry
                row.append(text)
        lines.append(f"| {arm_label(arm)} | {init} | " + " | ".join(row) + " |")
    markdown = ["Top-1 (%) on the held-out clips, mean ± std over seeds; in brackets the "
                "paired gain over the baseline with the same initialisation, mean and 95% CI.",
                "", *lines]
    # probes
    probe_rows = [(k, v["probe"]) for k, v in cells.items() if "probe" in v]
    if probe_rows:
        keys = [f"P(x_{i})" for i in range(1, 5)] + [f"g_{i}" for i in range(1, 5)]
        markdown += ["", "Linear probes (held-out top-1 %, mean over seeds) of the pooled local "
                     "map P(x_l) and the global vector g_l after each stage:", "",
                     "| run | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for key, probe in probe_rows:
            markdown.append(f"| {key} | " + " | ".join(
                f"{probe[k]:.1f}" if k in probe else "-" for k in keys) + " |")
    table3 = {}
    lgd_arms = [a for a in settings.arms if parse_arm(a)[0] == "lgd"][:1]
    if lgd_arms and settings.stage2_epochs:
        markdown += ["", "Table 3 analogue (far task, LGD networks): top-1 (%), mean ± std; "
                     "in brackets the paired difference to stage 1 continued.", "",
                     "| Method | epochs | " + " | ".join(NETWORK_NAMES[n] for n in settings.networks)
                     + " |", "|---|---|" + "---|" * len(settings.networks)]
        for kind, label, epochs in (("stage1", "stage 1, Eq. (6)", settings.epochs),
                                    ("continued", "stage 1 continued", settings.epochs + settings.stage2_epochs),
                                    ("com", "+ combination classifier (Eq. 7)", settings.epochs + settings.stage2_epochs)):
            row = []
            for network in settings.networks:
                values = acc(kind, "far", network, lgd_arms[0])
                control = acc("continued", "far", network, lgd_arms[0])
                text = "-"
                if values:
                    std = statistics.stdev(values.values()) if len(values) > 1 else 0.0
                    text = f"{statistics.fmean(values.values()):.1f} ± {std:.1f}"
                    if kind == "com" and control:
                        d = paired([values[s] - control[s] for s in values if s in control])
                        text += f" ({d['mean']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}])"
                table3[f"{network}/{kind}"] = list(values.values())
                row.append(text)
            markdown.append(f"| {label} | {epochs} | " + " | ".join(row) + " |")
    comparison = compare_inits(results, settings)
    if comparison["markdown"]:
        markdown += ["", *comparison["markdown"]]
    return {"cells": cells, "table3": table3, "inits": comparison["pairs"],
            "markdown": "\n".join(markdown)}


def _training_loss(run: dict[str, Any]) -> tuple[float, float]:
    """(final, mean over epochs) of the summed local and global training losses of a run
    (the Eq. 6 objective); the mean is the area under the curve, how fast it fell."""
    per_epoch: dict[int, float] = {}
    for record in run["history"]:
        if record.get("local_loss") is not None and record.get("global_loss") is not None:
            per_epoch[int(record["epoch"])] = float(record["local_loss"]) + float(record["global_loss"])
    if not per_epoch:
        return float("nan"), float("nan")
    return per_epoch[max(per_epoch)], statistics.fmean(per_epoch.values())


def compare_inits(results: list[dict[str, Any]], settings: RelationSettings) -> dict[str, Any]:
    """The authors' code's initialisation against the paper's, paired by seed: for every arm
    with ``init=authors`` and the arm with the same variant, ``init=paper`` and the paper's
    order, the differences (authors - paper) of top-1, of the final training loss and of its
    mean over the epochs, with 95% intervals, and the runs that diverged."""
    by_key = {(r["task"], r["network"], r["arm"], r["seed"]): r for r in results
              if r["kind"] == "stage1"}
    pairs: dict[str, Any] = {}
    rows = []
    for arm in settings.arms:
        variant, init, order = parse_arm(arm)
        reference = f"{variant}:paper:paper"
        if init != "authors" or reference not in settings.arms:
            continue
        for task in settings.tasks:
            for network in settings.networks:
                seeds = sorted(k[3] for k in by_key if k[:3] == (task, network, arm)
                               and (task, network, reference, k[3]) in by_key)
                if not seeds:
                    continue
                ours = [by_key[(task, network, arm, s)] for s in seeds]
                theirs = [by_key[(task, network, reference, s)] for s in seeds]
                top1 = paired([100 * (a["metrics"]["top1"] - b["metrics"]["top1"])
                               for a, b in zip(ours, theirs)])
                # the losses of the pairs in which neither run diverged (a NaN has no loss curve)
                losses = [(_training_loss(a), _training_loss(b)) for a, b in zip(ours, theirs)
                          if not a.get("diverged") and not b.get("diverged")]
                final = paired([a[0] - b[0] for a, b in losses if math.isfinite(a[0] - b[0])])
                area = paired([a[1] - b[1] for a, b in losses if math.isfinite(a[1] - b[1])])
                diverged = (sum(bool(r.get("diverged")) for r in ours),
                            sum(bool(r.get("diverged")) for r in theirs))
                pairs[f"{task}/{network}/{arm}"] = {"reference": reference, "top1": top1,
                                                   "final_loss": final, "mean_loss": area,
                                                   "diverged": list(diverged)}
                rows.append(f"| {arm_label(arm)}, authors' init | {task}, {NETWORK_NAMES[network]} "
                            f"| {_ci(top1, '.1f')} | {_ci(final, '.3f')} | {_ci(area, '.3f')} "
                            f"| {diverged[0]} / {diverged[1]} | {len(seeds)} |")
    if not rows:
        return {"pairs": pairs, "markdown": []}
    header = ["The authors' code's initialisation against the paper's (Xavier), paired by seed: "
              "authors - paper, mean and 95% CI, of held-out top-1 (points), of the final "
              "training loss (local + global, Eq. 6) and of its mean over the epochs (how fast "
              "it fell; pairs in which a run diverged left out); each row against the same "
              "variant with the paper's initialisation and order.", "",
              "| arm | task | top-1 | final loss | mean loss | diverged (authors / paper) | seeds |",
              "|---|---|---|---|---|---|---|"]
    return {"pairs": pairs, "markdown": header + rows}


def _ci(stat: dict[str, Any], spec: str) -> str:
    if stat["n"] == 0:
        return "-"
    if stat["n"] < 2:
        return format(stat["mean"], "+" + spec)
    return (f"{format(stat['mean'], '+' + spec)} [{format(stat['low'], '+' + spec)}, "
            f"{format(stat['high'], '+' + spec)}]")


def plot_losses(results: list[dict[str, Any]], settings: RelationSettings, path: Path) -> Path:
    """Fig. 4 analogue: training loss per epoch of the local (solid) and global (dashed)
    paths, mean over seeds; one panel per task and network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(t, n) for t in settings.tasks for n in settings.networks]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    colours = ["tab:grey", "tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:green",
               "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
    for ax, (task, network) in zip(axes[0], panels):
        for colour, arm in zip(colours, settings.arms):
            runs = [r for r in results if (r["kind"], r["task"], r["network"], r["arm"])
                    == ("stage1", task, network, arm)]
            for key, style in (("local_loss", "-"), ("global_loss", "--")):
                per_epoch = losses_per_epoch(runs, key)
                if per_epoch:
                    xs = sorted(per_epoch)
                    ax.plot(xs, [statistics.fmean(per_epoch[x]) for x in xs], style, color=colour,
                            label=f"{arm} {key.split('_')[0]}")
        ax.set(title=f"{task}, {NETWORK_NAMES[network]}", xlabel="epoch", ylabel="training cross-entropy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
