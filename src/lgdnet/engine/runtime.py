"""Where and in what precision the engine runs: the one device resolver and autocast helper.

Every command and engine function that takes a device string goes through
:func:`resolve_device`, which checks that the device exists before anything is written, and
every mixed-precision region through :func:`autocast`.
"""

from __future__ import annotations

import contextlib

import torch

from lgdnet.errors import ConfigError

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device, local_rank: int | None = None) -> torch.device:
    """The ``torch.device`` that ``device`` names, checked to exist on this machine.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"`` or ``"mps"``.
        local_rank: with ``"cuda"`` or ``"auto"`` on CUDA, the GPU index to take (a
            ``torchrun`` process's ``LOCAL_RANK``); ``None``: the current device.

    Raises:
        ConfigError: an unknown device type, or one this machine does not have (the message
            names the device and what there is).
    """
    text = str(device).strip()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device {text!r}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if resolved.type == "cpu":
        return torch.device("cpu")
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {text!r}: this machine has no CUDA GPU (use cpu or auto)")
        index = resolved.index if resolved.index is not None else (local_rank or 0)
        if index >= count:
            raise ConfigError(f"device {text!r}: this machine has {count} CUDA GPU(s), "
                              f"cuda:0..cuda:{count - 1}")
        return torch.device("cuda", index)
    if resolved.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"device {text!r}: MPS is not available on this machine")
        return resolved
    raise ConfigError(f"device {text!r}: unsupported device type (use auto, cpu or cuda)")


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision: bf16 (CPU or CUDA) or fp16 (CUDA) autocast; nothing for fp32.

    Raises:
        ConfigError: a precision other than ``fp32``, ``bf16``, ``fp16``.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=_AUTOCAST_DTYPES[precision])
