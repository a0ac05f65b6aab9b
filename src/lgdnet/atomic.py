"""The one way lgdnet writes a file: whole or not at all, and a failure that names the path.

:func:`atomic_write` sends the bytes to a hidden temporary file in the same folder, flushes
and fsyncs it, renames it over the target (``os.replace`` is atomic on one file system) and
fsyncs the folder, so a reader, a crash or a full disk leaves the old file or the new one,
never a mix or a 0-byte file. :func:`append_line` is the append-only counterpart for logs
(``steps.jsonl``): a line is written with one ``write`` call and a line cut short by a kill
is dropped when the log is read back.

Any ``OSError`` (disk full, permission, read-only file system) comes out as an ``OSError``
whose ``filename`` is the target, so the command line prints one line naming it:
``cannot write runs/x/config.yaml: No space left on device``.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["append_line", "atomic_write", "write_bytes", "write_text", "TEMP_SUFFIX"]

TEMP_SUFFIX = ".tmp"


def _named(error: OSError, path: Path) -> OSError:
    """``error`` as an ``OSError`` of the same kind naming ``path``."""
    if error.filename is not None and os.fspath(error.filename) == os.fspath(path):
        return error
    named = OSError(error.errno, error.strerror or str(error), os.fspath(path))
    return named


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Delete temporary files of ``path`` left by a process killed while writing it."""
    path = Path(path)
    with contextlib.suppress(OSError):
        for entry in path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                entry.unlink()


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], object]) -> None:
    """Write a file through ``write(file)`` so that readers see the old or the new file only.

    The bytes go to a temporary file in the same directory (same file system, so the final
    rename is atomic), are flushed and fsync'ed, then replace ``path``. On any error the
    temporary file is removed and ``path`` is left as it was. Temporary files of ``path``
    left by a killed process are removed first.

    Raises:
        OSError: the folder cannot be created or the file cannot be written (disk full,
            permission); ``filename`` is ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    except OSError as error:
        raise _named(error, path) from None
    try:
        # mkstemp makes the file private (0600); give it the mode open() would have given
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(error, OSError):
            raise _named(error, path) from None
        raise
    # make the rename itself durable
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. file systems that cannot open directories
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dir_fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda handle: handle.write(data))


def write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    write_bytes(path, text.encode("utf-8"))


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append ``line`` (a newline is added) to a log file with one write call.

    Raises:
        OSError: naming ``path`` (disk full, permission).
    """
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    try:
        with open(path, "ab") as handle:
            handle.write(data)
            handle.flush()
    except OSError as error:
        raise _named(error, path) from None
