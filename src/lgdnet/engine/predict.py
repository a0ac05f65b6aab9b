"""A trained LGD network, ready to classify videos: ``lgdnet.load(checkpoint)``.

::

    import lgdnet
    predictor = lgdnet.load("runs/demo/best.safetensors")
    predictor.predict("video.mp4")          # [("approach", 0.91), ("pass_by", 0.04), ...]
    local, global_ = predictor.features("video.mp4")

A video is read with the test sampling of the checkpoint's configuration (Sec. 5.2: 15
uniformly spaced clips for LGD-3D, 10 frame triples for LGD-2D, whole frames with the shorter
side resized) and its class probabilities are the softmax scores averaged over the views,
exactly as ``lgdnet eval`` scores a video.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lgdnet.engine.evaluate import score_views, view_features
from lgdnet.engine.runtime import resolve_device


def inference_sampling(
    config: dict[str, Any] | None,
    kind: str,
    *,
    views: int | None = None,
    crops: int | None = None,
    stage: int = 1,
) -> Any:
    """The test ``SamplingSpec`` of a checkpoint: its configured sampling (clip length, frame
    size, ...) for the model's stage (a stage-2 checkpoint of the long recipe reads its
    128-frame clips), with the number of views and crops replaced where given.

    Without settings in the configuration this is the paper's protocol (Sec. 5.2): 15 clips
    (3D) or 10 frame triples (2D) per video, whole frames, shorter side 120 (3D) or 240 (2D).

    Args:
        config: the configuration saved in the checkpoint, as plain dicts (may be empty).
        kind: the model's kind, ``"3d"`` or ``"2d"``.
        views: clips or frame tuples per video.
        crops: 1 (whole frame) or 3 (three squares along the longer side).
        stage: the checkpoint's training stage (``data.stage2_*`` settings apply to 2).
    """
    from lgdnet.engine.builders import sampling_spec
    from lgdnet.engine.config import config_from_dict

    data = config_from_dict({"data": (config or {}).get("data") or {}}).data
    spec = sampling_spec(data, kind, stage)
    changes = {}
    if views is not None:
        changes["num_test_views"] = int(views)
    if crops is not None:
        changes["test_crops"] = int(crops)
    return spec.replace(**changes) if changes else spec


class Predictor:
    """Classify videos and extract their representations with a trained LGD network.

    The predictor runs its own copy of ``model`` (moved, put in eval mode, converted to the
    layout and, with ``fold_bn``, BatchNorm-folded), so the module the caller holds is left
    as it was.

    Args:
        model: a trained LGD network (stage 1 or 2).
        classes: class names, index = label.
        spec: the test ``SamplingSpec`` (see :func:`inference_sampling`).
        modality: ``"rgb"`` (video files, frame folders) or ``"flow"`` (flow folders).
        device: where the network runs.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast).
        views_per_chunk: the most views in one forward pass (bounds memory).
        memory_format: activations' layout, ``"auto"`` (see
            :func:`lgdnet.models.resolve_memory_format`), ``"channels_last"`` or
            ``"contiguous"``; the model is converted in place.
        fold_bn: fold every BatchNorm into the convolution before it
            (:func:`lgdnet.models.fold_batchnorm`): the same scores, faster.
        config: the training configuration (plain dicts), kept for reference.
        checkpoint: where the model came from, kept for reference.
        copy: work on a copy of ``model`` (``False`` hands the module over to the predictor,
            as :func:`load_predictor` does with the model it loads).
    """

    def __init__(
        self,
        model: nn.Module,
        classes: list[str],
        spec: Any,
        *,
        modality: str = "rgb",
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        views_per_chunk: int = 8,
        memory_format: str = "auto",
        fold_bn: bool = False,
        config: dict[str, Any] | None = None,
        checkpoint: str | None = None,
        copy: bool = True,
    ) -> None:
        import copy as copying

        from lgdnet.models.fusion import fold_batchnorm
        from lgdnet.models.layout import resolve_memory_format, to_memory_format

        self.device = resolve_device(device)
        if copy:
            model = copying.deepcopy(model)
        if fold_bn:
            model = fold_batchnorm(model, inplace=True)
        self.model = model.to(self.device).eval()
        to_memory_format(self.model, resolve_memory_format(memory_format, self.device, precision))
        self.classes = list(classes)
        self.spec = spec
        self.modality = modality
        self.precision = precision
        self.views_per_chunk = int(views_per_chunk)
        self.config = config or {}
        self.checkpoint = checkpoint
        if len(self.classes) != getattr(model, "num_classes", len(self.classes)):
            raise ValueError(f"{len(self.classes)} class names for a model with "
                             f"{model.num_classes} classes")

    @property
    def num_views(self) -> int:
        """Views per video: clips (or frame tuples) times crops."""
        return int(self.spec.num_test_views) * int(self.spec.test_crops)

    def dataset(self, records: list[Any], *, on_error: str = "raise") -> Any:
        """A test-mode ``VideoDataset`` of ``records`` with this predictor's sampling."""
        from lgdnet.data import VideoDataset

        return VideoDataset(records, self.spec, mode="test", on_error=on_error,
                            modality=self.modality)

    def load_views(self, path: str | os.PathLike) -> torch.Tensor:
        """All test views of one video, normalised, on the predictor's device.

        Raises:
            VideoReadError: the video is missing or cannot be decoded (names the file).

        Shape:
            ``(V, C, T, H, W)`` with V = :attr:`num_views`.
        """
        from lgdnet.data.annotations import VideoRecord

        path = os.fspath(path)
        record = VideoRecord(path=path, label=0, video_id=Path(path).stem)
        return self.dataset([record])[0]["video"].to(self.device)

    def scores(self, path: str | os.PathLike) -> np.ndarray:
        """Class probabilities of one video: softmax scores averaged over its views (Sec. 5.2).

        Shape:
            ``(num_classes,)`` float32, summing to 1.
        """
        views = self.load_views(path)
        return score_views(self.model, views, views_per_chunk=self.views_per_chunk,
                           precision=self.precision).cpu().numpy()

    def predict(self, path: str | os.PathLike, top_k: int = 5) -> list[tuple[str, float]]:
        """The ``top_k`` most probable classes of one video, most probable first.

        Returns:
            ``[(class name, probability), ...]``; ``top_k`` is clipped to the number of classes.
        """
        probabilities = self.scores(path)
        order = np.argsort(-probabilities, kind="stable")[: max(1, int(top_k))]
        return [(self.classes[i], float(probabilities[i])) for i in order]

    def features(
        self, path: str | os.PathLike, *, average_views: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The local and global representations ``(x_L, g_L)`` of one video (Sec. 3.1).

        Args:
            path: a video file or frame folder.
            average_views: average over the test views (default); ``False`` keeps one
                entry per view.

        Shape:
            averaged: local ``(C_L, T', H', W')``, global ``(C_L,)``; per view: local
            ``(V, C_L, T', H', W')``, global ``(V, C_L)``. float32 on the CPU.
        """
        local, global_ = view_features(self.model, self.load_views(path),
                                       views_per_chunk=self.views_per_chunk,
                                       precision=self.precision)
        if average_views:
            local, global_ = local.mean(0), global_.mean(0)
        return local.cpu(), global_.cpu()

    def __repr__(self) -> str:
        name = (getattr(self.model, "build_args", None) or {}).get("name", type(self.model).__name__)
        return (f"Predictor({name}, stage {getattr(self.model, 'stage', '?')}, "
                f"{len(self.classes)} classes, {self.num_views} views, device={self.device})")


def load_predictor(
    checkpoint: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    views: int | None = None,
    crops: int | None = None,
    precision: str = "fp32",
    views_per_chunk: int = 8,
    fold_bn: bool = True,
    memory_format: str = "auto",
) -> Predictor:
    """Load a checkpoint (``NAME.safetensors``) as a ready :class:`Predictor`.

    Args:
        checkpoint: the ``.safetensors`` file written by training (e.g. ``RUN/best.safetensors``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        views: clips (3D) or frame triples (2D) per video; default from the checkpoint's
            configuration, else the paper's 15 / 10 (Sec. 5.2).
        crops: 1 (whole frame, the paper's fully convolutional test) or 3.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        views_per_chunk: the most views in one forward pass.
        fold_bn: fold every BatchNorm into the convolution before it
            (:func:`lgdnet.models.fusion.fold_batchnorm`): the same scores, faster.
        memory_format: activations' layout (:class:`Predictor`); ``"auto"`` is channels-last
            on the CPU, where it is faster.

    Raises:
        CheckpointError: the file is missing, corrupt or not an lgdnet checkpoint (names it).
    """
    from lgdnet.engine.checkpoint import load_model

    resolved = resolve_device(device)
    model, config, classes = load_model(checkpoint, resolved)
    spec = inference_sampling(config, model.kind, views=views, crops=crops,
                              stage=int(getattr(model, "stage", 1)))
    modality = ((config or {}).get("data") or {}).get("modality", "rgb")
    if not classes:
        classes = [str(i) for i in range(model.num_classes)]
    return Predictor(model, classes, spec, modality=modality, device=resolved,
                     precision=precision, views_per_chunk=views_per_chunk,
                     memory_format=memory_format, fold_bn=fold_bn, config=config,
                     checkpoint=os.fspath(checkpoint), copy=False)


def match_list_classes(annotations: Any, classes: list[str], *, refuse: bool = True) -> Any:
    """The annotations with labels that index the checkpoint's ``classes``.

    A list whose class names (its ``classes.txt``, class-name labels, ``classInd.txt``, ...)
    are the checkpoint's is returned as it is; one whose names are the checkpoint's in
    another order has its labels mapped by name (a warning says so). A list without names of
    its own (index labels, no ``classes.txt``) takes the checkpoint's names.

    Args:
        annotations: :class:`~lgdnet.data.annotations.Annotations` loaded with the list's
            own classes.
        classes: the checkpoint's class names, index = classifier output.
        refuse: raise on other names (``eval``); ``False`` keeps the list's own labels and
            names with a warning (``features`` of another dataset).

    Raises:
        AnnotationError: the names differ (and ``refuse``), naming what differs; or an index
            label out of range for the checkpoint's classes.
    """
    import dataclasses
    import logging

    from lgdnet.errors import AnnotationError

    log = logging.getLogger(__name__)
    own = list(annotations.classes)
    source = annotations.source
    if own == list(classes):
        return annotations
    if own == [str(i) for i in range(len(own))]:  # no names of its own: index labels
        origins = annotations.origins or [None] * len(annotations.records)
        for record, origin in zip(annotations.records, origins):
            if not 0 <= record.label < len(classes):
                raise AnnotationError(origin or source, None,
                                      f"label {record.label} is out of range for the "
                                      f"checkpoint's {len(classes)} classes")
        return dataclasses.replace(annotations, classes=list(classes))
    if sorted(own) == sorted(classes):
        lookup = {name: i for i, name in enumerate(classes)}
        records = [dataclasses.replace(r, label=lookup[own[r.label]]) for r in annotations.records]
        log.warning("%s: its classes are the checkpoint's in another order; labels are mapped "
                    "by name", source)
        return dataclasses.replace(annotations, records=records, classes=list(classes))
    missing = [name for name in own if name not in set(classes)]
    extra = [name for name in classes if name not in set(own)]

    def names(items: list[str]) -> str:
        shown = ", ".join(repr(n) for n in items[:3])
        return shown + (f" and {len(items) - 3} more" if len(items) > 3 else "")

    differences = []
    if missing:
        differences.append(f"the list has {names(missing)} that the checkpoint lacks")
    if extra:
        differences.append(f"the checkpoint has {names(extra)} that the list lacks")
    reason = (f"its {len(own)} classes are not the checkpoint's {len(classes)}: "
              + "; ".join(differences))
    if refuse:
        raise AnnotationError(source, None, reason)
    log.warning("%s: %s; keeping the list's own labels and class names", source, reason)
    return annotations
