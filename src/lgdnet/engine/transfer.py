"""Fine-tuning: start a network from any lgdnet checkpoint (Sec. 5.6) and say what happened.

``model.init_checkpoint`` names a classification checkpoint of either stage and any class
count. :func:`load_for_finetuning` fills the network from it by name:

* the **backbone** (everything but ``head.``) must fit exactly: a checkpoint of another
  architecture, block variant or input modality (``in_channels``) is refused with a
  :class:`~lgdnet.errors.CheckpointError` that names the difference, never loaded in part;
* the **classifier** is loaded when the checkpoint names the same classes and has a head of
  the same form (stage, sketch size); with the same classes in another order its rows are
  mapped by name (with a warning); otherwise it is left out and the network's freshly
  initialised classifier (Xavier, zero bias, Sec. 5.2) is kept.

The :class:`TransferReport` lists, by name, what was loaded, re-initialised and left out;
training logs it and writes it to ``run_dir/init_report.json``. The ImageNet 2D path
(``model.init=imagenet``) reports through :func:`imagenet_report` in the same form.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from lgdnet.errors import CheckpointError

log = logging.getLogger(__name__)

HEAD_PREFIX = "head."


@dataclass
class TransferReport:
    """What :func:`load_for_finetuning` (or an ImageNet initialisation) did, key by key.

    Attributes:
        source: the checkpoint or state-dict file.
        source_model: the checkpoint's model name (``build_args["name"]``), if known.
        source_stage: the checkpoint's training stage (1 or 2; 0 for a 2D state dict).
        source_classes: the checkpoint's class names.
        loaded: the network's keys filled from the file.
        reinitialised: the network's keys kept at their fresh initialisation.
        left_out: the file's keys not used.
        reasons: why, for ``"reinitialised"`` and ``"left_out"`` (and ``"classes"``).
    """

    source: str
    source_model: str = ""
    source_stage: int = 0
    source_classes: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """A short account for the log: groups of names (the full lists are in
        :meth:`to_dict`)."""
        what = f"{self.source}" + (f" ({self.source_model}, stage {self.source_stage}, "
                                   f"{len(self.source_classes)} classes)" if self.source_model else "")
        lines = [f"initialised from {what}"]
        lines.append(f"  loaded {len(self.loaded)} tensors: {group_names(self.loaded)}")
        for kind in ("reinitialised", "left_out"):
            names = getattr(self, kind)
            if names:
                reason = self.reasons.get(kind, "")
                label = {"reinitialised": "re-initialised", "left_out": "left out"}[kind]
                lines.append(f"  {label} {len(names)} tensors: "
                             f"{group_names(names)}" + (f" ({reason})" if reason else ""))
        if "classes" in self.reasons and self.reasons["classes"] != self.reasons.get("reinitialised"):
            lines.append(f"  classes: {self.reasons['classes']}")
        return lines


def group_names(names: list[str], limit: int = 12) -> str:
    """Key names grouped for reading: backbone keys by their top-level module
    (``layer3``), head keys in full (``head.global_classifier.weight``)."""
    groups: list[str] = []
    for name in names:
        group = name if name.startswith(HEAD_PREFIX) else name.split(".")[0]
        if group not in groups:
            groups.append(group)
    if not groups:
        return "none"
    more = f", ... ({len(groups) - limit} more)" if len(groups) > limit else ""
    return ", ".join(groups[:limit]) + more


def _class_mapping(source: list[str], target: list[str]) -> tuple[str, list[int] | None]:
    """``("same" | "reordered" | "different" | "unknown", rows)``: ``rows[i]`` is the
    checkpoint's row of the run's class ``i`` when the classes are the same set."""
    if not source:
        return "unknown", None
    if list(source) == list(target):
        return "same", list(range(len(target)))
    if len(set(source)) == len(source) and sorted(source) == sorted(target):
        index = {name: i for i, name in enumerate(source)}
        return "reordered", [index[name] for name in target]
    return "different", None


def _class_rows_keys(model: torch.nn.Module, num_classes: int) -> set[str]:
    """Head tensors with one row per class: the classifiers' (``nn.Linear``) weights and
    biases."""
    keys = set()
    for name, module in model.get_classifier().named_modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == num_classes:
            prefix = f"{HEAD_PREFIX}{name}." if name else HEAD_PREFIX
            keys |= {f"{prefix}weight", f"{prefix}bias"}
    return keys


def check_backbone(model: torch.nn.Module, weights: dict[str, torch.Tensor],
                   metadata: dict[str, Any], source: str | os.PathLike) -> None:
    """Refuse a checkpoint whose backbone does not fit ``model`` exactly.

    Raises:
        CheckpointError: another input modality (``in_channels``), or backbone tensors
            missing, extra or of other shapes (another architecture or block variant);
            the message names the checkpoint's model and the first differing keys.
    """
    build = metadata.get("build_args") or {}
    theirs = f"{build.get('name', '?')} ({build.get('diffusion', '?')} diffusion)"
    ours = f"{(getattr(model, 'build_args', None) or {}).get('name', type(model).__name__)} " \
           f"({getattr(model, 'diffusion', '?')} diffusion)"
    in_channels = build.get("in_channels")
    if in_channels is not None and in_channels != getattr(model, "in_channels", in_channels):
        modality = ((metadata.get("config") or {}).get("data") or {}).get("modality", "?")
        raise CheckpointError(
            f"{source}: the checkpoint takes {in_channels}-channel input (data.modality "
            f"{modality!r}); this network takes {model.in_channels} (check data.modality and "
            "model.in_channels): an RGB checkpoint does not initialise a flow network")
    state = model.state_dict()
    backbone = {k for k in state if not k.startswith(HEAD_PREFIX)}
    given = {k for k in weights if not k.startswith(HEAD_PREFIX)}
    missing = sorted(backbone - given)
    extra = sorted(given - backbone)
    shapes = sorted(k for k in backbone & given if tuple(weights[k].shape) != tuple(state[k].shape))
    problems = []
    if missing:
        problems.append(f"it lacks {len(missing)} of this network's tensors ({', '.join(missing[:3])}"
                        f"{', ...' if len(missing) > 3 else ''})")
    if extra:
        problems.append(f"it has {len(extra)} tensors this network does not ({', '.join(extra[:3])}"
                        f"{', ...' if len(extra) > 3 else ''})")
    if shapes:
        k = shapes[0]
        problems.append(f"{len(shapes)} tensors differ in shape ({k}: {tuple(weights[k].shape)} "
                        f"in the checkpoint, {tuple(state[k].shape)} here)")
    if problems:
        raise CheckpointError(f"{source}: the checkpoint's backbone, {theirs}, does not fit this "
                              f"network, {ours}: {'; '.join(problems)}")


def load_for_finetuning(model: torch.nn.Module, path: str | os.PathLike,
                        classes: list[str]) -> TransferReport:
    """Fill ``model`` (stage 1 or 2, as the run starts) from an lgdnet checkpoint.

    The backbone is loaded whole (:func:`check_backbone`); the head when the checkpoint
    names the same classes (mapped by name when in another order) and has a head of the same
    form, else the network's fresh head is kept. Nothing is loaded in part silently.

    Args:
        model: an ``LGDNet`` as built for the run (its fresh head initialised).
        path: the checkpoint (``NAME`` or ``NAME.safetensors``).
        classes: the run's class names, index = label.

    Returns:
        The :class:`TransferReport`.

    Raises:
        CheckpointError: an unreadable file, or a backbone that does not fit.
    """
    from lgdnet.engine.checkpoint import checkpoint_paths, load_weights, read_metadata
    from lgdnet.models.network import unit_key

    weights_path = checkpoint_paths(path)[0]
    metadata = read_metadata(weights_path)
    # names of the older layout (lgdnet 0.1.0) map to the current one, as load_state_dict does
    weights = {unit_key(k): v for k, v in load_weights(weights_path).items()}
    check_backbone(model, weights, metadata, weights_path)
    source_classes = metadata.get("classes") or []
    build = metadata.get("build_args") or {}
    report = TransferReport(source=str(weights_path), source_model=str(build.get("name", "")),
                            source_stage=int(metadata.get("stage", 1)),
                            source_classes=list(source_classes))
    state = model.state_dict()
    new = {k: weights[k] for k in state if not k.startswith(HEAD_PREFIX)}
    report.loaded = sorted(new)

    head_keys = sorted(k for k in state if k.startswith(HEAD_PREFIX))
    source_head = sorted(k for k in weights if k.startswith(HEAD_PREFIX))
    mapping, rows = _class_mapping(list(source_classes), list(classes))
    num_classes = int(getattr(model, "num_classes", len(classes)))
    same_form = set(head_keys) == set(source_head)
    reason = ""
    if mapping == "unknown":
        if same_form and all(weights[k].shape == state[k].shape for k in head_keys):
            rows = list(range(num_classes))
            log.warning("%s names no classes; its classifier has %d outputs like this run's, so "
                        "it is loaded as is: check that the class order is the same", weights_path,
                        num_classes)
            report.reasons["classes"] = "the checkpoint names no classes; loaded by position"
        else:
            reason = "the checkpoint names no classes and its classifier has another form"
    elif mapping == "different":
        shared = len(set(source_classes) & set(classes))
        reason = (f"other classes: the checkpoint has {len(source_classes)}, this run "
                  f"{len(classes)}, {shared} shared by name")
    elif mapping == "reordered":
        log.warning("%s names the same %d classes as this run in another order: the "
                    "classifier's rows are mapped by class name", weights_path, len(classes))
        report.reasons["classes"] = "the same classes in another order: rows mapped by name"
    if rows is not None and not reason:
        if not same_form:
            reason = (f"the checkpoint's classifier is of stage {report.source_stage}, this run "
                      f"starts in stage {getattr(model, 'stage', 1)}")
        else:
            head = {}
            per_class = _class_rows_keys(model, num_classes)
            for key in head_keys:
                value = weights[key]
                if key in per_class and value.shape[0] == len(rows):
                    value = value[rows]  # one row per class: in the run's class order
                if tuple(value.shape) != tuple(state[key].shape):
                    reason = (f"{key} is {tuple(value.shape)} in the checkpoint and "
                              f"{tuple(state[key].shape)} here (e.g. another sketch size)")
                    break
                head[key] = value
            if not reason:
                new.update(head)
                report.loaded = sorted(new)
    if reason:
        report.reinitialised = head_keys
        report.left_out = source_head
        report.reasons["reinitialised"] = report.reasons["left_out"] = reason
        if mapping == "different":
            report.reasons["classes"] = reason
    try:
        model.load_state_dict({**state, **new}, strict=True)
    except RuntimeError as error:  # pragma: no cover - shapes were checked above
        raise CheckpointError(f"{weights_path}: weights do not fit the model ({error})") from None
    return report


def imagenet_report(load_report: Any) -> TransferReport:
    """The :class:`~lgdnet.models.init.LoadReport` of ``model.init=imagenet`` in the form of
    a :class:`TransferReport` (loaded, re-initialised by rule or left at scratch, left out)."""
    report = TransferReport(source=str(load_report.path))
    report.loaded = list(load_report.loaded)
    report.reinitialised = sorted(set(load_report.missing) | set(load_report.initialised))
    report.left_out = sorted(set(load_report.unexpected) | set(load_report.skipped))
    report.reasons["reinitialised"] = ("temporal kernels set to the identity, W^{x,g} zero, "
                                       "the new classifier, and any key the file lacks")
    report.reasons["left_out"] = "the ImageNet classifier and keys matching nothing here"
    return report


def log_report(report: TransferReport) -> None:
    """Log the report, one INFO line per group."""
    for line in report.lines():
        log.info("%s", line)
