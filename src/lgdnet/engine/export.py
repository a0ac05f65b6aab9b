"""Export a trained network for deployment: ONNX, checked with onnxruntime.

The exported graph is the evaluation network (``model(x)`` -> logits, BatchNorm folded into
the convolutions, :func:`lgdnet.models.fold_batchnorm`), traced by ``torch.export`` and
translated by ``torch.onnx`` (``dynamo=True``) with a dynamic batch dimension; the spatial
and temporal sizes are those of the sample clip. The file is verified by running it in
onnxruntime on that clip and comparing with PyTorch.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from lgdnet.errors import LgdnetError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote and how well onnxruntime reproduces PyTorch."""

    path: Path
    input_shape: tuple[int, ...]
    max_abs_difference: float
    sample: str  # the video the check ran on, or "random"


def _require_onnx() -> None:
    missing = [name for name in ("onnx", "onnxruntime", "onnxscript")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise LgdnetError(f"ONNX export needs {', '.join(missing)}: "
                          "pip install 'lgdnet[export]'")


def export_onnx(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    video: str | os.PathLike | None = None,
    views: int = 2,
) -> ExportReport:
    """Write the checkpoint's evaluation network as ONNX and verify it with onnxruntime.

    Args:
        checkpoint: a ``.safetensors`` checkpoint (either stage).
        out: the ``.onnx`` file to write (atomically: a failed export leaves nothing).
        video: a video whose first ``views`` test views are the sample input and the check;
            ``None``: a seeded random clip of the configured training size.
        views: how many views of ``video`` form the sample batch.

    Raises:
        LgdnetError: onnx/onnxruntime missing, or the export failed (the cause named).
        CheckpointError, VideoReadError: a bad checkpoint or video (named).
    """
    _require_onnx()
    import numpy as np
    import onnxruntime

    from lgdnet.engine.checkpoint import atomic_write
    from lgdnet.engine.predict import load_predictor

    predictor = load_predictor(checkpoint, device="cpu", fold_bn=True, memory_format="contiguous")
    model = predictor.model.eval()
    if video is not None:
        sample = predictor.load_views(video)[: max(1, views)].contiguous()
    else:
        size = model.default_input_size
        sample = torch.randn(max(1, views), model.in_channels, *size,
                             generator=torch.Generator().manual_seed(0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    batch = torch.export.Dim("batch", min=1, max=1024)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # its notes on torchvision's absent operators
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(model, (sample,), str(tmp), dynamo=True, external_data=False,
                              input_names=["clips"], output_names=["logits"],
                              dynamic_shapes={"x": {0: batch}}, verbose=False)
        data = tmp.read_bytes()
    except LgdnetError:
        raise
    except Exception as error:
        raise LgdnetError(f"{checkpoint}: ONNX export failed ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''})") from error
    finally:
        exporter_log.setLevel(level)
        tmp.unlink(missing_ok=True)
    atomic_write(out, lambda handle: handle.write(data))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: sample.numpy()})[0]
    with torch.no_grad():
        expected = model(sample).numpy()
    difference = float(np.abs(got - expected).max())
    log.debug("exported %s: input %s, largest |onnxruntime - torch| = %.3g", out,
             tuple(sample.shape), difference)
    return ExportReport(out, tuple(sample.shape), difference,
                        os.fspath(video) if video is not None else "random")
