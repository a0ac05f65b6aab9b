"""``lgdnet check-data``: scan a dataset and report every problem; exit 0 only when clean."""

from __future__ import annotations

import argparse

from lgdnet.cli._dataset_args import add_dataset_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-data",
        help="check an annotation list and every video it names",
        description=(
            "Read the annotations (reporting every malformed line, unknown label and duplicate "
            "entry) and open every video in parallel, decoding its first, middle and last "
            "frames, to report missing files, undecodable files (empty, truncated, not a "
            "video, no video stream, corrupt) and videos shorter than --min-frames. Prints "
            "each problem and a summary. Exit status 0 when the dataset is clean, 1 when "
            "something is wrong, 2 when the annotation file itself cannot be read."
        ),
    )
    add_dataset_arguments(parser, workers_help="parallel readers (default: 2 per CPU, at most 16)")
    parser.add_argument("--classes", default=None, metavar="FILE", help="class names file fixing the label order")
    parser.add_argument("--min-frames", type=int, default=16, metavar="M",
                        help="report videos with fewer frames (default 16, an LGD-3D clip)")
    parser.add_argument("--no-decode", action="store_true", help="only open each video, decode no frames (faster)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from lgdnet.data.checking import check_dataset

    report = check_dataset(
        args.annotations, root=args.root, format=args.format, split=args.split, subset=args.subset,
        classes=args.classes, workers=args.workers, min_frames=args.min_frames,
        decode=not args.no_decode, progress=not args.quiet)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for problem in report.problems:
            print(problem)
        print(report.summary())
    return 0 if report.ok else 1
