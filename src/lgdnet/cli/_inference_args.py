"""Options shared by the commands that run a trained checkpoint (``predict``, ``eval``,
``features``, ``export``), declared once."""

from __future__ import annotations

import argparse

from lgdnet.cli._dataset_args import at_least


def add_checkpoint(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    """``--checkpoint CKPT`` (or a positional ``CHECKPOINT``)."""
    help_text = "a .safetensors checkpoint written by `lgdnet train`"
    if positional:
        parser.add_argument("checkpoint", metavar="CHECKPOINT", help=help_text)
    else:
        parser.add_argument("--checkpoint", required=True, metavar="CKPT", help=help_text)


def add_views(parser: argparse.ArgumentParser) -> None:
    """``--views`` and ``--crops``: the test views of Sec. 5.2."""
    parser.add_argument("--views", type=at_least(1), default=None, metavar="N",
                        help="clips (3D) or frame triples (2D) per video (default: the "
                             "checkpoint's configuration, else 15 / 10 as in Sec. 5.2)")
    parser.add_argument("--crops", type=int, default=None, choices=[1, 3],
                        help="1: whole frame (default), 3: three squares along the long side")


def add_runtime(parser: argparse.ArgumentParser, precision: bool = True) -> None:
    """``--device``, ``--precision`` and ``--memory-format``."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    if precision:
        parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--memory-format", default="auto",
                        choices=["auto", "channels_last", "contiguous"],
                        help="activations' layout (default auto: channels-last on the CPU, "
                             "where it is faster)")


def add_loading(parser: argparse.ArgumentParser) -> None:
    """``--workers`` and ``--no-progress`` of the commands that read a dataset."""
    parser.add_argument("--workers", type=at_least(0), default=2, metavar="N",
                        help="video-decoding processes (default 2)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
