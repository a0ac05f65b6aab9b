"""The LGD networks (Sec. 4): LGD-3D (P3D-A clips, Table 1) and LGD-2D (TSN-style frames).

Both are a stem, four stages of LGD blocks (``layer1`` .. ``layer4`` = res2 .. res5) and a
head. The first global vector is ``g_1 = P(x_1)`` with x_1 the stem's output, i.e. the input
of the first LGD block (Sec. 4.1). With ``diffusion="none"`` (the P3D and TSN baselines) no
global path is computed inside the network and the global vector is ``P(x_L)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx
from torch import nn

from lgdnet.models.heads import CombinationClassifier, GlobalLocalHead
from lgdnet.models.layout import global_average
from lgdnet.models.lgd_block import LGDBlock, LGDStage
from lgdnet.models.units import EXPANSION, FrameBottleneck, P3DBottleneck, to_clip, to_frames

# an FX leaf here: it branches on the map's strides, which symbolic tracing cannot see
torch.fx.wrap("global_average")

# A block's own children; every other key under ``layerN.M.`` belongs to its local unit.
_UNIT_KEY = re.compile(
    r"^(layer\d+\.\d+\.)(?!local_unit\.|global_to_local\.|local_to_global\.|global_to_global\.)")


def unit_key(key: str) -> str:
    """The lgdnet name of a 2D ResNet (torchvision, timm) or lgdnet 0.1.0 parameter name.

    Those name a block's layers directly (``layer1.0.conv1.weight``); here they belong to the
    block's ``local_unit`` child (``layer1.0.local_unit.conv1.weight``). Other keys, and keys
    already in this form, are returned unchanged.
    """
    return _UNIT_KEY.sub(r"\1local_unit.", key)


def _load_unit_keys(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook: rename keys of the older layout (see :func:`unit_key`)
    in place, so checkpoints written before the change and 2D ResNet state dicts load."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        new = prefix + unit_key(key[len(prefix):])
        if new != key and new not in state_dict:
            state_dict[new] = state_dict.pop(key)


class LGDNet(nn.Module):
    """Base of the LGD networks: four LGD stages and the head (see docs/architecture.md).

    The interface is timm's: ``model(x)`` returns the logits, ``forward_features(x)`` the
    local map and global vector ``(x_L, g_L)``, ``forward_head(features)`` the logits from
    them, ``reset_classifier(n)`` a new head for ``n`` classes. The logits are, in stage 1,
    the mean of the global and the local classifier's (the two terms of Eq. 6, which
    :meth:`forward_parts` returns separately for the loss), and in stage 2 those of the
    combination classifier (Eq. 4-5).

    Constructor arguments beyond the attributes below: ``layers`` (blocks per stage),
    ``base_width``, ``diffusion``, ``rank_ratio``, ``dropout``, ``epilogue`` (the blocks'
    ``"fused"`` or ``"plain"`` Eq. 2-3 epilogue), ``block_order`` (``"paper"`` or the authors'
    ``"authors"``) and ``projection_bias`` (biases on the low-rank projections, as the
    authors' code has); see :class:`~lgdnet.models.lgd_block.LGDBlock`.

    Attributes:
        kind: ``"2d"`` or ``"3d"``.
        stage: 1 (stage-1 head, Eq. 6) or 2 (combination classifier, Eq. 4-5, 7).
        num_classes, in_channels: as named.
        feature_dim, num_features: C_L, the channels of x_L and g_L.
        default_input_size: ``(T, H, W)`` of one training view.
        build_args: keyword arguments of ``create_model`` that rebuild the stage-1 network
            (set by the factory; never holds initialisation file paths).
        stage2_args: the arguments given to :meth:`to_stage2`, or ``None`` in stage 1.
        init_report: the :class:`~lgdnet.models.init.LoadReport` of an ImageNet
            initialisation, or ``None``.
    """

    kind: str = ""
    unit: type[nn.Module] = nn.Module
    layout: str = "clips"  # how the blocks hold maps (LGDBlock's ``layout``)

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
        epilogue: str = "fused",
        block_order: str = "paper",
        projection_bias: bool = False,
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
                stage.append(LGDBlock(unit, channels, width * EXPANSION, diffusion, rank_ratio,
                                      layout=self.layout, epilogue=epilogue, order=block_order,
                                      bias=projection_bias))
                channels = width * EXPANSION
            self.add_module(f"layer{index + 1}", LGDStage(*stage))
        self.feature_dim = self.num_features = channels
        self.head: nn.Module = GlobalLocalHead(channels, num_classes, dropout)
        self.register_load_state_dict_pre_hook(_load_unit_keys)

    # -- the parts that differ between 2D and 3D -------------------------------------------
    def _build_stem(self, in_channels: int, width: int) -> None:
        raise NotImplementedError

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Input ``(N, C, T, H, W)`` -> x_1, the input of ``layer1`` in the blocks' layout."""
        raise NotImplementedError

    def between_res2_res3(self, x: torch.Tensor) -> torch.Tensor:
        """Hook between res2 and res3 (LGD-3D's pool2)."""
        return x

    def local_map(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        """The last stage's output as x_L ``(N, C_L, T', H', W')``."""
        return x

    # -- shared -----------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Local map x_L and global vector g_L.

        Shape:
            ``(N, C, T, H, W) -> (N, C_L, T', H', W'), (N, C_L)``.
        """
        batch = x.shape[0]
        x = self.stem(x)
        g = None
        if self.diffusion != "none":  # g_1 = P(x_1), Sec. 4.1
            g = global_average(self.local_map(x, batch))
        x, g = self.layer1(x, g)
        x = self.between_res2_res3(x)
        x, g = self.layer2(x, g)
        x, g = self.layer3(x, g)
        x, g = self.layer4(x, g)
        local = self.local_map(x, batch)
        if g is None:
            g = global_average(local)  # the baselines' global vector: P(x_L)
        return local, g

    def forward_head(
        self, features: tuple[torch.Tensor, torch.Tensor], pre_logits: bool = False
    ) -> torch.Tensor:
        """Logits from ``forward_features``' ``(x_L, g_L)``; ``pre_logits`` returns the
        classifier's input instead (stage 1: ``[g_L, P(x_L)]``; stage 2: phi of Eq. 5).

        Shape:
            ``(N, num_classes)``; ``pre_logits``: ``(N, 2 C_L)`` or ``(N, 2d)``.
        """
        local, global_ = features
        return self.head(local, global_, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits (see the class docstring).

        Shape:
            ``(N, C, T, H, W) -> (N, num_classes)``.
        """
        return self.forward_head(self.forward_features(x))

    def forward_parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the stage's loss needs (:func:`~lgdnet.models.heads.stage_loss`): ``logits``
        and, in stage 1, ``global_logits`` and ``local_logits`` (the terms of Eq. 6).

        Shape:
            ``(N, C, T, H, W)`` -> ``(N, num_classes)`` tensors.
        """
        return self.head.forward_parts(*self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The head: :class:`GlobalLocalHead` (stage 1) or :class:`CombinationClassifier`."""
        return self.head

    def _place(self, head: nn.Module) -> nn.Module:
        reference = self.conv1.weight
        return head.to(device=reference.device, dtype=reference.dtype)

    def _new_head(self, num_classes: int, dropout: float | None = None) -> nn.Module:
        if dropout is None:
            old = getattr(self.head, "dropout", None)
            dropout = float(old.p) if isinstance(old, nn.Dropout) else 0.0
        if self.stage == 2:
            args = {**(self.stage2_args or {}), "dropout": dropout}
            head: nn.Module = CombinationClassifier(self.feature_dim, num_classes, **args)
            self.stage2_args = args
        else:
            head = GlobalLocalHead(self.feature_dim, num_classes, dropout)
        for module in head.modules():  # Sec. 5.2: Xavier, zero biases
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        return self._place(head)

    def reset_classifier(self, num_classes: int, dropout: float | None = None) -> None:
        """A freshly initialised head of the current stage for ``num_classes`` classes
        (fine-tuning); the backbone is kept. ``dropout`` ``None`` keeps the head's value.
        Updates :attr:`num_classes` and :attr:`build_args`."""
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.head = self._new_head(num_classes, dropout)
        self.num_classes = num_classes
        if self.build_args:
            self.build_args = {**self.build_args, "num_classes": num_classes}

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
        dtype of the backbone. Records the arguments in :attr:`stage2_args`; returns ``self``.

        Args:
            sketch_dim: d of the Tensor Sketch (the classifier sees 2d features).
            signed_sqrt, l2_normalize: post-processing of each sketch half.
            dropout: before the linear layer; ``None`` keeps the stage-1 head's value.
            seed: seed of the sketch hashes.
        """
        self.stage = 2
        self.stage2_args = dict(sketch_dim=sketch_dim, signed_sqrt=signed_sqrt,
                                l2_normalize=l2_normalize, seed=seed)
        self.head = self._new_head(self.num_classes, dropout)
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

    def set_temporal_pool(self, temporal_pool: int) -> LGD3D:
        """Set pool1's temporal kernel and stride in place and return the model.

        Pooling has no parameters, so the weights are untouched: Sec. 5.4 trains stage 1 on
        16-frame clips with stride 2 and stage 2 on 128-frame clips with stride 4 (the
        ``lgd3d_r50_long`` form). Updates :attr:`temporal_pool` and :attr:`build_args`.
        """
        if not isinstance(temporal_pool, int) or temporal_pool < 1:
            raise ValueError(f"temporal_pool must be a positive integer, got {temporal_pool!r}")
        self.temporal_pool = temporal_pool
        self.pool1 = nn.MaxPool3d((temporal_pool, 1, 1), stride=(temporal_pool, 1, 1))
        if self.build_args:
            self.build_args = {**self.build_args, "temporal_pool": temporal_pool}
        return self


class LGD2D(LGDNet):
    """LGD-2D (Sec. 4.1): a torchvision-layout 2D ResNet on each of T frames.

    Stem: ``conv1`` 7x7 stride 2 + ``bn1`` + ReLU + ``maxpool`` 3x3 stride 2, then the 2D
    bottlenecks on every frame; the global path pools over all frames and positions.
    224x224 frames give x_L of T x 7 x 7. The parameter names are torchvision's, so the
    backbone of ``tsn_r50`` is exactly torchvision's ResNet-50 (23,508,032 parameters).
    """

    kind = "2d"
    unit = FrameBottleneck
    layout = "frames"  # every block works on (N*T, C, H, W): one 2D batch of all frames

    def _build_stem(self, in_channels: int, width: int) -> None:
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        frames = to_frames(x)  # (N*T, C, H, W), the layout of every block
        return self.maxpool(self.relu(self.bn1(self.conv1(frames))))

    def local_map(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        return to_clip(x, batch)
