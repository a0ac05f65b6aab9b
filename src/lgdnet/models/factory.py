"""The model zoo: a plain dict registry, :func:`create_model` and :func:`list_models`.

A registered model is a function returning its :class:`ModelSpec` (architecture defaults);
:func:`create_model` merges the user's options over it, checks them strictly, builds the
network, initialises it (Sec. 5.2) and records ``build_args``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lgdnet.models.init import init_authors, init_scratch, load_imagenet_2d, zero_global_to_local
from lgdnet.models.layout import to_memory_format
from lgdnet.models.lgd_block import DIFFUSIONS, ORDERS
from lgdnet.models.network import LGD2D, LGD3D, LGDNet


@dataclass(frozen=True)
class ModelSpec:
    """Architecture defaults of a registered model.

    Attributes:
        kind: ``"3d"`` (LGD-3D / P3D) or ``"2d"`` (LGD-2D / TSN).
        layers: LGD blocks per stage res2..res5.
        base_width: stem channels and res2 bottleneck width (64 for ResNet-50/101).
        diffusion: default diffusion variant.
        input_size: ``(T, H, W)`` of one view for 3D, ``(H, W)`` of a frame for 2D.
        temporal_pool: pool1's temporal kernel and stride (3D only).
    """

    kind: str
    layers: tuple[int, int, int, int]
    base_width: int = 64
    diffusion: str = "lgd"
    input_size: tuple[int, ...] = (16, 112, 112)
    temporal_pool: int = 2


_REGISTRY: dict[str, Callable[[], ModelSpec]] = {}

R50, R101, TINY = (3, 4, 6, 3), (3, 4, 23, 3), (1, 1, 1, 1)
_COMMON_OPTIONS = ("diffusion", "rank_ratio", "in_channels", "init", "pretrained", "dropout",
                   "layers", "base_width", "global_residual_init", "init_scheme",
                   "block_order")  # fmt: skip
GLOBAL_RESIDUAL_INITS = ("xavier", "zero")
INIT_SCHEMES = ("paper", "authors")
_OPTIONS = {"3d": (*_COMMON_OPTIONS, "temporal_pool"), "2d": (*_COMMON_OPTIONS, "num_segments")}


def register_model(fn: Callable[[], ModelSpec]) -> Callable[[], ModelSpec]:
    """Decorator: register ``fn`` (returning a :class:`ModelSpec`) under its name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered model."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]()


def create_model(
    name: str, num_classes: int, *, memory_format: str = "channels_last", **options: Any
) -> LGDNet:
    """Build a registered LGD network.

    Args:
        name: one of :func:`list_models`.
        num_classes: size of the classifiers.
        **options: ``diffusion`` (``"lgd" | "v1" | "v2" | "none"``), ``rank_ratio`` (16),
            ``in_channels`` (3; flow: 2 per frame for 3D, 2 x stack for 2D), ``init``
            (``"scratch" | "imagenet"``), ``pretrained`` (2D ResNet state-dict file, required
            by ``init="imagenet"``), ``dropout`` (0.0, before the classifiers), ``layers`` and
            ``base_width`` (resize the network), ``global_residual_init`` (``"xavier"``, the
            paper's scratch initialisation of every weight, Sec. 5.2; or ``"zero"``: W^{x,g}
            starts at zero, as the paper does for ImageNet initialisation, so that a network
            trained from scratch starts as its no-diffusion counterpart plus a global path
            that only reads), ``init_scheme`` (``"paper"``: Sec. 5.2, Xavier everywhere and
            bias-free projections; ``"authors"``: as the authors' public LGD-P3D code,
            Kaiming fan-out convolutions, projections with biases, PyTorch's default for
            linear layers, the expanding half W1 of W^{x,g} zero; see
            :func:`~lgdnet.models.init.init_authors`), ``block_order`` (``"paper"``:
            Eq. 2 then Eq. 3; ``"authors"``: g_l from P(x_{l-1}) first and x_l from the new
            g_l, as the authors' code; ``"lgd"`` and ``"v2"`` only), and for 2D models
            ``num_segments`` (T, 3). ``init_scheme="authors"`` and ``block_order`` change the
            parameters, so they are kept in ``build_args`` (when not ``"paper"``).
        memory_format: ``"channels_last"`` (default) stores the convolution weights
            channels-last, so every activation is channels-last: oneDNN's CPU convolutions
            run much faster so (``benchmarks/RESULTS.md``), and bf16/fp16 on CUDA gain too.
            ``"contiguous"`` for the other layout (fp32 on CUDA is slightly faster with it).
            Not an architecture setting: checkpoints store values, not layouts.

    Raises:
        TypeError: an option this model does not take (named in the message).
        ValueError: a bad option value or an unknown model name.

    The returned model's ``build_args`` rebuild the same architecture with ``init="scratch"``;
    its ``init_report`` holds the :class:`~lgdnet.models.init.LoadReport` of
    ``init="imagenet"`` (``None`` for ``"scratch"``).
    """
    spec = get_spec(name)
    unknown = sorted(set(options) - set(_OPTIONS[spec.kind]))
    if unknown:
        raise TypeError(
            f"{name}: unknown option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(_OPTIONS[spec.kind])}"
        )
    init = options.pop("init", "scratch")
    pretrained = options.pop("pretrained", None)
    residual_init = options.pop("global_residual_init", "xavier")
    if residual_init not in GLOBAL_RESIDUAL_INITS:
        raise ValueError(f"{name}: global_residual_init must be one of {GLOBAL_RESIDUAL_INITS}, "
                         f"got {residual_init!r}")
    scheme = options.pop("init_scheme", "paper")
    order = options.pop("block_order", "paper")
    # pool1's temporal stride (3D): 4 is the 128-frame long form (Sec. 5.4); no parameters
    temporal_pool = options.pop("temporal_pool", spec.temporal_pool)
    if scheme not in INIT_SCHEMES or order not in ORDERS:
        raise ValueError(f"{name}: init_scheme must be one of {INIT_SCHEMES} and block_order one "
                         f"of {ORDERS}, got {scheme!r}, {order!r}")
    arch: dict[str, Any] = dict(
        diffusion=spec.diffusion,
        rank_ratio=16,
        in_channels=3,
        dropout=0.0,
        layers=spec.layers,
        base_width=spec.base_width,
    )
    if spec.kind == "2d":
        arch["num_segments"] = 3
    arch.update(options)
    arch["layers"] = tuple(int(n) for n in arch["layers"])
    _check(name, num_classes, arch, init, pretrained)

    common = dict(
        num_classes=num_classes,
        layers=arch["layers"],
        base_width=arch["base_width"],
        diffusion=arch["diffusion"],
        rank_ratio=arch["rank_ratio"],
        in_channels=arch["in_channels"],
        dropout=arch["dropout"],
        block_order=order,
        projection_bias=scheme == "authors",  # the authors' projections have biases
    )
    if spec.kind == "3d":
        model: LGDNet = LGD3D(
            temporal_pool=temporal_pool, default_input_size=spec.input_size, **common
        )
    else:
        size = (arch["num_segments"], *spec.input_size)
        model = LGD2D(default_input_size=size, **common)
    (init_authors if scheme == "authors" else init_scratch)(model)
    if residual_init == "zero":
        zero_global_to_local(model)
    if init == "imagenet":
        model.init_report = load_imagenet_2d(model, pretrained)
    extra = {k: v for k, v in (("init_scheme", scheme), ("block_order", order)) if v != "paper"}
    if spec.kind == "3d" and temporal_pool != spec.temporal_pool:
        extra["temporal_pool"] = temporal_pool
    model.build_args = {"name": name, "num_classes": num_classes, **arch, **extra}
    return to_memory_format(model, memory_format)


def _check(name: str, num_classes: int, arch: dict, init: str, pretrained: Any) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{name}: num_classes must be a positive integer, got {num_classes!r}")
    if arch["diffusion"] not in DIFFUSIONS:
        raise ValueError(
            f"{name}: diffusion must be one of {DIFFUSIONS}, got {arch['diffusion']!r}"
        )
    for key in ("rank_ratio", "in_channels", "base_width"):
        if not isinstance(arch[key], int) or arch[key] < 1:
            raise ValueError(f"{name}: {key} must be a positive integer, got {arch[key]!r}")
    if not 0.0 <= float(arch["dropout"]) < 1.0:
        raise ValueError(f"{name}: dropout must be in [0, 1), got {arch['dropout']!r}")
    if init not in ("scratch", "imagenet"):
        raise ValueError(f"{name}: init must be 'scratch' or 'imagenet', got {init!r}")
    if init == "imagenet" and not isinstance(pretrained, (str, os.PathLike)):
        raise ValueError(
            f"{name}: init='imagenet' needs pretrained=<path of a 2D ResNet state dict>"
        )
    if init == "scratch" and pretrained is not None:
        raise ValueError(f"{name}: pretrained={pretrained!r} is only used with init='imagenet'")


# -- the zoo ---------------------------------------------------------------------------------
@register_model
def lgd3d_r50() -> ModelSpec:
    """LGD-3D, ResNet-50 (Table 1), 16 x 112 x 112 clips."""
    return ModelSpec("3d", R50)


@register_model
def lgd3d_r101() -> ModelSpec:
    """LGD-3D, ResNet-101, 16 x 112 x 112 clips."""
    return ModelSpec("3d", R101)


@register_model
def lgd3d_r50_long() -> ModelSpec:
    """LGD-3D, ResNet-50, 128-frame clips with pool1 temporal stride 4 (local 16 x 7 x 7)."""
    return ModelSpec("3d", R50, input_size=(128, 112, 112), temporal_pool=4)


@register_model
def p3d_r50() -> ModelSpec:
    """P3D-A ResNet-50 baseline (no diffusion)."""
    return ModelSpec("3d", R50, diffusion="none")


@register_model
def lgd2d_r50() -> ModelSpec:
    """LGD-2D, ResNet-50, T x 224 x 224 frames."""
    return ModelSpec("2d", R50, input_size=(224, 224))


@register_model
def lgd2d_r101() -> ModelSpec:
    """LGD-2D, ResNet-101, T x 224 x 224 frames."""
    return ModelSpec("2d", R101, input_size=(224, 224))


@register_model
def tsn_r50() -> ModelSpec:
    """TSN ResNet-50 baseline (no diffusion)."""
    return ModelSpec("2d", R50, diffusion="none", input_size=(224, 224))


@register_model
def lgd3d_tiny() -> ModelSpec:
    """A tiny LGD-3D (blocks 1,1,1,1, widths 8..64, outputs 32..256) for fast CPU work."""
    return ModelSpec("3d", TINY, base_width=8, input_size=(8, 64, 64))


@register_model
def p3d_tiny() -> ModelSpec:
    """The tiny P3D-A baseline (no diffusion)."""
    return ModelSpec("3d", TINY, base_width=8, diffusion="none", input_size=(8, 64, 64))


@register_model
def lgd2d_tiny() -> ModelSpec:
    """A tiny LGD-2D for fast CPU work, T x 64 x 64 frames."""
    return ModelSpec("2d", TINY, base_width=8, input_size=(64, 64))


@register_model
def tsn_tiny() -> ModelSpec:
    """The tiny TSN baseline (no diffusion)."""
    return ModelSpec("2d", TINY, base_width=8, diffusion="none", input_size=(64, 64))
