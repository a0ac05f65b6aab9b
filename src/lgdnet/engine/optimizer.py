"""The optimiser of Sec. 5.2 (SGD with momentum) and the kernel that runs its update.

PyTorch's SGD has three implementations of the same update: a Python loop over the
parameters (``"for-loop"``, its default on the CPU), multi-tensor ops (``"foreach"``, its
default on CUDA) and one fused kernel per device (``"fused"``). They differ in rounding only.
The fused kernel is the fastest on the CPU (``benchmarks/sgd_results.md``: an update of
``lgd3d_r50`` 50 ms against 63 ms looping, ``p3d_r50`` 41 against 53 ms). The LGD networks
carry 45-60% more parameter tensors than their baselines (the reduce and expand matrices of
the low-rank projections in every block, Eq. 2-5), and their update costs 8-10 ms more than
the baselines' in every kernel. ``"auto"`` (the default) picks the fused kernel wherever
every parameter lies on a device that PyTorch has it for (CPU, CUDA) and PyTorch's own
default elsewhere.

A checkpoint stores the implementation in its parameter groups; :func:`load_sgd_state`
keeps the one this run chose, so a run resumed from a checkpoint written by another
implementation (or an earlier lgdnet) continues with the configured kernel. The momentum
buffers are the same in all three.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

SGD_KERNELS = ("auto", "fused", "foreach", "for-loop")
_FUSED_DEVICES = ("cpu", "cuda")


def _params(groups: Iterable[dict[str, Any]]) -> list[torch.Tensor]:
    return [p for group in groups for p in group["params"]]


def sgd_kernel_flags(kernel: str, groups: list[dict[str, Any]]) -> dict[str, bool | None]:
    """``fused``/``foreach`` arguments of :class:`torch.optim.SGD` for ``kernel`` (one of
    :data:`SGD_KERNELS`) and the parameters in ``groups``."""
    if kernel not in SGD_KERNELS:
        raise ValueError(f"SGD kernel {kernel!r}: expected one of {SGD_KERNELS}")
    if kernel == "fused":
        return {"fused": True, "foreach": None}
    if kernel == "foreach":
        return {"fused": None, "foreach": True}
    if kernel == "for-loop":
        return {"fused": None, "foreach": False}
    params = _params(groups)
    fusable = bool(params) and all(
        p.device.type in _FUSED_DEVICES and p.is_floating_point() for p in params)
    return {"fused": True, "foreach": None} if fusable else {"fused": None, "foreach": None}


def make_sgd(groups: list[dict[str, Any]], lr: float, momentum: float, weight_decay: float,
             kernel: str = "auto") -> torch.optim.SGD:
    """SGD with momentum over parameter ``groups`` (a list of ``{"params": [...], ...}``),
    its update run by ``kernel`` (see the module's docstring)."""
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           **sgd_kernel_flags(kernel, groups))


def load_sgd_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, keeping the optimiser's own ``fused`` and
    ``foreach`` choices rather than those saved in ``state``'s parameter groups."""
    flags = [{key: group.get(key) for key in ("fused", "foreach")}
             for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kept in zip(optimizer.param_groups, flags, strict=True):
        group.update(kept)
