"""``lgdnet extract-frames``: JPEG frame folders (TSN/MMAction2 layout) for an annotation list."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lgdnet.cli._dataset_args import (
    RESUMABLE_SUBSET_HELP,
    add_dataset_arguments,
    at_least,
    load_dataset_annotations,
    parse_size,
)


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
    add_dataset_arguments(parser, subset_help=RESUMABLE_SUBSET_HELP,
                          workers_default=os.cpu_count() or 1)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    geometry = parser.add_mutually_exclusive_group()
    geometry.add_argument("--short-side", type=at_least(0), default=256, metavar="N",
                          help="resize so the shorter side is N, keeping the aspect ratio (default 256; 0 keeps the size)")
    geometry.add_argument("--size", type=parse_size, default=None, metavar="HxW", help="resize to exactly H x W instead")
    parser.add_argument("--template", default="img_{:05d}.jpg", help="frame file names, numbered from 1 (default img_{:05d}.jpg)")
    parser.add_argument("--quality", type=at_least(1), default=95, help="JPEG quality 1-100 (default 95)")
    parser.add_argument("--list-out", default=None, metavar="FILE",
                        help="rawframes list to write (default OUT/<list name>_rawframes.txt, or "
                             "OUT/split<N>_<subset>_rawframes.txt for a splits folder)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lgdnet.data.frame_extraction import extract_frames

    annotations = load_dataset_annotations(args)
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
