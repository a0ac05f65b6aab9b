"""lgdnet: Local and Global Diffusion networks (Qiu et al., CVPR 2019) for video recognition.

Quick use::

    import lgdnet
    model = lgdnet.create_model("lgd3d_r50", num_classes=400)
    logits = model(clip)                                   # (N, 400)
    local_map, global_vec = model.forward_features(clip)   # (N,2048,4,7,7), (N,2048)

    model = lgdnet.load_model("runs/demo/best.safetensors")  # an nn.Module, to fine-tune
    predictor = lgdnet.load("runs/demo/best.safetensors")    # classify video files
    predictor.predict("video.mp4")

Importing lgdnet makes glibc keep large freed CPU blocks for reuse
(:func:`lgdnet.allocator.keep_freed_memory`; ``LGDNET_KEEP_FREED_MEMORY=0`` before the import
turns it off): a process-wide malloc setting, so it is applied once here rather than by every
function that allocates feature maps.
"""

from __future__ import annotations

from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = _metadata.version("lgdnet")
except _metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
    __version__ = "0.0.0+unknown"

from lgdnet.allocator import keep_freed_memory  # noqa: E402

keep_freed_memory()

from lgdnet.models import create_model, list_models  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from lgdnet.engine.predict import Predictor


def load(checkpoint: str, device: str = "cpu", **options: Any) -> Predictor:
    """Load a trained checkpoint and return a ready :class:`~lgdnet.engine.predict.Predictor`."""
    from lgdnet.engine.predict import load_predictor

    return load_predictor(checkpoint, device=device, **options)


def load_model(checkpoint: str, device: str = "cpu") -> nn.Module:
    """The network of a checkpoint (either stage), with its weights, in eval mode: an ordinary
    ``nn.Module`` to fine-tune, export or wrap. Its ``classes`` attribute holds the class names
    and ``training_config`` the configuration it was trained with (plain dicts)."""
    from lgdnet.engine.checkpoint import load_model as _load

    model, config, classes = _load(checkpoint, device)
    model.classes = classes
    model.training_config = config
    return model


__all__ = ["__version__", "create_model", "list_models", "load", "load_model"]
