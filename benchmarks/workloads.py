"""The workloads the benchmarks time: model construction, inputs, inference and training steps.

A training step is what one iteration of training costs: forward, the stage's loss
(``lgdnet.models.heads.stage_loss``: Eq. (6) in stage 1, Eq. (7) in stage 2), backward and an
SGD step with momentum. Inference runs in eval mode under ``torch.inference_mode``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import lgdnet
from lgdnet.engine.optimizer import make_sgd
from lgdnet.models.heads import stage_loss

# The paper's ResNet-50 configurations and their small counterparts. The 3D models take
# 16x112x112 clips (Sec. 4.2), the 2D models 3 segments of 224x224 frames (Sec. 4.1, TSN).
PAPER_MODELS = ("lgd3d_r50", "p3d_r50", "lgd2d_r50", "tsn_r50")
TINY_MODELS = ("lgd3d_tiny", "p3d_tiny", "lgd2d_tiny", "tsn_tiny")
# The baseline each LGD model is compared with (same backbone, no diffusion).
BASELINE_OF = {"lgd3d_r50": "p3d_r50", "lgd2d_r50": "tsn_r50",
               "lgd3d_tiny": "p3d_tiny", "lgd2d_tiny": "tsn_tiny"}
NUM_CLASSES = 400  # Kinetics-400, the largest label set of the paper
DEFAULT_SKETCH_DIM = 8192


@dataclass(frozen=True)
class Workload:
    """One model configuration to measure.

    Args:
        model: registered model name (``lgdnet.list_models()``).
        stage: 1 (Eq. 6 head) or 2 (combination classifier, Eq. 4-5, 7).
        batch: clips per step.
        sketch_dim: Tensor Sketch dimension d in stage 2.
        memory_format: activations' layout, as ``run.memory_format``: ``"auto"`` (the
            library's default for the device and dtype), ``"channels_last"`` or ``"contiguous"``.
        dtype: ``"float32"``, or ``"bfloat16"`` for autocast on CUDA.
        fold_bn: fold BatchNorm into the convolutions, as ``lgdnet predict``/``eval`` do
            (inference only).
    """

    model: str
    stage: int = 1
    batch: int = 1
    sketch_dim: int = DEFAULT_SKETCH_DIM
    memory_format: str = "auto"
    dtype: str = "float32"
    num_classes: int = NUM_CLASSES
    fold_bn: bool = False


def build_model(work: Workload, device: torch.device) -> nn.Module:
    """Create the model of ``work`` on ``device`` (stage 2 swaps in the sketch head)."""
    torch.manual_seed(0)
    model = lgdnet.create_model(work.model, num_classes=work.num_classes)
    if work.stage == 2:
        model.to_stage2(sketch_dim=work.sketch_dim)
    model = model.to(device)
    if work.fold_bn:
        model = lgdnet.models.fold_batchnorm(model, inplace=True)
    lgdnet.models.to_memory_format(model, layout(work, device))
    return model


def layout(work: Workload, device: torch.device) -> str:
    """The memory format ``work`` runs in on ``device`` (``"auto"`` resolved as the library does)."""
    precision = "bf16" if work.dtype == "bfloat16" else "fp32"
    return lgdnet.models.resolve_memory_format(work.memory_format, device, precision)


def make_batch(model: nn.Module, work: Workload, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A random clip batch at the model's default input size, and random labels.

    Shape:
        clips: (N, C, T, H, W) with (T, H, W) = ``model.default_input_size``; labels: (N,)
    """
    generator = torch.Generator().manual_seed(1)
    t, h, w = model.default_input_size
    clips = torch.randn(work.batch, model.in_channels, t, h, w, generator=generator)
    labels = torch.randint(0, work.num_classes, (work.batch,), generator=generator)
    # contiguous whatever the model's layout, as the data loader delivers them (the first
    # convolution of a channels-last model returns a channels-last map)
    return clips.to(device), labels.to(device)


def _autocast(work: Workload, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if work.dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def inference_fn(model: nn.Module, clips: torch.Tensor, work: Workload, device: torch.device) -> Callable[[], object]:
    """One eval-mode forward pass under ``torch.inference_mode``."""
    model.eval()

    def run() -> object:
        with torch.inference_mode(), _autocast(work, device):
            return model(clips)

    return run


def train_step_fn(
    model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, work: Workload,
    device: torch.device,
) -> Callable[[], object]:
    """One training iteration: forward, ``stage_loss``, backward, SGD step (the SGD that
    ``lgdnet train`` builds: ``lgdnet.engine.optimizer.make_sgd``, its default kernel)."""
    model.train()
    # A small learning rate keeps repeated steps on random data finite (no NaN slow paths).
    optimizer = make_sgd([{"params": list(model.parameters())}], lr=1e-4, momentum=0.9,
                         weight_decay=1e-4)

    def run() -> object:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(work, device):
            loss = stage_loss(model.forward_parts(clips), labels)
        loss.backward()
        optimizer.step()
        return loss

    return run


def cuda_graphed(step: Callable[[], object], device: torch.device, warmup: int = 3) -> Callable[[], None]:
    """``step`` captured once as a CUDA graph (whole-network capture, forward, backward and
    optimiser step alike), returned as the graph's replay: the same GPU work with none of the
    CPU cost of issuing its kernels one by one. Warm-up calls run on a side stream first, as
    capture requires (they also create the optimiser's momentum buffers)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()

    def replay() -> None:
        graph.replay()

    # The graph reads and writes the memory of the model, inputs and optimiser that ``step``
    # holds: keep them alive for as long as the replay can be called.
    replay.step = step  # type: ignore[attr-defined]
    return replay


def feature_shapes(model: nn.Module, device: torch.device) -> tuple[tuple[int, ...], int]:
    """``(C_L, T', H', W')`` of x_L for one view at the default input size, and C_L of g_L."""
    t, h, w = model.default_input_size
    was_training = model.training
    model.eval()
    with torch.no_grad():
        local, global_ = model.forward_features(torch.zeros(1, model.in_channels, t, h, w, device=device))
    model.train(was_training)
    return tuple(local.shape[1:]), global_.shape[1]


def head_step_fn(
    head: nn.Module, local_shape: tuple[int, ...], global_dim: int, work: Workload,
    device: torch.device,
) -> Callable[[], object]:
    """Training step of the classifier head alone: forward on (random, non-negative) features
    x_L and g_L, ``stage_loss``, backward (into the features too, as in the full network) and
    an SGD step on the head's parameters.

    Shape:
        features: ``(N, *local_shape)`` and ``(N, global_dim)`` with N = ``work.batch``.
    """
    generator = torch.Generator().manual_seed(2)
    local = torch.rand(work.batch, *local_shape, generator=generator).to(device).requires_grad_()
    global_ = torch.rand(work.batch, global_dim, generator=generator).to(device).requires_grad_()
    labels = torch.randint(0, work.num_classes, (work.batch,), generator=generator).to(device)
    head.train()
    params = list(head.parameters())
    optimizer = make_sgd([{"params": params}], lr=1e-4, momentum=0.9, weight_decay=1e-4)

    def run() -> object:
        optimizer.zero_grad(set_to_none=True)
        local.grad = global_.grad = None
        with _autocast(work, device):
            loss = stage_loss(head.forward_parts(local, global_), labels)
        loss.backward()
        optimizer.step()
        return loss

    return run


def prepare(
    work: Workload, device: torch.device, mode: str
) -> tuple[nn.Module, Callable[[], object]]:
    """Build the model and the callable that runs one ``mode`` step ("inference" | "train" |
    "head": the classifier head's training step alone on features of the right shape)."""
    model = build_model(work, device)
    if mode == "head":
        local_shape, global_dim = feature_shapes(model, device)
        return model.head, head_step_fn(model.head, local_shape, global_dim, work, device)
    clips, labels = make_batch(model, work, device)
    if mode == "inference":
        return model, inference_fn(model, clips, work, device)
    if mode == "train":
        return model, train_step_fn(model, clips, labels, work, device)
    raise ValueError(f"unknown mode {mode!r}; expected 'inference', 'train' or 'head'")


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
