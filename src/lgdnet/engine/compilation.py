"""``run.compile``: training through ``torch.compile``, with the eager path as the fallback.

Modes (measured in ``benchmarks/RESULTS.md``, which chose the default):

* ``"off"`` (default): eager PyTorch. On the CPU the LGD blocks' epilogue runs the one-pass
  kernel of :mod:`lgdnet.models.epilogue_kernel`, which compiled code did not beat.
* ``"epilogue"``: only the blocks' Eq. (2)-(3) epilogue is compiled
  (``LGDBlock(epilogue="compiled")``): inductor fuses the broadcast add, ReLU and pooling into
  one generated kernel each way (C++ on the CPU, Triton on CUDA), the rest stays eager.
* ``"model"``: the whole network (``nn.Module.compile``, in place, so state-dict keys and
  checkpoints are unchanged), with CUDA graphs on CUDA (``mode="reduce-overhead"``; a shorter
  last batch records one more graph).

Whether a compiler is there is checked before training starts (:func:`compiler_missing`: a
C++ compiler for inductor's CPU code, Triton for CUDA); when it is not, the run logs one
warning naming what is missing and trains eagerly.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil

import torch

from lgdnet.errors import ConfigError
from lgdnet.models.lgd_block import LGDBlock

logger = logging.getLogger("lgdnet.engine")

COMPILE_MODES: tuple[str, ...] = ("off", "epilogue", "model")


@functools.cache
def compiler_missing(device_type: str) -> str:
    """What ``torch.compile`` lacks on this machine for ``device_type`` ("" if nothing)."""
    if not hasattr(torch, "compile"):
        return "this PyTorch has no torch.compile"
    try:
        from torch import _dynamo

        if not _dynamo.is_dynamo_supported():
            return "TorchDynamo does not support this Python"
    except Exception as error:  # a broken or partial install
        return f"TorchDynamo cannot load ({error})"
    if device_type == "cuda":
        from torch.utils._triton import has_triton

        return "" if has_triton() else "Triton is not installed (inductor's GPU code needs it)"
    if device_type == "cpu":
        compilers = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
        if not any(name and shutil.which(name) for name in compilers):
            return "no C++ compiler on PATH (inductor's CPU code needs one; set CXX)"
        return ""
    return f"no torch.compile backend is set up here for {device_type}"


@functools.cache
def _warn_once(mode: str, reason: str) -> None:
    logger.warning("run.compile=%s: %s; training runs eagerly", mode, reason)


def apply_compile(module: torch.nn.Module, mode: str, device: torch.device) -> str:
    """Set ``module`` (the training wrapper, before DDP) up for ``mode``; returns the mode
    that took effect (``"off"`` when no compiler is available).

    Raises:
        ConfigError: an unknown mode.
    """
    if mode not in COMPILE_MODES:
        raise ConfigError(f"run.compile: {mode!r} is not one of {', '.join(COMPILE_MODES)}")
    if mode == "off":
        return mode
    missing = compiler_missing(device.type)
    if missing:
        _warn_once(mode, missing)
        return "off"
    if mode == "epilogue":
        blocks = [m for m in module.modules() if isinstance(m, LGDBlock) and m.diffusion in ("lgd", "v1")]
        for block in blocks:
            block.epilogue = "compiled"
        logger.info("run.compile=epilogue: %d LGD blocks compile their epilogue", len(blocks))
        return mode
    module.compile(dynamic=False, mode="reduce-overhead" if device.type == "cuda" else None)
    logger.info("run.compile=model: the network is compiled on its first step")
    return mode
