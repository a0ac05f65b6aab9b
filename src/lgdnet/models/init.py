"""Weight initialisation of the LGD networks (Sec. 5.2).

* ``"scratch"`` (:func:`init_scratch`): Xavier (uniform) for every convolution and every
  linear layer (the projections W of the LGD blocks and the classifiers), biases zero,
  BatchNorm weight 1 and bias 0.
* ``init_scheme="authors"`` (:func:`init_authors`): what the authors' public LGD-P3D code
  (``model/lgd_p3d_resnet.py`` of ZhaofanQiu/Optimization-Planning-for-3D-ConvNets) does for
  every run: Kaiming-normal convolutions (fan-out, ReLU gain), BatchNorm 1 and 0, linear
  layers (projections with biases, classifiers) at PyTorch's default initialisation, and the
  expanding half W1 of every W^{x,g} zero (its bias keeps its default value).
* ``"imagenet"`` (:func:`load_imagenet_2d`): spatial convolutions from a user-supplied 2D
  ResNet state dict (torchvision or timm format; nothing is downloaded), 2D kernels inflated
  to 1 x k x k; temporal convolutions set to the identity; ``W^{x,g}`` zero so the global
  residual of Eq. (2) vanishes at the start. The result reproduces the 2D network frame by
  frame on a static clip (up to the spatial max-pool that LGD-3D does not have).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from lgdnet.errors import CheckpointError
from lgdnet.models.lgd_block import LGDBlock
from lgdnet.models.network import unit_key

_CONVS = (nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)
_WRAPPER_PREFIXES = ("module.", "model.", "backbone.", "encoder.")
_CLASSIFIER_PREFIXES = ("fc.", "head.fc.", "classifier.")


def init_scratch(model: nn.Module) -> None:
    """Initialise ``model`` for training from scratch (Sec. 5.2): Xavier, zero biases."""
    for module in model.modules():
        if isinstance(module, (*_CONVS, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, _NORMS):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def init_authors(model: nn.Module) -> None:
    """Initialise ``model`` as the authors' public code does (see the module docstring).

    The projections are expected to have biases (``LGDBlock(bias=True)``, which
    ``create_model(init_scheme="authors")`` builds); W^{x,g}'s W1 starts at zero, so the
    network starts as its backbone plus a constant (the bias of W1) in every block.
    """
    for module in model.modules():
        if isinstance(module, _CONVS):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, _NORMS):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            module.reset_parameters()  # PyTorch's default, which the authors' code keeps
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LGDBlock) and hasattr(module, "global_to_local"):
                module.global_to_local.expand.weight.zero_()


@torch.no_grad()
def set_temporal_identity(model: nn.Module) -> None:
    """Make every temporal convolution (``*_t``, k x 1 x 1) and its BatchNorm an identity.

    The convolution gets a centre tap of 1 per channel. The BatchNorm gets weight 1, bias 0,
    running mean 0 and running variance ``1 - eps``, so that in eval mode
    ``(x - 0) / sqrt(var + eps) = x`` exactly; the ReLU after it sees non-negative input
    (the preceding spatial path ends in a ReLU), so the whole temporal step is the identity.
    """
    for name, module in model.named_modules():
        if not name.rsplit(".", 1)[-1].endswith("_t"):
            continue
        if isinstance(module, nn.Conv3d):
            out_channels, in_channels, k = module.weight.shape[:3]
            if out_channels != in_channels:
                raise ValueError(f"{name}: a temporal identity needs C_in == C_out")
            module.weight.zero_()
            channel = torch.arange(out_channels)
            module.weight[channel, channel, k // 2, 0, 0] = 1.0
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.BatchNorm3d):
            module.weight.fill_(1.0)
            module.bias.zero_()
            module.running_mean.zero_()
            module.running_var.fill_(1.0 - module.eps)


@torch.no_grad()
def zero_global_to_local(model: nn.Module) -> None:
    """Set every ``W^{x,g} = W1 W2`` to zero (Sec. 5.2) by zeroing W1 (``expand``) only.

    W2 keeps its Xavier values: were both factors zero, neither would ever get a gradient.
    """
    for module in model.modules():
        if isinstance(module, LGDBlock) and hasattr(module, "global_to_local"):
            module.global_to_local.expand.weight.zero_()


@dataclass
class LoadReport:
    """What :func:`load_imagenet_2d` did, key by key.

    Attributes:
        path: the state-dict file.
        loaded: model keys filled from the file (the model's names).
        missing: model keys of the backbone that the file lacked (left at their scratch init).
        unexpected: file keys that match nothing in the model (the file's names).
        skipped: file keys deliberately not loaded (the ImageNet classifier ``fc``).
        initialised: model keys set by rule (temporal identity, projections, new head).
    """

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a 2D ResNet state dict (``.pth``/``.pt``/``.bin`` or ``.safetensors``).

    Unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` containers and strips wrapper
    prefixes (``module.``, ``model.``, ``backbone.``, ``encoder.``).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any reader failure is a bad file, said once
        raise CheckpointError(f"{path}: cannot read a state dict ({error})") from error
    for container in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(container), dict):
            state = state[container]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    clean: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix) :], True
        clean[key] = value
    return clean


def _fit_to(key: str, value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Inflate a 2D kernel to 1 x k x k (no rescaling: the temporal size is 1) and apply the
    cross-modality rule to ``conv1`` (TSN: average the RGB kernels, replicate over the input
    channels) when the model's input is not RGB."""
    if key == "conv1.weight" and value.shape[1] == 3 and target.shape[1] != 3:
        value = value.mean(dim=1, keepdim=True).expand(-1, target.shape[1], *value.shape[2:])
    if value.dim() == 4 and target.dim() == 5 and target.shape[2] == 1:
        value = value.unsqueeze(2)
    return value


def load_imagenet_2d(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """ImageNet initialisation of an LGD network from a 2D ResNet state-dict file (Sec. 5.2).

    Matching is by name: torchvision's names, with each block's layers under its
    ``local_unit`` (:func:`~lgdnet.models.network.unit_key`). Keys of the file's classifier
    (``fc``) are skipped, since the number of classes differs. The temporal convolutions become
    identities and ``W^{x,g}`` zero; every other parameter the file lacks keeps its current
    (scratch) value. Missing and unexpected keys are returned and warned about by name.
    With ``diffusion="v2"`` the zero W^{x,g} gives a gate of sigmoid(0) = 0.5 (Eq. 9), so that
    variant starts from halved, not identical, pre-trained features.

    Args:
        model: an :class:`~lgdnet.models.network.LGDNet` (2D or 3D).
        path: a torchvision- or timm-format ResNet-50/101 state dict.

    Raises:
        CheckpointError: the file is unreadable, or a tensor's shape does not fit the model
            (e.g. a ResNet-50 file for a tiny model).
    """
    path = os.fspath(path)
    state = read_state_dict(path)
    own = model.state_dict()
    report = LoadReport(path=path)
    with torch.no_grad():
        for source_key, value in state.items():
            if source_key.startswith(_CLASSIFIER_PREFIXES):
                report.skipped.append(source_key)
                continue
            key = unit_key(source_key)  # torchvision's layer1.0.conv1: layer1.0.local_unit.conv1
            target = own.get(key)
            if target is None or key.startswith("head."):
                report.unexpected.append(source_key)
                continue
            value = _fit_to(key, value, target)
            if value.shape != target.shape:
                raise CheckpointError(
                    f"{path}: {source_key} has shape {tuple(value.shape)}, the model expects "
                    f"{tuple(target.shape)} (a different ResNet depth or width?)"
                )
            target.copy_(value)
            report.loaded.append(key)
    set_temporal_identity(model)
    zero_global_to_local(model)
    loaded = set(report.loaded)
    for key in own:
        if key in loaded:
            continue
        parts = key.split(".")
        by_rule = key.startswith("head.") or any(
            p.endswith("_t") or p.startswith(("global_to_", "local_to_")) for p in parts
        )
        if by_rule:
            report.initialised.append(key)
        elif not key.endswith("num_batches_tracked"):  # absent from older checkpoints
            report.missing.append(key)
    if report.missing or report.unexpected:
        warnings.warn(
            f"{path}: missing keys {report.missing}; unexpected keys {report.unexpected}",
            stacklevel=2,
        )
    return report
