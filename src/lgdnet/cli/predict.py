"""``lgdnet predict``: the most probable classes of one or more videos."""

from __future__ import annotations

import argparse


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
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="a .safetensors checkpoint written by `lgdnet train`")
    parser.add_argument("--top", type=int, default=5, metavar="K",
                        help="how many classes to print (default 5)")
    parser.add_argument("--views", type=int, default=None, metavar="N",
                        help="clips (3D) or frame triples (2D) per video")
    parser.add_argument("--crops", type=int, default=None, choices=[1, 3])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--memory-format", default="auto",
                        choices=["auto", "channels_last", "contiguous"],
                        help="activations' layout (default auto: channels-last on the CPU, "
                             "where it is faster)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document: [{video, predictions: [{class, "
                             "probability}]}]")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from lgdnet.engine.predict import load_predictor

    if args.top < 1:
        from lgdnet.errors import LgdnetError

        raise LgdnetError(f"--top must be at least 1, got {args.top}")
    predictor = load_predictor(args.checkpoint, device=args.device, views=args.views,
                               crops=args.crops, precision=args.precision,
                               memory_format=args.memory_format)
    results = []
    for video in args.videos:
        predictions = predictor.predict(video, top_k=args.top)
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
    return 0
