"""``lgdnet extract-flow``: TV-L1 optical flow for every video of an annotation list."""

from __future__ import annotations

import argparse
import os

from lgdnet.cli._dataset_args import (
    RESUMABLE_SUBSET_HELP,
    add_dataset_arguments,
    at_least,
    load_dataset_annotations,
    parse_size,
)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract-flow",
        help="extract TV-L1 optical flow for the videos of an annotation list",
        description=(
            "Compute TV-L1 optical flow (OpenCV, CPU) between consecutive frames of every "
            "video, clip it to +-BOUND pixels and store it as 8-bit images in the TSN/MMAction2 "
            "layout OUT/<video_id>/flow_x_00001.jpg, flow_y_00001.jpg, ... (F frames give F-1 "
            "flow frames; zero flow is 127.5). Runs in parallel over videos, is resumable "
            "(finished videos are skipped; each video folder appears only when complete), "
            "and reports bad videos at the end instead of stopping. Also writes a "
            "rawframes-style list (video_id num_flow_frames label) and classes.txt into OUT, "
            "for training with --modality flow. Exit status 0 when every video succeeded, 1 "
            "when some failed."
        ),
    )
    add_dataset_arguments(parser, root_required=True, subset_help=RESUMABLE_SUBSET_HELP,
                          workers_default=os.cpu_count() or 1)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--bound", type=_positive_float, default=20.0,
                        help="clip flow to +-BOUND pixels at the extraction size (default 20)")
    geometry = parser.add_mutually_exclusive_group()
    geometry.add_argument("--short-side", type=at_least(0), default=256, metavar="N",
                          help="resize frames so the shorter side is N, keeping the aspect "
                               "ratio, as for the RGB stream (default 256, for 2D models; "
                               "LGD-3D reads 120x160, so 120 suffices there and is "
                               "several times faster; 0 keeps the video's size)")
    geometry.add_argument("--size", type=parse_size, default=None, metavar="HxW",
                          help="resize frames to exactly H x W instead (e.g. 128x171)")
    parser.add_argument("--fast", action="store_true",
                        help="faster TV-L1 (3 warps, stopping tolerance 0.03 instead of 5 and "
                             "0.01): 4-5x faster, mean deviation from the default flow about "
                             "one 8-bit step")
    parser.add_argument("--warps", type=at_least(1), default=None,
                        help="TV-L1 warps per scale (default 5, or 3 with --fast)")
    parser.add_argument("--scales", type=at_least(1), default=None,
                        help="TV-L1 pyramid levels; fewer misses large motion (default 5)")
    parser.add_argument("--epsilon", type=_positive_float, default=None,
                        help="TV-L1 stopping tolerance (default 0.01, or 0.03 with --fast)")
    parser.add_argument("--png", action="store_true",
                        help="store lossless PNG instead of JPEG (larger files)")
    parser.add_argument("--list-out", default=None, metavar="FILE",
                        help="where to write the flow list (default: OUT/flow_list_<...>.txt, "
                             "named after the annotations and subset)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _default_list_name(args: argparse.Namespace, format: str) -> str:
    from pathlib import Path

    if format == "list":
        return f"flow_list_{Path(args.annotations).stem}.txt"
    if format in ("ucf101", "hmdb51"):
        return f"flow_list_{format}_{args.subset}_split{args.split}.txt"
    return f"flow_list_{format}_{args.subset}.txt"


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import sys
    from pathlib import Path

    from lgdnet.data.annotations import detect_format
    from lgdnet.data.flow import TVL1_DEFAULT, TVL1_FAST
    from lgdnet.data.flow_extraction import extract_flow_dataset

    annotations = load_dataset_annotations(args)
    format = args.format if args.format != "auto" else detect_format(args.annotations)
    tvl1 = TVL1_FAST if args.fast else TVL1_DEFAULT
    overrides = {"warps": args.warps, "scales": args.scales, "epsilon": args.epsilon}
    tvl1 = dataclasses.replace(tvl1, **{k: v for k, v in overrides.items() if v is not None})
    list_path = Path(args.list_out) if args.list_out else Path(args.out) / _default_list_name(
        args, format)

    report = extract_flow_dataset(
        annotations.records, args.out, workers=args.workers,
        short_side=args.short_side if args.size is None else None, size=args.size,
        bound=args.bound, tvl1=tvl1, image_format="png" if args.png else "jpg",
        list_path=list_path, classes=annotations.classes, progress=not args.no_progress,
    )
    total_frames = sum(report.num_flow_frames[v] for v in report.extracted)
    print(f"extracted {len(report.extracted)} videos ({total_frames} flow frames), "
          f"skipped {len(report.skipped)} already done, failed {len(report.failed)}, "
          f"in {report.seconds:.1f} s")
    print(f"flow list: {report.list_path}")
    if report.failed:
        print(f"{len(report.failed)} video(s) failed:", file=sys.stderr)
        for video_id, reason in report.failed:
            print(f"  {video_id}: {reason}", file=sys.stderr)
        return 1
    return 0
