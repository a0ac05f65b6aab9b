"""``lgdnet features``: write the local and global representations of a list of videos."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "features",
        help="write the local (x_L) and global (g_L) representations of a list of videos",
        description=(
            "For every video of an annotation list, write OUT/<video_id>.npz with the local "
            "map x_L and the global vector g_L of the last LGD block (Sec. 3.1), averaged over "
            "the test views (Sec. 5.2), plus OUT/manifest.json. Finished videos are skipped, "
            "so an interrupted run continues where it stopped."
        ),
    )
    parser.add_argument("list", metavar="LIST",
                        help="annotations: a list file, Kinetics CSV, or UCF101/HMDB51 "
                             "splits folder")
    parser.add_argument("--root", default=None, metavar="DIR",
                        help="folder the video paths are relative to (default: the list's)")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="a .safetensors checkpoint written by `lgdnet train`")
    parser.add_argument("--out", required=True, metavar="DIR", help="where the files go")
    parser.add_argument("--format", default="auto",
                        choices=["auto", "list", "kinetics", "ucf101", "hmdb51"])
    parser.add_argument("--split", type=int, default=1, help="UCF101/HMDB51 split (1-3)")
    parser.add_argument("--subset", default="test", choices=["train", "test", "val"])
    parser.add_argument("--pool-local", default="none", choices=["none", "mean", "time"],
                        help="pool the local map: none (C,T,H,W), mean over space-time (C), "
                             "or over time (C,H,W)")
    parser.add_argument("--per-view", action="store_true",
                        help="keep every test view (leading axis V) instead of averaging")
    parser.add_argument("--views", type=int, default=None, metavar="N",
                        help="clips (3D) or frame triples (2D) per video")
    parser.add_argument("--crops", type=int, default=None, choices=[1, 3])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--memory-format", default="auto",
                        choices=["auto", "channels_last", "contiguous"],
                        help="activations' layout (default auto: channels-last on the CPU, "
                             "where it is faster)")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="video-decoding processes (default 2)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from lgdnet.data import load_annotations
    from lgdnet.engine.features import extract_features
    from lgdnet.engine.predict import load_predictor
    from lgdnet.errors import AnnotationError

    predictor = load_predictor(args.checkpoint, device=args.device, views=args.views,
                               crops=args.crops, precision=args.precision,
                               memory_format=args.memory_format)
    options = dict(root=args.root, format=args.format, split=args.split, subset=args.subset)
    try:  # label names as the checkpoint has them, when the list fits its classes
        annotations = load_annotations(args.list, classes=predictor.classes, **options)
    except AnnotationError:  # another dataset: its own class names
        annotations = load_annotations(args.list, **options)
    summary = extract_features(predictor, annotations.records, args.out,
                               pooling=args.pool_local, per_view=args.per_view,
                               num_workers=args.workers, progress=not args.no_progress,
                               classes=annotations.classes)
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
