"""The action detector of Sec. 5.6: an LGD-3D backbone and an ROI head on its local map x_L.

"The prediction score of each proposal is estimated by the ROI-pooled local feature from
LGD-3D network": :class:`LGDDetector` runs the backbone's ``forward_features`` on a clip
centred on a key frame and scores that frame's proposals with
:class:`~lgdnet.models.roi_head.ROIActionHead`. Linking the scored proposals into tubes
(Saha et al., BMVC 2016) is :mod:`lgdnet.detection.linking`; the training recipe is
:mod:`lgdnet.detection.training`.

The backbone's classification head is dropped (replaced by ``nn.Identity``): the detector
never uses it, and parameters that get no gradient would stall DDP.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lgdnet.models.factory import create_model
from lgdnet.models.network import LGDNet
from lgdnet.models.roi_head import ROIActionHead

#: The ROI head's arguments recorded in ``build_args["detector"]`` (with ``num_classes``).
HEAD_ARGS = ("roi_size", "spatial_scale", "sampling_ratio", "aligned", "dropout", "use_global")


class LGDDetector(nn.Module):
    """LGD-3D backbone + ROI action head (Sec. 5.6).

    Args:
        backbone: an LGD-3D network (``kind == "3d"``), e.g. from
            ``create_model("lgd3d_r50", ...)``; it is taken over and its classifier head
            removed.
        num_classes: action classes, background not included.
        roi_size, spatial_scale, sampling_ratio, aligned, dropout, use_global: see
            :class:`~lgdnet.models.roi_head.ROIActionHead`; ``spatial_scale`` is 1/16, the
            stride of LGD-3D's x_L.

    Attributes:
        input_keys: ``("video", "rois")``, the batch entries the training loop passes to
            :meth:`forward_parts` (:class:`lgdnet.engine.distributed.ForwardParts`).
        stage: 1 (one training stage; recorded in checkpoints).
        build_args: ``{"detector": {num_classes and the head's arguments}, "backbone":
            backbone.build_args}``; :func:`build_detector` rebuilds the architecture from it.

    Shape:
        ``video: (N, 3, T, H, W)``, ``rois: (K, 5)`` rows ``(n, x1, y1, x2, y2)`` in pixels of
        clip n's centre frame -> ``(K, num_classes + 1)`` logits, column 0 background.
    """

    input_keys = ("video", "rois")
    kind = "3d"
    stage = 1
    stage2_args = None

    def __init__(
        self,
        backbone: LGDNet,
        num_classes: int,
        roi_size: int = 7,
        spatial_scale: float = 1.0 / 16,
        sampling_ratio: int = 2,
        aligned: bool = True,
        dropout: float = 0.0,
        use_global: bool = False,
    ) -> None:
        super().__init__()
        if getattr(backbone, "kind", None) != "3d":
            raise ValueError("LGDDetector needs an LGD-3D backbone (Sec. 5.6 pools LGD-3D's x_L); "
                             f"got kind {getattr(backbone, 'kind', None)!r}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        backbone.head = nn.Identity()  # never used: forward_features is all the detector reads
        self.backbone = backbone
        self.head = ROIActionHead(backbone.feature_dim, num_classes, roi_size=roi_size,
                                  spatial_scale=spatial_scale, sampling_ratio=sampling_ratio,
                                  aligned=aligned, dropout=dropout, use_global=use_global)
        reference = next(backbone.parameters())
        self.head.to(device=reference.device, dtype=reference.dtype)
        self.num_classes = num_classes
        self.head_args = dict(roi_size=roi_size, spatial_scale=spatial_scale,
                              sampling_ratio=sampling_ratio, aligned=aligned,
                              dropout=float(dropout), use_global=use_global)
        self.build_args: dict[str, Any] = {
            "detector": {"num_classes": num_classes, **self.head_args},
            "backbone": dict(getattr(backbone, "build_args", {}) or {}),
        }

    @property
    def feature_dim(self) -> int:
        """C of x_L."""
        return self.backbone.feature_dim

    @property
    def default_input_size(self) -> tuple[int, int, int]:
        """The backbone's ``(T, H, W)``."""
        return tuple(self.backbone.default_input_size)

    @classmethod
    def from_classifier(
        cls, network: LGDNet, num_classes: int, use_global: bool = False, dropout: float = 0.0,
        **head_args: Any,
    ) -> LGDDetector:
        """A detector on the backbone of a trained classification network (Sec. 5.6 fine-tunes
        the pre-trained LGD-3D); the ROI classifier starts fresh (Xavier, zero bias).

        The backbone's weights are kept as they are (a stage-2 network's combination
        classifier is dropped like a stage-1 head). ``network`` itself becomes the backbone.

        Args:
            network: the trained LGD-3D classifier.
            num_classes: action classes of the detection dataset.
            use_global: concatenate g_L to each ROI feature.
            dropout: before the ROI classifier.
            **head_args: other :class:`ROIActionHead` arguments.
        """
        return cls(network, num_classes, use_global=use_global, dropout=dropout, **head_args)

    def forward_features(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's ``(x_L, g_L)``. Shape: ``(N, 3, T, H, W) -> (N, C, T', H', W'), (N, C)``."""
        return self.backbone.forward_features(video)

    def forward(self, video: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """Logits of every ROI; column 0 background, column c + 1 class c.

        Shape:
            see the class docstring.
        """
        local, global_ = self.backbone.forward_features(video)
        return self.head(local, rois, global_)

    def get_classifier(self) -> nn.Module:
        """The ROI head (what fine-tuning re-initialises and what ``backbone_lr_mult`` spares)."""
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh ROI classifier for ``num_classes`` action classes (plus background)."""
        self.head.reset_classifier(num_classes)
        self.num_classes = num_classes
        self.build_args["detector"]["num_classes"] = num_classes

    def forward_parts(self, video: torch.Tensor, rois: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"logits": (K, num_classes + 1)}``: what the training loop's loss reads
        (``stage_loss``: the cross-entropy of ``logits`` against the ROI labels)."""
        local, global_ = self.backbone.forward_features(video)
        logits = self.head(local, rois, global_)
        if not self.head.use_global:
            # The last block's global path (Eq. 3) then feeds nothing; adding g_L with weight
            # 0 keeps its parameters in the graph, as DDP (without find_unused_parameters)
            # requires of every parameter. The logits are unchanged.
            logits = logits + 0.0 * global_.sum()
        return {"logits": logits}


def build_detector(build_args: dict[str, Any]) -> LGDDetector:
    """An untrained detector with the architecture ``LGDDetector.build_args`` describes.

    Raises:
        ValueError: ``build_args`` lacks the ``detector`` or ``backbone`` part, or names an
            unknown model or argument.
    """
    detector, backbone = build_args.get("detector"), build_args.get("backbone")
    if not isinstance(detector, dict) or not isinstance(backbone, dict) or not backbone:
        raise ValueError("detector build_args need 'detector' and 'backbone' mappings")
    backbone = {key: value for key, value in backbone.items() if key != "pretrained"}
    backbone["init"] = "scratch"  # the weights come from the checkpoint
    unknown = sorted(set(detector) - {"num_classes", *HEAD_ARGS})
    if unknown:
        raise ValueError(f"unknown detector argument(s) {', '.join(unknown)}")
    try:
        network = create_model(**backbone)
    except TypeError as error:
        raise ValueError(str(error)) from None
    return LGDDetector(network, **detector)
