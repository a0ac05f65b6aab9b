"""Typed training configuration: model, data, optimisation and run settings.

A configuration is four frozen dataclasses held by :class:`Config`. It is read from a YAML
or JSON file (:func:`load_config`), changed from the command line with ``key=value``
overrides (:func:`apply_overrides`, e.g. ``optim.lr=0.01``), and saved as a plain dict
(:func:`config_to_dict`) with every checkpoint and results file. Unknown keys and values of
the wrong type raise :class:`~lgdnet.errors.ConfigError` naming the key (and the file).

The optimisation defaults are the paper's (Sec. 5.2): SGD with momentum, learning rate 0.01
divided by 10 every 20 epochs, 50 epochs per stage of Sec. 4.3, mini-batches of 64 clips
(LGD-3D) or 128 triples of frames (LGD-2D).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from lgdnet.engine.config_checks import validate_config
from lgdnet.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    """Which network to build (see ``lgdnet.models.create_model``).

    ``num_classes=0`` takes the number of classes from the training annotations. Options
    left at ``None`` keep the model's own default (e.g. ``diffusion="none"`` for ``p3d_*``).
    ``options`` passes further ``create_model`` options (``layers``, ``base_width``).
    ``init_checkpoint`` names an lgdnet checkpoint to start from (either stage, any class
    count): a stage-1 checkpoint when the run trains stage 2 only (``run.stages=[2]``), or a
    pre-trained network to fine-tune (Sec. 5.6). The backbone must fit; the classifier is
    loaded when the class names agree and re-initialised otherwise
    (:mod:`lgdnet.engine.transfer`, which logs what it loaded, re-initialised and left out).
    ``stage2_temporal_pool`` sets pool1's temporal kernel and stride for stage 2 (3D models):
    4 is the 128-frame "Long" form of Sec. 5.4 (``None``: as in stage 1).
    """

    name: str = "lgd3d_r50"
    num_classes: int = 0
    diffusion: str | None = None
    rank_ratio: int | None = None
    in_channels: int | None = None
    init: str = "scratch"
    pretrained: str = ""
    dropout: float | None = None
    num_segments: int | None = None
    sketch_dim: int = 8192
    init_checkpoint: str = ""
    stage2_temporal_pool: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    """Where the videos are and how clips are sampled.

    The sampling fields left at ``None`` keep the defaults of ``SamplingSpec.for_3d`` /
    ``for_2d`` (the paper's sizes, Sec. 5.2). ``stage2_num_frames`` / ``stage2_frame_stride``
    change the clip of stage 2 (training, validation and its final evaluation; Sec. 5.4's
    "Long" row trains stage 2 on 128-frame clips); ``None`` repeats the stage-1 value.
    """

    train_list: str = ""
    val_list: str = ""
    root: str = ""
    format: str = "auto"
    split: int = 1
    classes: str = ""
    modality: str = "rgb"
    num_frames: int | None = None
    frame_stride: int | None = None
    stage2_num_frames: int | None = None
    stage2_frame_stride: int | None = None
    train_resize: tuple[int, int] | None = None
    crop_size: int | None = None
    test_short_side: int | None = None
    num_test_views: int | None = None
    test_crops: int | None = None
    flow_stack: int | None = None  # flow frames stacked per 2D segment (None: 5)
    horizontal_flip: bool | None = None  # None: flip (Sec. 5.2); false for mirror-sensitive classes
    num_workers: int = 2
    # keep the training loader's workers from one epoch to the next (lgdnet.engine.stage_loader);
    # false starts them anew every epoch
    persistent_workers: bool = True
    on_error: str = "skip"
    # test views decoded together (one loader item): bounds evaluation memory whatever the
    # number of views (0: all the views of a video at once)
    test_views_per_item: int = 8


@dataclass(frozen=True)
class OptimConfig:
    """SGD settings of Sec. 5.2, for each of the two stages of Sec. 4.3.

    ``batch_size`` is the effective mini-batch (summed over processes); 0 means the paper's
    64 clips for 3D models and 128 triples for 2D models. It is reached with gradient
    accumulation over micro-batches of ``micro_batch_size`` per process (0: no
    accumulation). The paper does not give a weight decay; 1e-4 is the usual ResNet value.
    ``stage2_*`` of ``None`` repeat the stage-1 value. Epochs may be fractional (Sec. 5.4
    trains the long stage for 12.5 epochs): the last epoch then covers that fraction of its
    optimiser steps.

    Fine-tuning (docs/finetuning.md): ``backbone_lr_mult`` scales the learning rate of
    everything but the classifier (the head keeps ``lr``); ``freeze_bn`` keeps BatchNorm
    running statistics fixed while training (``"all"``, or ``"partial"``: all but the first,
    TSN's partial BN); ``freeze_backbone_epochs`` trains only the classifier for the first N
    epochs of each stage. The defaults (1.0, ``"none"``, 0) change nothing.
    """

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_step: int = 20  # epochs between learning-rate divisions
    lr_gamma: float = 0.1  # "divided by 10"
    epochs: float = 50.0  # per stage; fractional: the last epoch is partial
    stage2_epochs: float | None = None
    stage2_lr: float | None = None
    stage2_lr_step: int | None = None
    batch_size: int = 0
    micro_batch_size: int = 0
    stage2_batch_size: int | None = None
    stage2_micro_batch_size: int | None = None
    precision: str = "fp32"  # "bf16" (CPU or CUDA) or "fp16" (CUDA, with loss scaling) autocast
    grad_clip: float = 0.0  # maximum gradient norm (0: no clipping)
    backbone_lr_mult: float = 1.0  # lr of the backbone / lr of the classifier
    freeze_bn: str = "none"  # "none", "partial" (all but the first BatchNorm) or "all"
    freeze_backbone_epochs: int = 0  # first N epochs of a stage train the classifier only
    # the kernel of the SGD update (lgdnet.engine.optimizer): "auto" (fused on CPU and CUDA),
    # "fused", "foreach" or "for-loop"; they differ in rounding only
    sgd_kernel: str = "auto"


@dataclass(frozen=True)
class RunConfig:
    """Where results go and how the run behaves."""

    out_dir: str = "runs/lgdnet"  # checkpoints, metrics, curves, evaluation results
    seed: int = 0
    stages: tuple[int, ...] = (1, 2)  # the stages of Sec. 4.3 to train: [1, 2], [1] or [2]
    eval_every: int = 1  # one-view validation accuracy every N epochs (0: never)
    final_eval: bool = True  # multi-view evaluation (Sec. 5.2) of each stage's best model
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda"
    # let cuDNN time its convolution algorithms for each new input shape (CUDA): faster for
    # the fixed training crops; switch off when the shapes keep changing
    cudnn_benchmark: bool = True
    # activations' memory layout (lgdnet.models.layout): "auto" (channels-last on the CPU and
    # for bf16/fp16 on CUDA, contiguous for fp32 on CUDA), "channels_last" or "contiguous"
    memory_format: str = "auto"
    # torch.compile for training (lgdnet.engine.compilation): "off" (eager; the CPU runs the
    # LGD epilogue kernel), "epilogue" (the blocks' Eq. 2-3 epilogue only) or "model"
    compile: str = "off"
    tensorboard: bool = False  # also write TensorBoard events (needs `tensorboard`)
    log_every: int = 10  # a log line every N optimiser steps when no progress bar is shown
    progress: bool = True  # progress bars (on a terminal, rank 0 only)


@dataclass(frozen=True)
class Config:
    """The whole configuration of a training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "run": RunConfig}


# ---------------------------------------------------------------- values by declared type


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    """``(True, X)`` for ``X | None``; ``(False, tp)`` otherwise."""
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return True, args[0]
    return False, tp


def _type_name(tp: Any) -> str:
    optional, inner = _is_optional(tp)
    name = getattr(inner, "__name__", str(inner)) if typing.get_origin(inner) is None else str(inner)
    return f"{name} or null" if optional else name


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and for tuples, convert) a value already parsed from YAML/JSON."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got null")
    origin = typing.get_origin(inner)
    if inner is bool:
        if isinstance(value, bool):
            return value
    elif inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif inner is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif inner is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):
            return os.fspath(value)
    elif origin is tuple:
        args = typing.get_args(inner)
        if isinstance(value, (list, tuple)):
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
            if len(value) == len(args):
                return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    elif origin is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
    else:  # pragma: no cover - every field above is one of these types
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _parse_text(text: str, tp: Any, key: str) -> Any:
    """Parse a command-line override string by the field's declared type."""
    optional, inner = _is_optional(tp)
    if optional and text.strip().lower() in ("none", "null", ""):
        return None
    if inner is str:
        return text
    if inner is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {text!r}")
    if inner is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key}: expected int, got {text!r}") from None
    if inner is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key}: expected float, got {text!r}") from None
    # tuples ("1,2" or "[1, 2]") and dicts: read the text as YAML
    import yaml

    stripped = text.strip()
    if typing.get_origin(inner) is tuple and not stripped.startswith("["):
        stripped = f"[{stripped}]"
    try:
        value = yaml.safe_load(stripped)
    except yaml.YAMLError as error:
        raise ConfigError(f"{key}: cannot parse {text!r}: {error}") from None
    return _coerce(value, tp, key)


# ---------------------------------------------------------------- dicts <-> dataclasses


def config_from_dict(data: dict[str, Any], source: str | None = None) -> Config:
    """Build a :class:`Config` from nested dicts; missing keys keep their defaults.

    Raises:
        ConfigError: an unknown section or key, or a value of the wrong type; the message
            names the key and ``source`` (the file) when given.
    """
    where = f"{source}: " if source else ""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}the configuration must be a mapping of sections")
    sections = {}
    for name, section in data.items():
        if name not in _SECTIONS:
            raise ConfigError(f"{where}unknown section {name!r} (expected one of {sorted(_SECTIONS)})")
        cls = _SECTIONS[name]
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ConfigError(f"{where}{name}: expected a mapping of keys, got {section!r}")
        types_ = _field_types(cls)
        values = {}
        for key, value in section.items():
            if key not in types_:
                raise ConfigError(
                    f"{where}unknown key {name}.{key} (known: {', '.join(sorted(types_))})"
                )
            try:
                values[key] = _coerce(value, types_[key], f"{name}.{key}")
            except ConfigError as error:
                raise ConfigError(f"{where}{error}") from None
        sections[name] = cls(**values)
    config = Config(**sections)
    try:
        validate_config(config)
    except ConfigError as error:
        raise ConfigError(f"{where}{error}") from None
    return config


def config_to_dict(config: Config) -> dict[str, Any]:
    """Nested plain dicts (tuples as lists) ready for JSON or YAML."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {name: plain(dataclasses.asdict(getattr(config, name))) for name in _SECTIONS}


def load_config(path: str | os.PathLike) -> Config:
    """Read a configuration from a YAML (``.yaml``/``.yml``) or JSON file.

    Raises:
        ConfigError: the file is missing or malformed, or holds an unknown key or a value
            of the wrong type; the message names the file and the key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read configuration ({error.strerror or error})") from None
    import yaml

    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot parse configuration: {error}") from None
    return config_from_dict(data or {}, source=str(path))


def save_config(config: Config, path: str | os.PathLike) -> None:
    """Write the configuration as YAML (or JSON for a ``.json`` path)."""
    from lgdnet.atomic import write_text

    path = Path(path)
    data = config_to_dict(config)
    if path.suffix.lower() == ".json":
        write_text(path, json.dumps(data, indent=2) + "\n")
    else:
        import yaml

        write_text(path, yaml.safe_dump(data, sort_keys=False))


def apply_overrides(config: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """Return a copy of ``config`` with ``section.key=value`` overrides applied.

    Values are parsed by the field's declared type (``optim.lr=0.001``,
    ``run.stages=1,2``, ``data.train_resize=[128,171]``, ``model.dropout=none``).
    ``model.options.NAME=VALUE`` sets one extra model option (value read as YAML).

    Raises:
        ConfigError: a malformed override, an unknown key or a value of the wrong type.
    """
    sections = {name: dataclasses.asdict(getattr(config, name)) for name in _SECTIONS}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if len(parts) < 2 or parts[0] not in _SECTIONS:
            raise ConfigError(
                f"unknown key {key!r} in override (expected section.key with section one of "
                f"{sorted(_SECTIONS)})"
            )
        section, name = parts[0], parts[1]
        types_ = _field_types(_SECTIONS[section])
        if name not in types_:
            raise ConfigError(f"unknown key {key!r} (known in {section}: {', '.join(sorted(types_))})")
        if len(parts) == 3 and section == "model" and name == "options":
            import yaml

            try:
                sections["model"]["options"] = {**sections["model"]["options"], parts[2]: yaml.safe_load(text)}
            except yaml.YAMLError as error:
                raise ConfigError(f"{key}: cannot parse {text!r}: {error}") from None
            continue
        if len(parts) != 2:
            raise ConfigError(f"unknown key {key!r}")
        sections[section][name] = _parse_text(text, types_[name], key)
    new = Config(**{name: _SECTIONS[name](**values) for name, values in sections.items()})
    validate_config(new)
    return new


def stage_settings(optim: OptimConfig, stage: int) -> tuple[float, float, int]:
    """``(epochs, lr, lr_step)`` of one training stage (Sec. 4.3: each stage has its own);
    the epochs may be fractional (see :func:`epoch_plan`)."""
    if stage == 2:
        return (
            optim.epochs if optim.stage2_epochs is None else optim.stage2_epochs,
            optim.lr if optim.stage2_lr is None else optim.stage2_lr,
            optim.lr_step if optim.stage2_lr_step is None else optim.stage2_lr_step,
        )
    return optim.epochs, optim.lr, optim.lr_step


def stage_batch(optim: OptimConfig, stage: int) -> tuple[int, int]:
    """``(batch_size, micro_batch_size)`` of one stage as configured (0: the defaults);
    stage 2 may set its own (Sec. 5.4: 16 clips of 128 frames per mini-batch)."""
    if stage == 2:
        return (optim.batch_size if optim.stage2_batch_size is None else optim.stage2_batch_size,
                optim.micro_batch_size if optim.stage2_micro_batch_size is None
                else optim.stage2_micro_batch_size)
    return optim.batch_size, optim.micro_batch_size


def epoch_plan(epochs: float) -> tuple[int, float]:
    """``(number of epochs run, fraction of the last one)`` for a possibly fractional count:
    12.5 -> (13, 0.5): 12 whole epochs, then the first half of epoch 13's optimiser steps;
    50 -> (50, 1.0)."""
    whole = math.floor(epochs)
    fraction = epochs - whole
    if fraction < 1e-9:
        return int(whole), 1.0
    return int(whole) + 1, float(fraction)
