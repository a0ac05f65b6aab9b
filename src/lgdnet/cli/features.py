"""``lgdnet features``: write the local and global representations of a list of videos."""

from __future__ import annotations

import argparse

from lgdnet.cli._inference_args import add_checkpoint, add_loading, add_runtime, add_views


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "features",
        help="write the local (x_L) and global (g_L) representations of a list of videos",
        description=(
            "For every video of an annotation list, write OUT/<video_id>.npz with the local "
            "map x_L and the global vector g_L of the last LGD block (Sec. 3.1), averaged over "
            "the test views (Sec. 5.2), plus OUT/manifest.json. Finished videos are skipped, "
            "so an interrupted run continues where it stopped. The files are plain NumPy "
            "archives (numpy.load; torch.from_numpy), readable without lgdnet."
        ),
    )
    parser.add_argument("list", metavar="LIST",
                        help="annotations: a list file, Kinetics CSV, or UCF101/HMDB51 "
                             "splits folder")
    parser.add_argument("--root", default=None, metavar="DIR",
                        help="folder the video paths are relative to (default: the list's)")
    add_checkpoint(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="where the files go")
    parser.add_argument("--format", default="auto",
                        choices=["auto", "list", "kinetics", "ucf101", "hmdb51"])
    parser.add_argument("--split", type=int, default=1, help="UCF101/HMDB51 split (1-3)")
    parser.add_argument("--subset", default="test", choices=["train", "test", "val"])
    parser.add_argument("--pool-local", default="none", choices=["none", "mean", "time"],
                        help="pool the local map: none (C,T,H,W), mean over space-time (C), "
                             "or over time (C,H,W)")
    parser.add_argument("--outputs", nargs="+", default=["local", "global"],
                        choices=["global", "local", "local_pooled"], metavar="ARRAY",
                        help="arrays in each file: global (g_L, C), local (x_L, pooled as "
                             "--pool-local says; C,T,H,W by default), local_pooled (P(x_L), C); "
                             "default: local global")
    parser.add_argument("--per-view", action="store_true",
                        help="keep every test view (leading axis V) instead of averaging")
    add_views(parser)
    add_runtime(parser)
    add_loading(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from lgdnet.data import load_annotations
    from lgdnet.engine.features import extract_features
    from lgdnet.engine.predict import load_predictor, match_list_classes
    predictor = load_predictor(args.checkpoint, device=args.device, views=args.views,
                               crops=args.crops, precision=args.precision,
                               memory_format=args.memory_format)
    annotations = load_annotations(args.list, root=args.root, format=args.format,
                                   split=args.split, subset=args.subset)
    # labels named as the checkpoint names them (mapped by name when in another order);
    # another dataset keeps its own names, with a warning
    annotations = match_list_classes(annotations, predictor.classes, refuse=False)
    summary = extract_features(predictor, annotations.records, args.out,
                               pooling=args.pool_local, per_view=args.per_view,
                               num_workers=args.workers, progress=not args.no_progress,
                               classes=annotations.classes, outputs=tuple(args.outputs))
    print(f"features of {summary.written} videos written to {args.out}"
          + (f" ({summary.skipped_existing} already there)" if summary.skipped_existing else ""))
    print(f"manifest: {summary.manifest}")
    for _, reason in summary.failed:
        print(f"unreadable: {reason}", file=sys.stderr)
    if summary.failed:
        print(f"{len(summary.failed)} videos could not be read (listed in the manifest)",
              file=sys.stderr)
        return 1
    return 0
