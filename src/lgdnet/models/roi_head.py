"""The proposal classifier of the action-detection framework of Sec. 5.6.

"The prediction score of each proposal is estimated by the ROI-pooled local feature from
LGD-3D network": the proposals of a clip's key frame are pooled from the final local map x_L
of a pre-trained LGD-3D. The paper does not spell out the pooling; :class:`ROIActionHead`
follows the usual recipe for 3D-CNN action detection (the ROI head of SlowFast's AVA
detector): temporal average, RoIAlign, spatial max, dropout, a linear classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lgdnet.models.roi_align import boxes_to_rois, roi_align


class ROIActionHead(nn.Module):
    """Scores action proposals from ROI-pooled local features x_L (Sec. 5.6).

    For a clip, ``x_L`` is averaged over time (the boxes belong to the key frame, while
    x_L's T' = T/4 steps each cover several frames), each box is RoIAligned from the
    ``(C, H', W')`` map at ``spatial_scale`` to ``roi_size x roi_size`` and max-pooled over
    space to a C-vector, optionally concatenated with the clip's global vector g_L, and
    classified by one linear layer.

    Outputs ``num_classes + 1`` scores: index 0 is background and class c of the dataset is
    output ``c + 1`` (so a detector's softmax or NMS can drop column 0).

    Args:
        feature_dim: C, channels of x_L (and g_L): 2048 for LGD-3D ResNet-50/101.
        num_classes: action classes, background not included.
        roi_size: RoIAlign output size per side (7: one bin per cell of a full-frame box on
            the 7 x 7 map of a 112 x 112 input).
        spatial_scale: feature-map pixels per input pixel; LGD-3D's x_L has stride 16.
        sampling_ratio: RoIAlign samples per bin per axis. 2, Mask R-CNN's and torchvision's
            ``MultiScaleRoIAlign`` default: a fixed cost per box, and a bin (at most one
            feature cell here) is interpolated at 2 x 2 points; ``<= 0`` for adaptive.
        aligned: half-pixel correction of RoIAlign (box corners at pixel edges).
        dropout: dropout probability before the classifier.
        use_global: concatenate g_L to every ROI feature (input width 2C). The paper
            classifies from local features only, hence ``False``.

    Shape:
        ``local: (N, C, T', H', W')``, ``boxes: (K, 5)`` rows ``(n, x1, y1, x2, y2)`` in pixels
        of clip n's key frame (or a list of N ``(K_n, 4)`` tensors), ``global_: (N, C)`` ->
        ``(K, num_classes + 1)``.
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        roi_size: int = 7,
        spatial_scale: float = 1.0 / 16,
        sampling_ratio: int = 2,
        aligned: bool = True,
        dropout: float = 0.0,
        use_global: bool = False,
    ) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.roi_size = roi_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.use_global = use_global
        self.dropout = nn.Dropout(dropout)
        self.classifier = self._new_classifier(num_classes)

    @property
    def num_classes(self) -> int:
        """Action classes (the classifier has one more output, the background)."""
        return self.classifier.out_features - 1

    @property
    def in_features(self) -> int:
        """Width of the classifier's input: C, or 2C with ``use_global``."""
        return self.feature_dim * (2 if self.use_global else 1)

    def _new_classifier(self, num_classes: int) -> nn.Linear:
        classifier = nn.Linear(self.in_features, num_classes + 1)
        # As init_scratch does for every classifier (Sec. 5.2): Xavier, zero bias.
        nn.init.xavier_uniform_(classifier.weight)
        nn.init.zeros_(classifier.bias)
        return classifier

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh ``num_classes + 1``-way classifier (fine-tuning on another dataset)."""
        device, dtype = self.classifier.weight.device, self.classifier.weight.dtype
        self.classifier = self._new_classifier(num_classes).to(device=device, dtype=dtype)

    def roi_features(
        self,
        local: torch.Tensor,
        boxes: torch.Tensor | Sequence[torch.Tensor],
        global_: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The pre-logits feature of every box (before dropout).

        Shape:
            as :class:`ROIActionHead`, -> ``(K, C)``, or ``(K, 2C)`` with ``use_global``.
        """
        if local.dim() != 5:
            raise ValueError(f"local must be (N, C, T, H, W); got {tuple(local.shape)}")
        rois = boxes_to_rois(boxes).to(local.device)
        frame = local.mean(2)  # the key frame's boxes apply to the whole clip's x_L
        pooled = roi_align(
            frame,
            rois,
            self.roi_size,
            spatial_scale=self.spatial_scale,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
        )
        features = pooled.amax((2, 3))  # (K, C)
        if self.use_global:
            if global_ is None:
                raise ValueError("use_global=True needs the global vector g_L")
            features = torch.cat([features, global_[rois[:, 0].long()]], dim=1)
        return features

    def forward(
        self,
        local: torch.Tensor,
        boxes: torch.Tensor | Sequence[torch.Tensor],
        global_: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits per box; column 0 is background, column c + 1 is class c.

        ``global_`` is ignored unless ``use_global``, so that the pair returned by a network's
        ``forward_features`` can always be passed.

        Shape:
            as :class:`ROIActionHead`.
        """
        return self.classifier(self.dropout(self.roi_features(local, boxes, global_)))
