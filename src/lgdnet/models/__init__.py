"""lgdnet.models: the LGD networks in pure torch (see docs/architecture.md for the contract).

* :mod:`~lgdnet.models.lgd_block`: the LGD block, Eq. (2)-(3), (8), (9).
* :mod:`~lgdnet.models.units`: the local units (P3D-A bottleneck, per-frame 2D bottleneck).
* :mod:`~lgdnet.models.network`: LGD-3D (Table 1) and LGD-2D.
* :mod:`~lgdnet.models.heads`: stage-1 head (Eq. 6), Tensor Sketch and the combination
  classifier (Eq. 4-5, 7), :func:`stage_loss`.
* :mod:`~lgdnet.models.init`: scratch and ImageNet initialisation (Sec. 5.2).
* :mod:`~lgdnet.models.factory`: the registry, :func:`create_model`, :func:`list_models`.
* :mod:`~lgdnet.models.fusion`: BatchNorm folded into convolutions for inference.
* :mod:`~lgdnet.models.layout`: channels-last or contiguous activations.
"""

from torch import nn

from lgdnet.models.factory import ModelSpec, create_model, get_spec, list_models, register_model
from lgdnet.models.fusion import fold_batchnorm
from lgdnet.models.heads import (
    CombinationClassifier,
    GlobalLocalHead,
    TensorSketch,
    stage_loss,
)
from lgdnet.models.init import LoadReport, init_scratch, load_imagenet_2d
from lgdnet.models.layout import (
    MEMORY_FORMATS,
    is_channels_last,
    resolve_memory_format,
    to_memory_format,
)
from lgdnet.models.lgd_block import (
    DIFFUSIONS,
    LGDBlock,
    LGDStage,
    LowRankLinear,
    lgd_extra_parameters,
)
from lgdnet.models.network import LGD2D, LGD3D, LGDNet
from lgdnet.models.units import FrameBottleneck, P3DBottleneck


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "MEMORY_FORMATS",
    "fold_batchnorm",
    "is_channels_last",
    "resolve_memory_format",
    "to_memory_format",
    "DIFFUSIONS",
    "LGD2D",
    "LGD3D",
    "CombinationClassifier",
    "FrameBottleneck",
    "GlobalLocalHead",
    "LGDBlock",
    "LGDNet",
    "LGDStage",
    "LoadReport",
    "LowRankLinear",
    "ModelSpec",
    "P3DBottleneck",
    "TensorSketch",
    "count_parameters",
    "create_model",
    "get_spec",
    "init_scratch",
    "lgd_extra_parameters",
    "list_models",
    "load_imagenet_2d",
    "register_model",
    "stage_loss",
]
