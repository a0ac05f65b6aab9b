"""The ``lgdnet`` command: a thin parser that hands every subcommand to the library.

Each subcommand lives in its own module of this package and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func`` (a callable taking
the parsed ``argparse.Namespace`` and returning an exit status). Heavy imports happen inside
``func`` so that ``lgdnet --help`` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
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
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error (also {DEBUG_ENV}=1)")
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


#: Exit codes: 2 for bad input or settings (as argparse uses for a bad option), 1 for a
#: file-system failure (disk full, permission), 130 for Ctrl-C, 70 (EX_SOFTWARE) for a bug.
EXIT_BAD_INPUT, EXIT_SYSTEM, EXIT_INTERRUPTED, EXIT_BUG = 2, 1, 130, 70

DEBUG_ENV = "LGDNET_DEBUG"


def _worker_error(error: BaseException) -> tuple[str, str] | None:
    """``(type name, message)`` of the original error when ``error`` is a data-loader
    worker's re-raised exception (PyTorch puts the worker's whole traceback into the message
    and may change the type); ``None`` otherwise."""
    text = str(error)
    if "in DataLoader worker process" not in text or "Traceback" not in text:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    name, _, message = (lines[-1] if lines else "").partition(": ")
    return name, message


def describe_os_error(error: OSError) -> str:
    """One line for a failed file operation, naming the file: ``cannot write PATH: No space
    left on device``."""
    reason = error.strerror or str(error) or type(error).__name__
    if error.filename is not None:
        where = os.fspath(error.filename)
        if error.filename2 is not None:
            where += f" -> {os.fspath(error.filename2)}"
        return f"{where}: {reason}"
    return reason


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lgdnet`` command; every failure ends as one line on stderr and an exit code.

    ``LgdnetError`` (bad input or settings) exits 2 and ``OSError`` (disk full, permission)
    1, each with one line naming the file or option; any other exception is a bug in lgdnet
    and exits 70 with a request for a report. ``--debug`` (or ``LGDNET_DEBUG=1``) shows the
    traceback instead.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    configure_logging()
    from lgdnet.allocator import keep_freed_memory

    keep_freed_memory()  # large CPU buffers reused, not re-mapped (LGDNET_KEEP_FREED_MEMORY=0: off)
    prefix = f"lgdnet {args.command}: error:"
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        print(f"lgdnet {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `lgdnet predict ... | head`: the reader is gone
        with contextlib.suppress(OSError):
            sys.stderr.close()
        return EXIT_SYSTEM
    except Exception as error:
        if debug:
            raise
        worker = _worker_error(error)
        if worker is not None and worker[0].startswith("lgdnet."):
            # a loader worker's LgdnetError, without the worker's traceback
            print(f"{prefix} {_one_line(worker[1])}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if worker is not None:
            error = RuntimeError(f"{worker[0]} in a data-loader worker: {worker[1]}")
        if isinstance(error, LgdnetError):
            print(f"{prefix} {_one_line(str(error))}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if isinstance(error, OSError):
            print(f"{prefix} {_one_line(describe_os_error(error))}", file=sys.stderr)
            return EXIT_SYSTEM
        print(f"lgdnet {args.command}: internal error: {type(error).__name__}: "
              f"{_one_line(str(error))}. This is a bug in lgdnet; please report it with the "
              f"traceback that `lgdnet --debug {args.command} ...` (or {DEBUG_ENV}=1) shows.",
              file=sys.stderr)
        return EXIT_BUG
    return int(status or 0)


def _one_line(text: str) -> str:
    """``text`` on one line (a message never spans lines)."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
