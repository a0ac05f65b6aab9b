"""``lgdnet eval``: multi-view video-level evaluation of a checkpoint (Sec. 5.2)."""

from __future__ import annotations

import argparse

from lgdnet.cli._dataset_args import at_least
from lgdnet.cli._inference_args import add_checkpoint, add_loading, add_runtime, add_views

EXAMPLES = """examples:
  lgdnet eval --checkpoint runs/exp/best.safetensors --list data/val.txt --root data
  lgdnet eval --checkpoint best.safetensors --list ucfTrainTestlist --root UCF-101 --split 2
  lgdnet eval --checkpoint best.safetensors --list kinetics400/validate.csv --root videos \\
      --subset val --views 15 --out runs/exp/eval_k400
  torchrun --nproc_per_node=4 -m lgdnet.cli eval --checkpoint best.safetensors --list val.txt
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint with multi-view testing (top-1, top-5, mean class accuracy)",
        description=(
            "Score every video of an annotation list by averaging the softmax scores of "
            "several views (Sec. 5.2: 15 clips for LGD-3D, 10 frame triples for LGD-2D, or "
            "the number in the checkpoint's configuration), then report top-1, top-5 and mean "
            "class accuracy. Writes scores.npz (per-video scores with video ids, for `lgdnet "
            "fuse`), metrics.json (with the full configuration) and confusion_matrix.png."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    add_checkpoint(parser)
    parser.add_argument("--list", required=True, metavar="LIST",
                        help="annotations: a list file, Kinetics CSV, or UCF101/HMDB51 "
                             "splits folder")
    parser.add_argument("--root", default=None, metavar="DIR",
                        help="folder the video paths are relative to (default: the list's)")
    parser.add_argument("--format", default="auto",
                        choices=["auto", "list", "kinetics", "ucf101", "hmdb51"])
    parser.add_argument("--split", type=int, default=1, help="UCF101/HMDB51 split (1-3)")
    parser.add_argument("--subset", default="test", choices=["train", "test", "val"],
                        help="which part of the split (default: test)")
    add_views(parser)
    parser.add_argument("--views-per-chunk", type=at_least(1), default=8, metavar="N",
                        help="most views in one forward pass; bounds memory (default 8)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where results go (default: eval/ beside the checkpoint)")
    add_runtime(parser)
    parser.add_argument("--on-error", default="skip", choices=["skip", "raise"],
                        help="skip unreadable videos (listed in bad_files.txt) or stop")
    add_loading(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import contextlib
    from pathlib import Path

    from lgdnet.data import VideoDataset, load_annotations
    from lgdnet.engine import distributed
    from lgdnet.engine.checkpoint import checkpoint_paths, load_model
    from lgdnet.engine.evaluate import evaluate, format_metrics, save_evaluation
    from lgdnet.engine.predict import inference_sampling, match_list_classes
    from lgdnet.errors import LgdnetError
    from lgdnet.locking import output_lock
    from lgdnet.models.fusion import fold_batchnorm
    from lgdnet.models.layout import resolve_memory_format, to_memory_format

    context = distributed.init_distributed(args.device)
    finished = False
    stack = contextlib.ExitStack()
    try:
        weights, _ = checkpoint_paths(args.checkpoint)
        model, config, classes = load_model(weights, context.device)
        model = fold_batchnorm(model, inplace=True)  # same scores, faster (inference only)
        to_memory_format(model, resolve_memory_format(args.memory_format, context.device,
                                                      args.precision))
        # the checkpoint's class list fixes the label order, so labels match the classifier:
        # the list's own names must be the checkpoint's (mapped by name if in another order)
        annotations = load_annotations(args.list, root=args.root, format=args.format,
                                       split=args.split, subset=args.subset)
        if not classes and len(annotations.classes) == model.num_classes:
            classes = list(annotations.classes)  # a checkpoint without names: the list's
        classes = classes or [str(i) for i in range(model.num_classes)]
        annotations = match_list_classes(annotations, classes)
        if not annotations.records:
            raise LgdnetError(f"{args.list}: no videos in subset {args.subset!r}")
        spec = inference_sampling(config, model.kind, views=args.views, crops=args.crops,
                                  stage=model.stage)
        out_dir = Path(args.out) if args.out else weights.parent / "eval"
        lock = output_lock(out_dir, what="--out") if context.is_main else contextlib.nullcontext()
        stack.enter_context(lock)
        if context.is_main:  # this run's unreadable videos only
            (out_dir / "bad_files.txt").unlink(missing_ok=True)
        distributed.barrier()
        modality = (config.get("data") or {}).get("modality", "rgb")
        # items of at most views_per_chunk views: memory stays flat whatever the view count
        dataset = VideoDataset(annotations.records, spec, mode="test", on_error=args.on_error,
                               modality=modality, bad_files_log=out_dir / "bad_files.txt",
                               views_per_item=args.views_per_chunk)
        if context.is_main:
            print(f"evaluating {weights} ({model.kind.upper()}, stage {model.stage}) on "
                  f"{len(dataset.records)} videos, {spec.num_test_views} "
                  f"{'clips' if spec.scheme == 'clip' else 'frame tuples'} x {spec.test_crops} "
                  f"crop(s) per video", flush=True)
        result = evaluate(model, dataset, views_per_chunk=args.views_per_chunk,
                          device=context.device, precision=args.precision,
                          progress=not args.no_progress, num_workers=args.workers)
        if context.is_main:
            extra = {"checkpoint": str(weights), "list": str(args.list), "subset": args.subset,
                     "split": args.split, "views": spec.num_test_views,
                     "crops": spec.test_crops, "skipped_videos": len(dataset.records) - len(result.labels)}
            paths = save_evaluation(result, out_dir, classes, config=config, extra=extra)
            print(format_metrics(result.metrics, len(classes)))
            if extra["skipped_videos"]:
                print(f"skipped {extra['skipped_videos']} unreadable videos "
                      f"(listed in {out_dir / 'bad_files.txt'})")
            for kind, path in paths.items():
                print(f"{kind.replace('_', ' ')}: {path}")
        finished = True
    finally:
        stack.close()
        distributed.cleanup(synchronize=finished)
    return 0
