"""One lock per output folder: two runs never write into the same folder at once.

Every command that writes a folder (``train``, ``eval``, ``extract-frames``, ``extract-flow``,
``features``, ``ablate``) holds :func:`output_lock` on it for the whole run. The lock is the
file ``DIR/.lgdnet.lock``, locked with ``flock``: the operating system releases it when the
process ends in any way (a crash, ``kill -9``), so a lock left by a dead process is never in
the way. The file records who holds it (PID, host, command, start time) so that a second run
is refused with a message naming the first::

    runs/exp: in use by another lgdnet process (PID 4242 on host gpu3, `lgdnet train`, since
    2026-12-02 03:40:12); wait for it to finish or use another folder

On a file system without ``flock`` (some network mounts) the record alone decides: a lock
whose PID is no longer running on this host is stale and taken over; one from another host
is trusted.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lgdnet.errors import LgdnetError

__all__ = ["FolderLockedError", "LOCK_NAME", "ensure_output_dir", "output_lock"]

LOCK_NAME = ".lgdnet.lock"


class FolderLockedError(LgdnetError):
    """Another process holds the output folder's lock.

    Args:
        folder: the output folder.
        holder: what the lock file records (``pid``, ``host``, ``command``, ``started``).
    """

    def __init__(self, folder: str | os.PathLike, holder: dict[str, Any]) -> None:
        self.folder = os.fspath(folder)
        self.holder = holder
        who = f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        if holder.get("command"):
            who += f", `{holder['command']}`"
        if holder.get("started"):
            who += f", since {holder['started']}"
        super().__init__(f"{self.folder}: in use by another lgdnet process ({who}); wait for it "
                         "to finish or use another folder")


def ensure_output_dir(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` (and its parents) unless it exists as a folder.

    Raises:
        LgdnetError: ``folder`` (or a parent) is an existing file, naming ``what`` (the
            option, e.g. ``--out``).
        OSError: it cannot be created (permission, read-only file system).
    """
    path = Path(folder)
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise LgdnetError(f"{candidate}: {what} {path} cannot be created: "
                                  f"{candidate} is a file, not a folder")
            break
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _command_line() -> str:
    args = [os.path.basename(sys.argv[0] or "lgdnet")] + sys.argv[1:3]
    if args[0] in ("__main__.py", "-m", "-c"):
        args[0] = "lgdnet"
    return " ".join(args)


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, command: str | None = None,
                what: str = "output folder") -> Iterator[Path]:
    """Hold the lock of output folder ``folder`` (created if missing) for the block.

    Args:
        folder: the folder a run writes into.
        command: what to record as the holder's command (default: this process's
            command line).
        what: the option that named the folder, for messages (``--out``, ``run.out_dir``).

    Yields:
        The folder.

    Raises:
        FolderLockedError: another live process holds it (the message names its PID, host
            and command).
        LgdnetError: ``folder`` is an existing file.
    """
    path = ensure_output_dir(folder, what)
    lock_path = path / LOCK_NAME
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "command": command or _command_line(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    handle = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the block)
    try:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except ImportError:  # not POSIX
            locked = False
        except BlockingIOError:
            raise FolderLockedError(path, _read_holder(lock_path)) from None
        except OSError:  # no flock on this file system: the record decides
            locked = False
        if not locked:
            holder = _read_holder(lock_path)
            pid = holder.get("pid")
            mine = pid == os.getpid() and holder.get("host") == record["host"]
            stale = holder.get("host") == record["host"] and isinstance(pid, int) \
                and not _pid_alive(pid)
            if holder and not mine and not stale:
                raise FolderLockedError(path, holder)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        try:
            yield path
        finally:
            if not locked:  # without flock, the record is the lock: remove it
                with contextlib.suppress(OSError):
                    lock_path.unlink()
    finally:
        handle.close()  # releases the flock
