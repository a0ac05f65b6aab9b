"""Checkpoints that cannot run code, written so that a crash never destroys one.

A checkpoint ``NAME`` is a pair of files in one directory:

* ``NAME.safetensors``: the model weights, with string metadata holding (as JSON) the full
  configuration, the class names, the training stage, the epoch and the model's
  ``build_args``/``stage2_args``, so that :func:`load_model` rebuilds the network from this
  file alone.
* ``NAME.state.pt``: what resuming needs (optimiser, scheduler, gradient scaler, epoch, step,
  random-number-generator states, best metric, metric history), holding only tensors and
  plain containers, and read with ``torch.load(weights_only=True)``.

Each file is written by :func:`lgdnet.atomic.atomic_write`: to a temporary file in the same
directory, flushed to disk, and renamed over the old one (``os.replace`` is atomic), so an
interrupted write leaves the previous checkpoint intact (and the temporary file a killed
write leaves is removed by the next write).
"""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lgdnet.atomic import atomic_write  # noqa: F401  (re-exported: the one atomic writer)
from lgdnet.errors import CheckpointError

WEIGHTS_SUFFIX = ".safetensors"
STATE_SUFFIX = ".state.pt"


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights, state)`` paths of a checkpoint given as ``NAME``, ``NAME.safetensors``
    or ``NAME.state.pt``."""
    text = os.fspath(path)
    for suffix in (WEIGHTS_SUFFIX, STATE_SUFFIX):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
            break
    return Path(text + WEIGHTS_SUFFIX), Path(text + STATE_SUFFIX)


# ---------------------------------------------------------------- random-number generators


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's generators, as tensors and plain values
    (so that ``torch.load(weights_only=True)`` can read them back)."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": [np_name, torch.from_numpy(np.asarray(np_keys, dtype=np.int64)), int(np_pos),
                  int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py_version, py_internal, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_internal), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- saving


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    *,
    config: dict[str, Any],
    classes: list[str],
    epoch: int,
    training_state: dict[str, Any] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``NAME.safetensors`` (and ``NAME.state.pt`` when ``training_state`` is given).

    Args:
        path: ``NAME`` (suffixes are added), e.g. ``runs/x/stage1_last``.
        model: an ``LGDNet`` (``build_args``, ``stage2_args`` and ``stage`` are recorded).
        config: the full configuration as plain dicts (``config_to_dict``).
        classes: class names, index = label.
        epoch: epochs completed in the model's current stage.
        training_state: optimiser/scheduler/progress state; tensors and plain containers only.
        extra_metadata: more JSON-serialisable values for the weights' metadata.

    Returns:
        The path of the ``.safetensors`` file.
    """
    from safetensors.torch import save as safetensors_bytes

    weights_path, state_path = checkpoint_paths(path)
    # clone: safetensors refuses tensors sharing storage; contiguous + CPU for the format
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": "lgdnet",
        "config": json.dumps(config),
        "classes": json.dumps(list(classes)),
        "stage": json.dumps(int(getattr(model, "stage", 1))),
        "epoch": json.dumps(int(epoch)),
        "build_args": json.dumps(getattr(model, "build_args", None)),
        "stage2_args": json.dumps(getattr(model, "stage2_args", None)),
    }
    for key, value in (extra_metadata or {}).items():
        metadata[key] = json.dumps(value)
    data = safetensors_bytes(tensors, metadata=metadata)
    atomic_write(weights_path, lambda handle: handle.write(data))
    if training_state is not None:
        buffer = io.BytesIO()
        torch.save(training_state, buffer)
        atomic_write(state_path, lambda handle: handle.write(buffer.getvalue()))
    return weights_path


# ---------------------------------------------------------------- loading


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded metadata of a ``.safetensors`` checkpoint (config, classes, stage, ...).

    Raises:
        CheckpointError: the file is missing, truncated, corrupt or not an lgdnet checkpoint.
    """
    from safetensors import safe_open

    weights_path, _ = checkpoint_paths(path)
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: checkpoint not found")
    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({error})") from None
    if raw.get("format") != "lgdnet":
        raise CheckpointError(f"{weights_path}: not an lgdnet checkpoint (no lgdnet metadata)")
    try:
        return {key: json.loads(value) for key, value in raw.items() if key != "format"}
    except ValueError as error:
        raise CheckpointError(f"{weights_path}: corrupt metadata ({error})") from None


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` checkpoint.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt.
    """
    from safetensors.torch import load_file

    weights_path, _ = checkpoint_paths(path)
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: checkpoint not found")
    try:
        return load_file(str(weights_path), device=str(device))
    except Exception as error:
        raise CheckpointError(f"{weights_path}: cannot read weights ({error})") from None


def build_model_from_metadata(metadata: dict[str, Any], source: str | os.PathLike) -> torch.nn.Module:
    """An untrained model with the architecture recorded in a checkpoint's metadata."""
    from lgdnet.models import create_model

    build_args = metadata.get("build_args")
    if not isinstance(build_args, dict):
        raise CheckpointError(f"{source}: checkpoint metadata lacks the model's build_args")
    # the weights come from the checkpoint: no need for (or access to) pretrained files
    build_args = {**build_args, "init": "scratch"}
    build_args.pop("pretrained", None)
    try:
        model = create_model(**build_args)
        if int(metadata.get("stage", 1)) == 2:
            model.to_stage2(**(metadata.get("stage2_args") or {}))
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{source}: cannot rebuild the model from {build_args} ({error})") from None
    return model


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any], list[str]]:
    """Rebuild a trained model from its ``.safetensors`` checkpoint alone.

    Args:
        path: ``NAME`` or ``NAME.safetensors``.
        device: where to put the model.

    Returns:
        ``(model, config, classes)``: the model in eval mode with the checkpoint's weights
        (stage 1 or 2 as saved), the training configuration as plain dicts, the class names.

    Raises:
        CheckpointError: a missing, truncated or corrupt file, or weights that do not fit.
    """
    weights_path, _ = checkpoint_paths(path)
    metadata = read_metadata(weights_path)
    model = build_model_from_metadata(metadata, weights_path)
    state_dict = load_weights(weights_path)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{weights_path}: weights do not fit the model ({error})") from None
    classes = metadata.get("classes") or []
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        raise CheckpointError(f"{weights_path}: metadata 'classes' is not a list of names")
    num_classes = getattr(model, "num_classes", None)
    if classes and num_classes is not None and len(classes) != num_classes:
        raise CheckpointError(f"{weights_path}: metadata names {len(classes)} classes, the "
                              f"model has {num_classes} outputs")
    config = metadata.get("config") or {}
    if not isinstance(config, dict):
        raise CheckpointError(f"{weights_path}: metadata 'config' is not a mapping")
    model.to(device).eval()
    return model, config, list(classes)


def load_training_state(path: str | os.PathLike, complete: bool = False) -> dict[str, Any]:
    """The training state saved beside a checkpoint, read with ``weights_only=True``.

    Args:
        path: the checkpoint (``NAME``, ``NAME.safetensors`` or ``NAME.state.pt``).
        complete: also require every field of a training stage's progress (what resuming
            needs), see :func:`check_training_state`.

    Raises:
        CheckpointError: the state file is missing, truncated or holds anything but tensors
            and plain containers.
    """
    _, state_path = checkpoint_paths(path)
    if not state_path.is_file():
        raise CheckpointError(f"{state_path}: training state not found")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, unpickling refused, ...
        raise CheckpointError(f"{state_path}: cannot read training state ({error})") from None
    check_training_state(state, state_path, complete=complete)
    return state


#: What :func:`lgdnet.engine.stage.StageState` records, with the types resuming relies on.
_PROGRESS_FIELDS = {"stage": int, "epoch": int, "global_step": int, "batches_done": int,
                    "epoch_totals": dict, "best_metric": (int, float), "best_epoch": int,
                    "history": list}


def check_training_state(state: Any, source: str | os.PathLike, complete: bool = False) -> None:
    """Refuse a training state that unpickles safely but is not one lgdnet wrote: the
    optimiser, scheduler, progress and generator parts must be there, as mappings, and the
    progress fields present of the right types (with ``complete``, all of them).

    Raises:
        CheckpointError: a missing part or a part of the wrong type, named.
    """
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{source}: not a training state lgdnet wrote ({what})")

    if not isinstance(state, dict):
        raise bad(f"a {type(state).__name__}, not a mapping")
    for key, kind in (("optimizer", dict), ("scheduler", dict), ("progress", dict), ("rng", dict)):
        if key not in state:
            raise bad(f"no {key!r}")
        if not isinstance(state[key], kind):
            raise bad(f"{key!r} is a {type(state[key]).__name__}")
    progress = state["progress"]
    for key, kind in _PROGRESS_FIELDS.items():
        if key not in progress:
            if complete or key in ("epoch", "history"):
                raise bad(f"no progress[{key!r}]")
            continue
        if not isinstance(progress[key], kind) or isinstance(progress[key], bool):
            raise bad(f"progress[{key!r}] is a {type(progress[key]).__name__}")
    if not all(isinstance(record, dict) for record in progress["history"]):
        raise bad("progress['history'] holds a record that is not a mapping")
    for key in ("python", "numpy", "torch"):
        if key not in state["rng"]:
            raise bad(f"no rng[{key!r}]")


def find_resume_checkpoint(run_dir: Any, resume: bool | str) -> Any:
    """The checkpoint to continue from: ``resume`` itself when it names a checkpoint, else
    the latest ``stage{N}_last`` in the run directory ``resume`` names, or in ``run_dir``.

    Raises:
        CheckpointError: nothing to resume from.
    """
    if isinstance(resume, (str, Path)) and str(resume):
        if not Path(resume).is_dir():
            return checkpoint_paths(resume)[0]
        run_dir = resume  # a run directory: its latest checkpoint
    for name in ("stage2_last", "stage1_last"):
        weights, _ = checkpoint_paths(Path(run_dir) / name)
        if weights.is_file():
            return weights
    raise CheckpointError(f"{run_dir}: no stage1_last or stage2_last checkpoint to resume from")
