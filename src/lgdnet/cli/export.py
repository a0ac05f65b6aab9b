"""``lgdnet export``: the evaluation network as an ONNX file, verified with onnxruntime."""

from __future__ import annotations

import argparse

from lgdnet.cli._dataset_args import at_least
from lgdnet.cli._inference_args import add_checkpoint


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a checkpoint's network as ONNX (BatchNorm folded) and verify it",
        description=(
            "Export the evaluation network of a checkpoint (logits; BatchNorm folded into the "
            "convolutions) as ONNX with a dynamic batch dimension, run the file in onnxruntime "
            "on a real clip and print the largest difference from PyTorch. Needs the export "
            "extra: pip install 'lgdnet[export]'."
        ),
    )
    add_checkpoint(parser, positional=True)
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="only ONNX for now")
    parser.add_argument("--out", required=True, metavar="FILE", help="the .onnx file to write")
    parser.add_argument("--video", default=None, metavar="VIDEO",
                        help="the clip to trace and check on (its first test views); default: "
                             "a seeded random clip of the training size")
    parser.add_argument("--views", type=at_least(1), default=2, metavar="N",
                        help="views of --video in the sample batch (default 2)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lgdnet.engine.export import export_onnx

    report = export_onnx(args.checkpoint, args.out, video=args.video, views=args.views)
    print(f"wrote {report.path} (input {'x'.join(map(str, report.input_shape))}, batch dynamic)")
    print(f"onnxruntime vs PyTorch on {report.sample}: largest difference "
          f"{report.max_abs_difference:.3g}")
    return 0
