"""lgdnet: Local and Global Diffusion networks (Qiu et al., CVPR 2019) for video recognition.

Quick use::

    import lgdnet
    model = lgdnet.create_model("lgd3d_r50", num_classes=400)
    local_map, global_vec = model.forward_features(clip)   # (N,2048,4,7,7), (N,2048)

    predictor = lgdnet.load("runs/demo/best.safetensors")
    predictor.predict("video.mp4")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from lgdnet.models import create_model, list_models  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from lgdnet.engine.predict import Predictor


def load(checkpoint: str, device: str = "cpu", **options: Any) -> Predictor:
    """Load a trained checkpoint and return a ready :class:`~lgdnet.engine.predict.Predictor`."""
    from lgdnet.engine.predict import load_predictor

    return load_predictor(checkpoint, device=device, **options)


__all__ = ["__version__", "create_model", "list_models", "load"]
