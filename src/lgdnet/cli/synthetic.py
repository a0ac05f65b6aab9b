"""``lgdnet synthetic``: write the embedded action dataset (real MPEG-4 clips + lists)."""

from __future__ import annotations

import argparse

from lgdnet.cli._dataset_args import at_least


def _size(text: str) -> tuple[int, int]:
    """``HxW`` -> ``(H, W)``."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 96x128, got {text!r}") from None
    return height, width


def register(subparsers: argparse._SubParsersAction) -> None:
    from lgdnet.data.synthetic import CLASS_NAMES

    parser = subparsers.add_parser(
        "synthetic",
        help="write the embedded synthetic action dataset",
        description=(
            "Write a small labelled action dataset as MPEG-4 MP4 clips, with train.txt and "
            "val.txt (relative path + label index), classes.txt and a README.md describing "
            "every class. The classes differ only in how objects move relative to each other "
            "or to a distant marker, so telling them apart needs temporal and long-range "
            "reasoning. The same --seed writes the same dataset. Train on it with "
            "--train-list OUT_DIR/train.txt (paths are relative to OUT_DIR)."
        ),
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="dataset folder (created)")
    parser.add_argument("--clips-per-class", type=at_least(1), default=40, metavar="N", help="clips per class (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--frames", type=at_least(2), default=40, metavar="T", help="frames per clip (default 40, 25 fps)")
    parser.add_argument("--size", type=_size, default=(96, 128), metavar="HxW", help="frame size, even sides (default 96x128)")
    parser.add_argument("--val-fraction", type=float, default=0.25, help="share of each class in val.txt (default 0.25)")
    parser.add_argument("--classes", default=None, metavar="A,B,...",
                        help=f"comma-separated subset of the classes, in label order (default all: {','.join(CLASS_NAMES)})")
    parser.add_argument("--clutter", type=float, default=1.0,
                        help="scale of background blobs, distractor dots and noise (default 1; 0 for a plain background)")
    parser.add_argument("--workers", type=at_least(1), default=None, help="processes (default: up to 4, one per core)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--task", default="actions", metavar="TASK",
                        choices=["actions"] + [f"{layout}-{relation}" for layout in ("far", "near")
                                               for relation in ("colour", "motion", "shape")],
                        help="actions (default: the classes above) or a two-class relation task "
                             "LAYOUT-RELATION (lgdnet.data.synthetic_relations): far-colour, "
                             "near-colour, far-motion, near-motion, far-shape, near-shape; "
                             "use a square --size such as 72x72")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from lgdnet.data.synthetic import write_synthetic_dataset
    from lgdnet.errors import ConfigError

    classes = [name.strip() for name in args.classes.split(",")] if args.classes else None
    started = time.perf_counter()
    try:
        if args.task != "actions":
            from lgdnet.data.synthetic_relations import write_relation_dataset

            layout, relation = args.task.split("-")
            dataset = write_relation_dataset(
                args.out_dir, relation=relation, layout=layout, clips_per_class=args.clips_per_class,
                seed=args.seed, num_frames=args.frames, size=args.size, val_fraction=args.val_fraction,
                workers=args.workers, progress=not args.quiet)
        else:
            dataset = write_synthetic_dataset(
                args.out_dir, clips_per_class=args.clips_per_class, seed=args.seed, num_frames=args.frames,
                size=args.size, val_fraction=args.val_fraction, classes=classes, workers=args.workers,
                progress=not args.quiet, clutter=args.clutter)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    print(f"wrote {dataset.num_clips} clips ({dataset.num_train} train, {dataset.num_val} val, "
          f"{len(dataset.classes)} classes) to {dataset.root} in {time.perf_counter() - started:.1f} s")
    print(f"  lists: {dataset.train_list}, {dataset.val_list}; classes: {dataset.classes_file}; see {dataset.readme}")
    return 0
