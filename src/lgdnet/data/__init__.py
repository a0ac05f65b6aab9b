"""Data: from video files and annotation lists to clip tensors. Knows nothing of models.

Public names are imported lazily so that ``import lgdnet.data`` stays cheap and does not
require the optional video dependencies until they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # decoding
    "VideoSource": "lgdnet.data.decoding",
    "open_video": "lgdnet.data.decoding",
    # annotations
    "VideoRecord": "lgdnet.data.annotations",
    "Annotations": "lgdnet.data.annotations",
    "load_annotations": "lgdnet.data.annotations",
    "load_classes": "lgdnet.data.annotations",
    "save_classes": "lgdnet.data.annotations",
    # dataset checks and frame extraction
    "check_dataset": "lgdnet.data.checking",
    "extract_frames": "lgdnet.data.frame_extraction",
    # sampling, transforms, datasets
    "SamplingSpec": "lgdnet.data.sampling",
    "VideoDataset": "lgdnet.data.dataset",
    "collate_views": "lgdnet.data.dataset",
    # optical flow
    "FlowSource": "lgdnet.data.flow",
    "open_flow": "lgdnet.data.flow",
    "extract_flow_dataset": "lgdnet.data.flow_extraction",
    # the embedded dataset
    "write_synthetic_dataset": "lgdnet.data.synthetic",
    "SYNTHETIC_CLASSES": "lgdnet.data.synthetic",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lgdnet.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
