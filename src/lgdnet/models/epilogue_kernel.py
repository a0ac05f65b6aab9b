"""The LGD block's CPU kernels; first the epilogue: one pass over the map forward, one backward.

Eq. (2)'s broadcast add and ReLU with Eq. (3)'s pooling, ``x <- ReLU(x + US(r))`` and
``P(x)``, read and write the map once; the backward forms ``(dL/dx + US(dL/dP)/M) * [x > 0]``
and its sum over positions (the gradient of ``r``) in one pass too. Eager PyTorch needs two
passes forward and four backward for the same (``benchmarks/RESULTS.md``, Sec. 2), and
``torch.compile``'s CPU code for the formula was slower than eager there. The kernel
(``csrc/lgd_epilogue.cpp``) is registered with ``torch.library`` as ``lgdnet::add_relu_pool_``
and ``lgdnet::add_relu_pool_backward``, for float32 and float64 CPU maps, contiguous or
channels-last. The same extension holds the low-rank projections' products
(``csrc/thin_linear.cpp``, used by :mod:`lgdnet.models.low_rank_kernel`) and the whole
diffusion of a block at inference (``csrc/lgd_diffusion.cpp``,
:mod:`lgdnet.models.diffusion_kernel`).

It is compiled on first use with ``torch.utils.cpp_extension`` (a C++ compiler and ``ninja``;
about a minute once, then loaded from PyTorch's extension cache, ``TORCH_EXTENSIONS_DIR``).
Where it cannot be built (no compiler), or with ``LGDNET_EPILOGUE_KERNEL=0``, the eager path
runs instead: :func:`available` says which, and the reason is logged once (``lgdnet.models``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

logger = logging.getLogger("lgdnet.models")

SOURCE = Path(__file__).with_name("csrc") / "lgd_epilogue.cpp"
# built into the same extension: the low-rank projections' thin products (low_rank_kernel)
# and the whole diffusion of a block at inference (diffusion_kernel)
SOURCES = (SOURCE, SOURCE.with_name("thin_linear.cpp"), SOURCE.with_name("lgd_diffusion.cpp"))
HEADERS = (SOURCE.with_name("kernels.h"),)
ENV = "LGDNET_EPILOGUE_KERNEL"
DTYPES = (torch.float32, torch.float64)

_state: dict[str, object] = {}
_lock = threading.Lock()
_enabled = [True]


@contextmanager
def disabled() -> Iterator[None]:
    """Run the eager epilogue inside the block (benchmarks compare the two in one process)."""
    previous, _enabled[0] = _enabled[0], False
    try:
        yield
    finally:
        _enabled[0] = previous


def _flags() -> tuple[str, list[str]]:
    """The build's name and flags. The name holds the torch version, the CPU capability and a
    digest of the source and flags, so builds for other versions never share a cache folder."""
    capability = torch.backends.cpu.get_cpu_capability()
    # -fno-trapping-math: selects, not branches, so the loops vectorise; -fopenmp: ATen's
    # parallel_for is a header template, threaded only when the extension is built with OpenMP
    flags = ["-O3", "-fno-trapping-math"]
    if torch.backends.openmp.is_available():
        flags.append("-fopenmp")
    if capability in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    if capability == "AVX512":  # what ATen's own kernels run on this CPU
        flags.append("-mavx512f")
    version = re.sub(r"\W", "_", torch.__version__)
    sources = b"".join(path.read_bytes() for path in SOURCES + HEADERS)
    digest = hashlib.sha1(sources + " ".join(flags).encode()).hexdigest()[:10]
    return f"lgdnet_epilogue_{version}_{capability.lower()}_{digest}", flags


def _load() -> None:
    from torch.utils import cpp_extension

    name, flags = _flags()
    start = time.perf_counter()
    cpp_extension.load(name=name, sources=[str(path) for path in SOURCES], extra_cflags=flags,
                       extra_ldflags=[f for f in flags if f == "-fopenmp"],
                       is_python_module=False, verbose=False)
    logger.debug("LGD epilogue kernel ready (%s, %.1f s)", name, time.perf_counter() - start)


def _first_error(error: Exception) -> str:
    """The compiler's first ``error:`` line, else the exception's first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    found = [line for line in lines if "error:" in line]
    return (found or lines or [repr(error)])[0][:300]


def available() -> bool:
    """Whether ``torch.ops.lgdnet.add_relu_pool_`` can run; builds it on the first call.

    False with ``LGDNET_EPILOGUE_KERNEL=0`` or when the build fails (the reason is logged once,
    and the eager epilogue is used)."""
    if "ok" in _state:
        return bool(_state["ok"])
    with _lock:
        if "ok" not in _state:
            if os.environ.get(ENV, "1") == "0":
                _state.update(ok=False, reason=f"{ENV}=0")
            else:
                try:
                    _load()
                    _state.update(ok=True, reason="")
                except Exception as error:  # no compiler, no ninja, a failed build
                    reason = _first_error(error)
                    _state.update(ok=False, reason=reason)
                    logger.warning("LGD epilogue kernel unavailable (%s); using the eager "
                                   "epilogue", reason)
    return bool(_state["ok"])


def _require() -> None:
    if not available():
        raise RuntimeError(f"the LGD epilogue kernel is unavailable: {reason()}")


def reason() -> str:
    """Why :func:`available` is False ("" when it is True or was not asked yet)."""
    return str(_state.get("reason", ""))


def applies(out: torch.Tensor, residual: torch.Tensor) -> bool:
    """Whether the kernel takes this call: a CPU map of a supported dtype and layout, the
    vector of the same dtype, no compiler tracing, and the kernel built."""
    if not _enabled[0] or out.device.type != "cpu" or out.dtype not in DTYPES:
        return False
    if residual.dtype != out.dtype:
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    fmt = torch.channels_last_3d if out.dim() == 5 else torch.channels_last
    if not (out.is_contiguous() or out.is_contiguous(memory_format=fmt)):
        return False
    return available()


def add_relu_pool_(out: torch.Tensor, residual: torch.Tensor, scale: float) -> torch.Tensor:
    """``out <- ReLU(out + US(residual))`` in place; returns ``scale *`` its sum over positions."""
    _require()
    return torch.ops.lgdnet.add_relu_pool_(out, residual.contiguous(), scale)


def add_relu_pool_backward(
    grad_y: torch.Tensor, y: torch.Tensor, grad_pooled: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g, sum_positions(g))`` with ``g = (grad_y + US(grad_pooled)) * [y > 0]``, in ``y``'s
    layout (``grad_y`` is converted first when it arrives in another)."""
    if grad_y.stride() != y.stride() or grad_y.dtype != y.dtype:
        grad_y = torch.empty_like(y).copy_(grad_y)
    _require()
    return torch.ops.lgdnet.add_relu_pool_backward(grad_y, y, grad_pooled.contiguous())

