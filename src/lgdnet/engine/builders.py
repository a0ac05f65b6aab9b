"""Factories that turn a :class:`~lgdnet.engine.config.Config` into objects.

Only these functions read configuration objects; models and datasets take plain keyword
arguments (see docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from lgdnet.engine.config import Config, DataConfig, ModelConfig
from lgdnet.errors import ConfigError

_STAGE2_FIELDS = ("num_frames", "frame_stride")
_SAMPLING_FIELDS = ("num_frames", "frame_stride", "train_resize", "crop_size", "test_short_side",
                    "num_test_views", "test_crops", "horizontal_flip", "flow_stack")


def model_options(model: ModelConfig) -> dict[str, Any]:
    """Keyword options for ``create_model`` from the model section (``None`` = model default)."""
    options: dict[str, Any] = {"init": model.init}
    if model.pretrained:
        options["pretrained"] = model.pretrained
    for name in ("diffusion", "rank_ratio", "in_channels", "dropout", "num_segments"):
        if getattr(model, name) is not None:
            options[name] = getattr(model, name)
    options.update(model.options)
    return options


def build_model(config: Config, num_classes: int | None = None) -> torch.nn.Module:
    """A stage-1 model as configured.

    Args:
        config: the run configuration.
        num_classes: used when ``model.num_classes`` is 0 (the number of classes found in the
            training annotations).
    """
    from lgdnet.models import create_model, get_spec, list_models

    classes = config.model.num_classes or num_classes
    if not classes:
        raise ConfigError("model.num_classes: 0 (from the data) but no training annotations given")
    if config.model.name not in list_models():
        raise ConfigError(
            f"model.name: unknown model {config.model.name!r} (known: {', '.join(list_models())})"
        )
    options = model_options(config.model)
    kind = get_spec(config.model.name).kind
    if config.model.stage2_temporal_pool is not None and kind != "3d":
        raise ConfigError(f"model.stage2_temporal_pool: pool1 is an LGD-3D layer; "
                          f"{config.model.name} is a 2D network")
    expected = input_channels(config.data, kind)
    options.setdefault("in_channels", expected)
    if options["in_channels"] != expected:
        raise ConfigError(
            f"model.in_channels: {options['in_channels']} does not fit data.modality="
            f"{config.data.modality!r}, which gives {expected} input channels"
        )
    try:
        return create_model(config.model.name, classes, **options)
    except (TypeError, ValueError) as error:  # an option the model does not take, a bad value
        raise ConfigError(f"model: {error}") from None


def input_channels(data: DataConfig, kind: str) -> int:
    """Channels of one input frame: 3 for RGB; 2 (x, y) per flow frame for 3D clips and
    2 x ``flow_stack`` for the stacked flow snippets of 2D models."""
    if data.modality != "flow":
        return 3
    return 2 if kind == "3d" else 2 * sampling_spec(data, kind).flow_stack


def sampling_spec(data: DataConfig, kind: str, stage: int = 1) -> Any:
    """The ``SamplingSpec`` for a ``"3d"`` (clips) or ``"2d"`` (segments) model.

    Starts from the paper's defaults (``SamplingSpec.for_3d``/``for_2d``, Sec. 5.2) and
    replaces the fields that the data section sets; for ``stage=2`` also those its
    ``stage2_*`` fields set (the clip length and stride of Sec. 5.4's long stage).
    """
    from lgdnet.data import SamplingSpec

    spec = SamplingSpec.for_3d() if kind == "3d" else SamplingSpec.for_2d()
    overrides = {name: getattr(data, name) for name in _SAMPLING_FIELDS if getattr(data, name) is not None}
    if stage == 2:
        overrides.update({name: getattr(data, f"stage2_{name}") for name in _STAGE2_FIELDS
                          if getattr(data, f"stage2_{name}") is not None})
    if overrides:
        try:
            spec = dataclasses.replace(spec, **overrides)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"data: invalid sampling settings {overrides} ({error})") from None
    return spec


def single_view_spec(spec: Any) -> Any:
    """The same sampling with one test view (the centre clip or triple, one crop), for the
    quick validation during training."""
    return dataclasses.replace(spec, num_test_views=1, test_crops=1)


def load_split(data: DataConfig, which: str, classes: list[str] | None = None) -> Any:
    """Annotations of the training (``which="train"``) or validation (``"val"``) list."""
    from lgdnet.data import load_annotations

    path = data.train_list if which == "train" else data.val_list
    if not path:
        raise ConfigError(f"data.{which}_list: no annotation file given")
    return load_annotations(
        path,
        root=data.root or None,
        format=data.format,
        split=data.split,
        subset="train" if which == "train" else "val",
        classes=classes if classes is not None else (data.classes or None),
    )


def build_train_dataset(config: Config, kind: str,
                        stage: int = 1) -> tuple[torch.utils.data.Dataset, list[str]]:
    """``(training dataset, class names)``: random training views (``mode="train"``) for a
    ``"3d"`` or ``"2d"`` model, sampled as training stage ``stage`` asks."""
    from lgdnet.data import VideoDataset

    annotations = load_split(config.data, "train")
    dataset = VideoDataset(annotations.records, sampling_spec(config.data, kind, stage), mode="train",
                           on_error=config.data.on_error, modality=config.data.modality,
                           seed=config.run.seed)
    return dataset, list(annotations.classes)


def build_val_dataset(
    config: Config, kind: str, classes: list[str], views: str = "all", stage: int = 1
) -> torch.utils.data.Dataset:
    """The validation set in test mode with labels in the order of ``classes``: all the
    configured views (Sec. 5.2), or ``views="one"`` (one centre view, for the quick accuracy
    during training); clips as training stage ``stage`` samples them."""
    from lgdnet.data import VideoDataset

    spec = sampling_spec(config.data, kind, stage)
    if views == "one":
        spec = single_view_spec(spec)
    annotations = load_split(config.data, "val", classes=classes)
    return VideoDataset(annotations.records, spec, mode="test", on_error=config.data.on_error,
                        modality=config.data.modality, seed=config.run.seed,
                        views_per_item=config.data.test_views_per_item)
