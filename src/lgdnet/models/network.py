"""The LGD networks (Sec. 4): LGD-3D (P3D-A clips, Table 1) and LGD-2D (TSN-style frames).

Both are a stem, four stages of LGD blocks (``layer1`` .. ``layer4`` = res2 .. res5) and a
head. The first global vector is ``g_1 = P(x_1)`` with x_1 the stem's output, i.e. the input
of the first LGD block (Sec. 4.1). With ``diffusion="none"`` (the P3D and TSN baselines) no
global path is computed inside the network and the global vector is ``P(x_L)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lgdnet.models.heads import CombinationClassifier, GlobalLocalHead
from lgdnet.models.lgd_block import LGDBlock, LGDStage, global_average
from lgdnet.models.units import EXPANSION, FrameBottleneck, P3DBottleneck, to_clip, to_frames


class LGDNet(nn.Module):
    """Base of the LGD networks: four LGD stages and the head (see docs/architecture.md).

    Attributes:
        kind: ``"2d"`` or ``"3d"``.
        stage: 1 (stage-1 head, Eq. 6) or 2 (combination classifier, Eq. 4-5, 7).
        num_classes, in_channels: as named.
        feature_dim: C_L, the channels of x_L and g_L.
        default_input_size: ``(T, H, W)`` of one training view.
        build_args: keyword arguments of ``create_model`` that rebuild the stage-1 network
            (set by the factory; never holds initialisation file paths).
        stage2_args: the arguments given to :meth:`to_stage2`, or ``None`` in stage 1.
        init_report: the :class:`~lgdnet.models.init.LoadReport` of an ImageNet
            initialisation, or ``None``.
    """

    kind: str = ""
    unit: type[nn.Module] = nn.Module

    def __init__(
        self,
        *,
        num_classes: int,
        layers: Sequence[int],
        base_width: int = 64,
        diffusion: str = "lgd",
        rank_ratio: int = 16,
        in_channels: int = 3,
        dropout: float = 0.0,
        default_input_size: tuple[int, int, int] = (16, 112, 112),
    ) -> None:
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be four positive block counts, got {tuple(layers)}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.diffusion = diffusion
        self.default_input_size = tuple(default_input_size)
        self.stage = 1
        self.build_args: dict[str, Any] = {}
        self.stage2_args: dict[str, Any] | None = None
        self.init_report: Any = None
        self._build_stem(in_channels, base_width)
        channels = base_width
        for index, blocks in enumerate(layers):
            width = base_width * 2**index
            stage = []
            for b in range(blocks):
                stride = 2 if index > 0 and b == 0 else 1
                unit = self.unit(channels, width, stride)
                stage.append(LGDBlock(unit, channels, width * EXPANSION, diffusion, rank_ratio))
                channels = width * EXPANSION
            self.add_module(f"layer{index + 1}", LGDStage(*stage))
        self.feature_dim = channels
        self.head: nn.Module = GlobalLocalHead(channels, num_classes, dropout)

    # -- the parts that differ between 2D and 3D -------------------------------------------
    def _build_stem(self, in_channels: int, width: int) -> None:
        raise NotImplementedError

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Input ``(N, C, T, H, W)`` -> x_1, the input of ``layer1``."""
        raise NotImplementedError

    def between_res2_res3(self, x: torch.Tensor) -> torch.Tensor:
        """Hook between res2 and res3 (LGD-3D's pool2)."""
        return x

    # -- shared -----------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Local map x_L and global vector g_L.

        Shape:
            ``(N, C, T, H, W) -> (N, C_L, T', H', W'), (N, C_L)``.
        """
        x = self.stem(x)
        g = None if self.diffusion == "none" else global_average(x)  # g_1 = P(x_1), Sec. 4.1
        x, g = self.layer1(x, g)
        x = self.between_res2_res3(x)
        x, g = self.layer2(x, g)
        x, g = self.layer3(x, g)
        x, g = self.layer4(x, g)
        if g is None:
            g = x.mean((2, 3, 4))  # the baselines' global vector: P(x_L)
        return x, g

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage 1: ``{"logits", "global_logits", "local_logits"}``; stage 2: ``{"logits"}``.

        Shape:
            ``(N, C, T, H, W)`` -> ``(N, num_classes)`` tensors.
        """
        local, global_ = self.forward_features(x)
        return self.head(local, global_)

    def to_stage2(
        self,
        sketch_dim: int = 8192,
        signed_sqrt: bool = True,
        l2_normalize: bool = True,
        dropout: float | None = None,
        seed: int = 0,
    ) -> LGDNet:
        """Swap in the combination classifier (Eq. 4-5) in place, keeping the backbone.

        The new classifier is Xavier-initialised with zero bias and placed on the device and
        dtype of the backbone. Records the arguments in :attr:`stage2_args`.

        Args:
            sketch_dim: d of the Tensor Sketch (the classifier sees 2d features).
            signed_sqrt, l2_normalize: post-processing of each sketch half.
            dropout: before the linear layer; ``None`` keeps the stage-1 head's value.
            seed: seed of the sketch hashes.
        """
        if dropout is None:
            old = getattr(self.head, "dropout", None)
            dropout = float(old.p) if isinstance(old, nn.Dropout) else 0.0
        args = dict(
            sketch_dim=sketch_dim,
            signed_sqrt=signed_sqrt,
            l2_normalize=l2_normalize,
            dropout=dropout,
            seed=seed,
        )
        head = CombinationClassifier(self.feature_dim, self.num_classes, **args)
        nn.init.xavier_uniform_(head.classifier.weight)
        nn.init.zeros_(head.classifier.bias)
        reference = self.conv1.weight
        self.head = head.to(device=reference.device, dtype=reference.dtype)
        self.stage = 2
        self.stage2_args = args
        return self


class LGD3D(LGDNet):
    """LGD-3D (Sec. 4.2, Table 1) on a P3D-A ResNet.

    Stem: ``conv1`` 1x7x7 stride (1, 2, 2) + BN + ReLU, then ``conv1_t`` 3x1x1 + BN + ReLU
    (64 channels); no spatial max-pool (112 -> 56 at res2; total spatial stride 16);
    ``pool1`` max over time (2x1x1, stride 2; 4x1x1 stride 4 for the long variant);
    ``pool2`` 2x1x1 max, stride 2, between res2 and res3. 16x112x112 -> x_L 4x7x7.

    Args:
        temporal_pool: temporal kernel and stride of pool1 (2; 4 for 128-frame inputs).
        **kwargs: see :class:`LGDNet`.
    """

    kind = "3d"
    unit = P3DBottleneck

    def __init__(self, *, temporal_pool: int = 2, **kwargs: Any) -> None:
        self.temporal_pool = temporal_pool
        super().__init__(**kwargs)

    def _build_stem(self, in_channels: int, width: int) -> None:
        self.conv1 = nn.Conv3d(
            in_channels, width, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False
        )
        self.bn1 = nn.BatchNorm3d(width)
        self.conv1_t = nn.Conv3d(width, width, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn1_t = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        tp = self.temporal_pool
        self.pool1 = nn.MaxPool3d((tp, 1, 1), stride=(tp, 1, 1))
        self.pool2 = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1))

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn1_t(self.conv1_t(x)))
        return self.pool1(x)

    def between_res2_res3(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool2(x)


class LGD2D(LGDNet):
    """LGD-2D (Sec. 4.1): a torchvision-layout 2D ResNet on each of T frames.

    Stem: ``conv1`` 7x7 stride 2 + ``bn1`` + ReLU + ``maxpool`` 3x3 stride 2, then the 2D
    bottlenecks on every frame; the global path pools over all frames and positions.
    224x224 frames give x_L of T x 7 x 7. The parameter names are torchvision's, so the
    backbone of ``tsn_r50`` is exactly torchvision's ResNet-50 (23,508,032 parameters).
    """

    kind = "2d"
    unit = FrameBottleneck

    def _build_stem(self, in_channels: int, width: int) -> None:
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        frames = to_frames(x)  # (N*T, C, H, W); every later unit works on views of this layout
        frames = self.maxpool(self.relu(self.bn1(self.conv1(frames))))
        return to_clip(frames, x.shape[0])
