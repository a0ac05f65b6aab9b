"""Range checks of a configuration: values of the right type that no run can use.

:func:`validate_config` runs whenever a configuration is loaded or overridden
(``lgdnet.engine.config``); its message names the key, what it expects and what it got.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lgdnet.engine.compilation import COMPILE_MODES
from lgdnet.engine.optimizer import SGD_KERNELS
from lgdnet.engine.runtime import PRECISIONS
from lgdnet.errors import ConfigError
from lgdnet.models.layout import MEMORY_FORMATS

if TYPE_CHECKING:
    from lgdnet.engine.config import Config

FREEZE_BN = ("none", "partial", "all")


def validate_config(config: Config) -> None:
    """Check values that are of the right type but out of range.

    Raises:
        ConfigError: naming the offending key.
    """
    optim, model, data, run = config.optim, config.model, config.data, config.run

    def finite(value: float | None) -> bool:
        return value is None or math.isfinite(value)

    def positive(value: float | None) -> bool:
        return value is None or value > 0

    stage_epochs = {1: optim.epochs,
                    2: optim.epochs if optim.stage2_epochs is None else optim.stage2_epochs}
    checks = [
        (config.optim.precision in PRECISIONS, "optim.precision", f"one of {PRECISIONS}"),
        (optim.lr > 0 and math.isfinite(optim.lr), "optim.lr", "a finite number > 0"),
        (optim.stage2_lr is None or (optim.stage2_lr > 0 and math.isfinite(optim.stage2_lr)),
         "optim.stage2_lr", "a finite number > 0 (or null: optim.lr)"),
        (0 <= optim.momentum < 1, "optim.momentum", "in [0, 1)"),
        (optim.weight_decay >= 0 and math.isfinite(optim.weight_decay), "optim.weight_decay",
         "a finite number >= 0"),
        (0 < optim.lr_gamma <= 1, "optim.lr_gamma", "in (0, 1]"),
        (optim.grad_clip >= 0 and math.isfinite(optim.grad_clip), "optim.grad_clip",
         ">= 0 (0: no clipping)"),
        (config.optim.epochs >= 0, "optim.epochs", ">= 0"),
        (optim.stage2_epochs is None or optim.stage2_epochs >= 0, "optim.stage2_epochs",
         ">= 0 (or null: optim.epochs)"),
        (1 not in run.stages or stage_epochs[1] > 0, "optim.epochs",
         "> 0 to train stage 1 (run.stages=[2] trains stage 2 only)"),
        (2 not in run.stages or stage_epochs[2] > 0,
         "optim.stage2_epochs" if optim.stage2_epochs is not None else "optim.epochs",
         "> 0 to train stage 2 (run.stages=[1] trains stage 1 only)"),
        (config.optim.lr_step > 0, "optim.lr_step", "> 0"),
        (finite(optim.epochs) and finite(optim.stage2_epochs), "optim.epochs", "finite"),
        (positive(optim.stage2_batch_size) or optim.stage2_batch_size == 0,
         "optim.stage2_batch_size", ">= 0 (0: the paper's default; null: optim.batch_size)"),
        (optim.stage2_micro_batch_size is None or optim.stage2_micro_batch_size >= 0,
         "optim.stage2_micro_batch_size", ">= 0 (null: optim.micro_batch_size)"),
        (optim.backbone_lr_mult >= 0 and math.isfinite(optim.backbone_lr_mult),
         "optim.backbone_lr_mult", "a finite number >= 0 (0: a fixed backbone)"),
        (optim.freeze_bn in FREEZE_BN, "optim.freeze_bn", f"one of {FREEZE_BN}"),
        (optim.freeze_backbone_epochs >= 0, "optim.freeze_backbone_epochs", ">= 0"),
        (optim.sgd_kernel in SGD_KERNELS, "optim.sgd_kernel", f"one of {SGD_KERNELS}"),
        (positive(model.stage2_temporal_pool), "model.stage2_temporal_pool",
         "> 0 (or null: as in stage 1)"),
        (positive(data.stage2_num_frames), "data.stage2_num_frames", "> 0 (or null)"),
        (positive(data.stage2_frame_stride), "data.stage2_frame_stride", "> 0 (or null)"),
        (positive(optim.stage2_lr_step), "optim.stage2_lr_step", "> 0 (or null: optim.lr_step)"),
        (model.sketch_dim > 0, "model.sketch_dim", "> 0"),
        (positive(model.rank_ratio), "model.rank_ratio", "> 0"),
        (positive(model.in_channels), "model.in_channels", "> 0"),
        (positive(model.num_segments), "model.num_segments", "> 0"),
        (model.dropout is None or (finite(model.dropout) and 0 <= model.dropout < 1),
         "model.dropout", "in [0, 1)"),
        (positive(data.num_frames), "data.num_frames", "> 0"),
        (positive(data.frame_stride), "data.frame_stride", "> 0"),
        (positive(data.crop_size), "data.crop_size", "> 0"),
        (positive(data.test_short_side), "data.test_short_side", "> 0"),
        (positive(data.num_test_views), "data.num_test_views", "> 0"),
        (data.test_crops in (None, 1, 3), "data.test_crops", "1 or 3"),
        (positive(data.flow_stack), "data.flow_stack", "> 0"),
        (data.train_resize is None or min(data.train_resize) > 0, "data.train_resize",
         "two sides > 0"),
        (data.split >= 1, "data.split", ">= 1"),
        (0 <= run.seed < 2**32, "run.seed", "in [0, 2**32)"),
        (config.optim.batch_size >= 0, "optim.batch_size", ">= 0 (0: the paper's default)"),
        (config.optim.micro_batch_size >= 0, "optim.micro_batch_size", ">= 0"),
        (config.model.num_classes >= 0, "model.num_classes", ">= 0 (0: from the data)"),
        (config.model.init in ("scratch", "imagenet"), "model.init", "'scratch' or 'imagenet'"),
        (config.data.modality in ("rgb", "flow"), "data.modality", "'rgb' or 'flow'"),
        (config.data.on_error in ("raise", "skip"), "data.on_error", "'raise' or 'skip'"),
        (config.data.num_workers >= 0, "data.num_workers", ">= 0"),
        (config.data.test_views_per_item >= 0, "data.test_views_per_item", ">= 0 (0: all views)"),
        (
            len(config.run.stages) > 0
            and all(s in (1, 2) for s in config.run.stages)
            and list(config.run.stages) == sorted(set(config.run.stages)),
            "run.stages",
            "[1, 2], [1] or [2]",
        ),
        (config.run.eval_every >= 0, "run.eval_every", ">= 0 (0: never)"),
        (config.run.device in ("auto", "cpu", "cuda") or config.run.device.startswith("cuda:"),
         "run.device", "'auto', 'cpu' or 'cuda'"),
        (config.run.log_every > 0, "run.log_every", "> 0"),
        (config.run.memory_format in MEMORY_FORMATS, "run.memory_format", f"one of {MEMORY_FORMATS}"),
        (config.run.compile in COMPILE_MODES, "run.compile", f"one of {COMPILE_MODES}"),
    ]
    for ok, key, expected in checks:
        if not ok:
            section, name = key.split(".")
            value = getattr(getattr(config, section), name)
            raise ConfigError(f"{key}: expected {expected}, got {value!r}")
