"""``lgdnet fuse``: late fusion of the saved scores of two or more runs (e.g. RGB and flow)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fuse",
        help="combine the per-video scores of several evaluations (two-stream fusion)",
        description=(
            "Weighted average of the per-video scores saved by `lgdnet eval` (scores.npz), "
            "e.g. an RGB and a flow network as in the paper's two-stream results. The files "
            "must cover the same videos and classes; rows are matched by video id. Prints "
            "the metrics of every input next to the fused ones."
        ),
    )
    parser.add_argument("scores", nargs="+", metavar="SCORES.npz",
                        help="scores.npz files written by `lgdnet eval` (at least two)")
    parser.add_argument("--weights", nargs="+", type=float, default=None, metavar="W",
                        help="one weight per file (default: all 1); only ratios matter")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="also write the fused scores.npz, metrics.json and "
                             "confusion_matrix.png here")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from lgdnet.engine.evaluate import EvalResult, format_metrics, save_evaluation
    from lgdnet.engine.metrics import (
        align_score_files,
        classification_metrics,
        fuse_scores,
        load_scores,
    )
    from lgdnet.errors import LgdnetError

    if len(args.scores) < 2:
        raise LgdnetError("fuse needs at least two score files")
    weights = args.weights if args.weights is not None else [1.0] * len(args.scores)
    if len(weights) != len(args.scores):
        raise LgdnetError(f"--weights: got {len(weights)} weights for {len(args.scores)} files")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise LgdnetError(f"--weights: must be non-negative with a positive sum, got {weights}")

    files = align_score_files([load_scores(path) for path in args.scores])
    fused_scores = fuse_scores([f.scores for f in files], weights)
    reference = files[0]
    rows = [(path, weight, classification_metrics(f.scores, f.labels))
            for path, weight, f in zip(args.scores, weights, files)]
    fused = classification_metrics(fused_scores, reference.labels)
    record = {
        "inputs": [{"scores": path, "weight": weight, "metrics": metrics}
                   for path, weight, metrics in rows],
        "fused": fused,
    }
    if args.out:
        result = EvalResult(fused, fused_scores.astype("float32"), reference.labels,
                            reference.video_ids)
        paths = save_evaluation(result, args.out, reference.classes,
                                extra={"inputs": record["inputs"]})
        record["written"] = {kind: str(path) for kind, path in paths.items()}

    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    num_classes = len(reference.classes)
    width = max(len(path) for path in args.scores)
    for path, weight, metrics in rows:
        print(f"{path:<{width}}  {format_metrics(metrics)}  weight {weight:g}")
    print(f"{'fused':<{width}}  {format_metrics(fused, num_classes)}")
    if args.out:
        for kind, path in record["written"].items():
            print(f"{kind.replace('_', ' ')}: {path}")
    return 0
