"""CPU memory allocation: keep large freed blocks instead of returning them to the system.

glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and unmaps it on ``free``. A 3D network's feature maps are far larger, so on the CPU
every forward and backward pass maps new pages and the kernel zero-fills each one on first
touch: measured on 2 cores (``benchmarks/allocator_results.md``), ``lgd3d_r50`` inference at batch 8
took about 2.2 times as long, and a training step about 1.3 times as long, as with the
blocks kept in the heap. :func:`keep_freed_memory` tells glibc to take large blocks from
the heap and not to trim it, the effect of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``
set before the process starts. The cost is memory: the process keeps its peak heap (about
a fifth more peak resident memory for ``lgd3d_r50``; ``benchmarks/bench_allocator.py``).

The ``lgdnet`` command calls it at start-up unless ``LGDNET_KEEP_FREED_MEMORY=0``; Python
API users call it themselves. Elsewhere than glibc (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory", "ENV_VARIABLE"]

ENV_VARIABLE = "LGDNET_KEEP_FREED_MEMORY"

# mallopt parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt takes: never trim


def keep_freed_memory(respect_environment: bool = True) -> bool:
    """Make glibc's malloc keep large freed blocks for reuse (see the module docstring).

    Args:
        respect_environment: do nothing when ``LGDNET_KEEP_FREED_MEMORY=0`` is set.

    Returns:
        Whether the setting was applied (False off Linux/glibc or when switched off).
    """
    if respect_environment and os.environ.get(ENV_VARIABLE, "1").strip() in ("0", "false", "no"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
