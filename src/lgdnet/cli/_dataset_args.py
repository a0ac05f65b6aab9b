"""Arguments shared by the commands that read a dataset's annotations (``extract-frames``,
``extract-flow``, ``check-data``), and the argparse value parsers they use."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lgdnet.data.annotations import Annotations

FORMATS = ("auto", "list", "kinetics", "ucf101", "hmdb51")
#: ``--subset`` help of the resumable extraction commands.
RESUMABLE_SUBSET_HELP = ("which videos (default train; run again with --subset test, shared "
                         "videos are skipped)")


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers ``>= minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    return parse


def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` -> ``(H, W)``, both positive (an argparse ``type``)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 128x171, got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"sides must be positive, got {text!r}")
    return height, width


def add_dataset_arguments(
    parser: argparse.ArgumentParser,
    *,
    root_required: bool = False,
    subset_help: str = "which videos (default train)",
    workers_default: int | None = None,
    workers_help: str = "processes, one video each (default: number of CPUs)",
) -> None:
    """Add ``ANNOTATIONS --root --format --split --subset --workers`` (as
    :func:`~lgdnet.data.load_annotations` takes them) to ``parser``.

    Args:
        parser: the subcommand's parser.
        root_required: make ``--root`` mandatory (otherwise it defaults to the list's folder).
        subset_help: help of ``--subset``.
        workers_default: default of ``--workers`` (``None``: the command picks).
        workers_help: help of ``--workers``.
    """
    parser.add_argument("annotations", metavar="ANNOTATIONS",
                        help="list file, Kinetics CSV, or UCF101/HMDB51 splits folder")
    parser.add_argument("--root", required=root_required, default=None, metavar="DIR",
                        help="folder the annotation paths are relative to"
                             + ("" if root_required else " (default: the list's folder)"))
    parser.add_argument("--format", default="auto", choices=FORMATS,
                        help="annotation format (default: guessed from the path)")
    parser.add_argument("--split", type=int, default=1, help="UCF101/HMDB51 split (default 1)")
    parser.add_argument("--subset", default="train", choices=("train", "test", "val"),
                        help=subset_help)
    parser.add_argument("--workers", type=at_least(1), default=workers_default, help=workers_help)


def load_dataset_annotations(args: argparse.Namespace) -> Annotations:
    """The annotations named by the arguments of :func:`add_dataset_arguments`.

    Raises:
        AnnotationError: the annotations cannot be read.
    """
    from lgdnet.data.annotations import load_annotations

    return load_annotations(args.annotations, root=args.root, format=args.format,
                            split=args.split, subset=args.subset)
