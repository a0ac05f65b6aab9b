"""Shared test fixtures: the real clips, and tiny videos whose frames show their own index."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

CLIPS_DIR = Path(__file__).parent / "data" / "clips"

# name -> (height, width, frames) of the real clips (tests/data/clips/README.md).
REAL_CLIPS = {
    "v_SoccerJuggling_g23_c01.avi": (240, 320, 240),
    "RATRACE_wave_f_nm_np1_fr_goo_37.avi": (240, 560, 72),
    "R6llTwEh07w.mp4": (256, 340, 303),
}

# Frames of an index video: in the top half, the left side is grey 8 * (i % 32) and the right
# side 8 * (i // 32), levels far enough apart to survive lossy coding; the bottom half is a
# texture sliding one pixel per frame, so that inter frames really depend on their references.
_LEVEL = 8
_TEXTURE = np.random.default_rng(0).integers(0, 256, size=(256, 512, 3), dtype=np.uint8)


def index_frame(index: int, height: int, width: int) -> np.ndarray:
    """The RGB frame that encodes ``index`` (``(height, width, 3)`` uint8)."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    top = height // 2
    image[:top, : width // 2] = _LEVEL * (index % 32)
    image[:top, width // 2 :] = _LEVEL * (index // 32)
    image[top:] = np.roll(_TEXTURE, index, axis=1)[: height - top, :width]
    return image


def read_index(frames: np.ndarray) -> np.ndarray:
    """Recover the indices encoded by :func:`index_frame` from ``(T, H, W, 3)`` frames."""
    frames = np.asarray(frames, dtype=np.float64)
    height, width = frames.shape[1:3]
    # Sample away from the edges between regions, which lossy coding and resizing blur.
    rows = slice(height // 8, 3 * height // 8)
    low = frames[:, rows, width // 8 : 3 * width // 8].mean(axis=(1, 2, 3))
    high = frames[:, rows, 5 * width // 8 : 7 * width // 8].mean(axis=(1, 2, 3))
    return (np.rint(low / _LEVEL) + 32 * np.rint(high / _LEVEL)).astype(np.int64)


def write_index_video(
    path: Path,
    num_frames: int,
    codec: str = "libx264",
    gop: int = 12,
    size: tuple[int, int] = (64, 96),
    fps: int = 25,
    pts_ms: Sequence[int] | None = None,
) -> Path:
    """Write a video whose frame ``i`` shows ``i`` (see :func:`index_frame`) with PyAV.

    ``pts_ms`` gives each frame's timestamp in milliseconds (a variable frame rate).
    """
    import av

    height, width = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            # B-frames on, scene-cut keyframes off: a regular GOP with reordering.
            stream.options = {"crf": "4", "bf": "2", "sc_threshold": "0", "keyint_min": str(gop)}
        else:
            stream.bit_rate = 8_000_000
            stream.codec_context.max_b_frames = 2
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, height, width), format="rgb24")
            if pts_ms is not None:
                frame.pts = int(pts_ms[i])
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def clips_dir() -> Path:
    return CLIPS_DIR


@pytest.fixture
def make_index_video(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_index_video(name, num_frames, **options)`` -> path in ``tmp_path``."""

    def make(name: str, num_frames: int, **options) -> Path:
        return write_index_video(tmp_path / name, num_frames, **options)

    return make


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: tiny models gain nothing from a second thread on a small
    shared machine, and losses are bitwise reproducible for a fixed thread count only."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def two_class_dataset(tmp_path_factory):
    """The embedded dataset, two classes, 4 training clips and 1 validation clip each."""
    from lgdnet.data import write_synthetic_dataset

    out = tmp_path_factory.mktemp("synthetic")
    return write_synthetic_dataset(out, clips_per_class=5, classes=["approach", "separate"],
                                   num_frames=12, size=(48, 64), workers=1, progress=False)


def tiny_training_config(dataset, out_dir, *extra: str):
    """A seconds-long configuration: tiny LGD-3D, 8x32x32 clips, 2 epochs per stage."""
    from lgdnet.engine.config import Config, apply_overrides

    return apply_overrides(Config(), [
        "model.name=lgd3d_tiny", "model.options.base_width=4", "model.sketch_dim=32",
        "model.dropout=0.2",
        f"data.train_list={dataset.train_list}", f"data.val_list={dataset.val_list}",
        "data.num_frames=8", "data.train_resize=40,48", "data.crop_size=32",
        "data.test_short_side=32", "data.num_test_views=2", "data.num_workers=0",
        "optim.epochs=2", "optim.batch_size=4", "optim.micro_batch_size=2",
        "run.final_eval=false", "run.progress=false", f"run.out_dir={out_dir}", *extra,
    ])
