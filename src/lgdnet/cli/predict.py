"""``lgdnet predict``: the most probable classes of one or more videos."""

from __future__ import annotations

import argparse

from lgdnet.cli._inference_args import add_checkpoint, add_runtime, add_views


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="print the top-5 classes of a video with their probabilities",
        description=(
            "Classify videos with a trained checkpoint. Each video is read as several views "
            "(Sec. 5.2: 15 clips for LGD-3D, 10 frame triples for LGD-2D, or the number in "
            "the checkpoint's configuration) and the softmax scores are averaged."
        ),
    )
    parser.add_argument("videos", nargs="+", metavar="VIDEO",
                        help="video files (or frame folders)")
    add_checkpoint(parser)
    parser.add_argument("--top", type=int, default=5, metavar="K",
                        help="how many classes to print (default 5)")
    add_views(parser)
    add_runtime(parser)
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document: [{video, predictions: [{class, "
                             "probability}]}] ({video, error} for an unreadable video)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from lgdnet.engine.predict import load_predictor
    from lgdnet.errors import LgdnetError, VideoReadError

    if args.top < 1:
        raise LgdnetError(f"--top must be at least 1, got {args.top}")
    predictor = load_predictor(args.checkpoint, device=args.device, views=args.views,
                               crops=args.crops, precision=args.precision,
                               memory_format=args.memory_format)
    results, failed = [], 0
    for video in args.videos:
        try:  # one unreadable video never hides the others' predictions
            predictions = predictor.predict(video, top_k=args.top)
        except VideoReadError as error:
            failed += 1
            results.append({"video": video, "error": str(error)})
            print(f"lgdnet predict: error: {error}", file=sys.stderr)
            continue
        results.append({"video": video,
                        "predictions": [{"class": name, "probability": probability}
                                        for name, probability in predictions]})
        if not args.json:
            print(f"{video} (top {len(predictions)} of {len(predictor.classes)} classes, "
                  f"{predictor.num_views} views averaged)")
            width = max(len(name) for name, _ in predictions)
            for name, probability in predictions:
                print(f"  {name:<{width}}  {100 * probability:5.1f}%")
    if args.json:
        print(json.dumps(results, indent=2))
    if failed:
        print(f"lgdnet predict: error: {failed} of {len(args.videos)} videos could not be read",
              file=sys.stderr)
        return 1
    return 0
