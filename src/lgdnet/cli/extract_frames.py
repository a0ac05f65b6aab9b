"""``lgdnet extract-frames``: JPEG frame folders (TSN/MMAction2 layout) for an annotation list."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    """``HxW`` -> ``(H, W)``."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 240x320, got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"sides must be positive, got {text!r}")
    return height, width


def _count(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract-frames",
        help="extract resized JPEG frames for the videos of an annotation list",
        description=(
            "Decode every video of an annotation list and write its frames as JPEGs in the "
            "TSN/MMAction2 layout OUT/<video_id>/img_00001.jpg, ... Runs in parallel over "
            "videos and is resumable: each video folder appears only when complete, and "
            "finished videos are skipped by the next run. Bad videos are reported at the end "
            "instead of stopping the run. Also writes a rawframes list (video_id num_frames "
            "label) and classes.txt into OUT; train on the frames with that list and --root OUT. "
            "Exit status 0 when every video succeeded, 1 when some failed."
        ),
    )
    parser.add_argument("annotations", metavar="ANNOTATIONS", help="list file, Kinetics CSV, or UCF101/HMDB51 splits folder")
    parser.add_argument("--root", default=None, metavar="DIR", help="folder the annotation paths are relative to (default: the list's folder)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--format", default="auto", choices=("auto", "list", "kinetics", "ucf101", "hmdb51"),
                        help="annotation format (default: guessed from the path)")
    parser.add_argument("--split", type=int, default=1, help="UCF101/HMDB51 split (default 1)")
    parser.add_argument("--subset", default="train", choices=("train", "test", "val"),
                        help="which videos (default train; run again with --subset test, shared videos are skipped)")
    parser.add_argument("--workers", type=_count(1), default=os.cpu_count() or 1, help="processes, one video each (default: number of CPUs)")
    geometry = parser.add_mutually_exclusive_group()
    geometry.add_argument("--short-side", type=_count(0), default=256, metavar="N",
                          help="resize so the shorter side is N, keeping the aspect ratio (default 256; 0 keeps the size)")
    geometry.add_argument("--size", type=_size, default=None, metavar="HxW", help="resize to exactly H x W instead")
    parser.add_argument("--template", default="img_{:05d}.jpg", help="frame file names, numbered from 1 (default img_{:05d}.jpg)")
    parser.add_argument("--quality", type=_count(1), default=95, help="JPEG quality 1-100 (default 95)")
    parser.add_argument("--list-out", default=None, metavar="FILE",
                        help="rawframes list to write (default OUT/<list name>_rawframes.txt, or "
                             "OUT/split<N>_<subset>_rawframes.txt for a splits folder)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lgdnet.data.annotations import load_annotations
    from lgdnet.data.frame_extraction import extract_frames

    annotations = load_annotations(args.annotations, root=args.root, format=args.format, split=args.split, subset=args.subset)
    source = Path(args.annotations)
    default_name = f"split{args.split}_{args.subset}_rawframes.txt" if source.is_dir() else f"{source.stem}_rawframes.txt"
    list_path = Path(args.list_out) if args.list_out else Path(args.out) / default_name
    report = extract_frames(
        annotations.records, args.out, workers=args.workers, short_side=args.short_side or None, size=args.size,
        template=args.template, quality=args.quality, list_path=list_path, classes=annotations.classes,
        progress=not args.quiet)
    print(f"{len(report.extracted)} extracted, {len(report.skipped)} already done, {len(report.failed)} failed "
          f"in {report.seconds:.1f} s; list: {report.list_path}")
    for video_id, reason in report.failed:
        print(f"  failed {video_id}: {reason}")
    return 0 if report.ok else 1
