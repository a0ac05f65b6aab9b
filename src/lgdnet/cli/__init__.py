"""The ``lgdnet`` command: a thin parser that hands every subcommand to the library.

Each subcommand lives in its own module of this package and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func`` (a callable taking
the parsed ``argparse.Namespace`` and returning an exit status). Heavy imports happen inside
``func`` so that ``lgdnet --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from lgdnet.errors import LgdnetError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lgdnet",
        description="Local and Global Diffusion networks for video recognition.",
    )
    from lgdnet import __version__

    parser.add_argument("--version", action="version", version=f"lgdnet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


class _TerminalHandler(logging.Handler):
    """The library's INFO lines to ``sys.stdout``, warnings and errors to ``sys.stderr``,
    each looked up at every record (so a redirected or captured stream receives them)."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # pragma: no cover - logging's own policy for broken streams
            self.handleError(record)


def configure_logging(level: int = logging.INFO) -> None:
    """What the library logs reaches the terminal: the engine reports through ``logging``
    (logger ``lgdnet``) and the command decides how it is shown."""
    logger = logging.getLogger("lgdnet")
    if not any(isinstance(h, _TerminalHandler) for h in logger.handlers):
        logger.addHandler(_TerminalHandler())
    logger.setLevel(level)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging()
    from lgdnet.allocator import keep_freed_memory

    keep_freed_memory()  # large CPU buffers reused, not re-mapped (LGDNET_KEEP_FREED_MEMORY=0: off)
    try:
        status = args.func(args)
    except LgdnetError as error:
        print(f"lgdnet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lgdnet {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
