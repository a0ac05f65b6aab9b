"""Optical flow: TV-L1, 8-bit quantisation and flow folders in the TSN/MMAction2 layout.

The paper's flow stream (Sec. 5.3, Tables 4-7) feeds "two-direction optical flow extracted
by TV-L1" to the networks. lgdnet stores that flow the way TSN and MMAction2 do, so flow
extracted by their tools can be read here and the other way round::

    OUT/<video_id>/flow_x_00001.jpg   flow_y_00001.jpg     # flow from frame 1 to frame 2
    OUT/<video_id>/flow_x_00002.jpg   flow_y_00002.jpg     # flow from frame 2 to frame 3
    ...

A video of F frames gives F - 1 flow frames. Each file is an 8-bit grayscale image of one
component, in pixels at the extraction resolution. Sign convention (OpenCV's):
``flow[t, y, x] = (dx, dy)`` maps pixel ``(x, y)`` of frame ``t`` to ``(x + dx, y + dy)`` in
frame ``t + 1``, so x is positive for rightward motion and y for downward motion.
Components are clipped to ``[-bound, bound]`` (default 20 px) and stored as
``round((f + bound) / (2 * bound) * 255)``: 0 is ``-bound``, 255 is ``+bound`` and zero flow
is exactly 127.5 (stored as 128, a quantisation error of ``bound / 255`` px). JPEG is the
default (as in TSN/MMAction2); PNG keeps the quantised values exactly. Folders whose files
are named ``x_00001.jpg`` / ``y_00001.jpg`` (another common layout) are read as well.

TV-L1 (Zach, Pock and Bischof 2007, the paper's [50]) comes from OpenCV's
``cv2.optflow.DualTVL1OpticalFlow`` (opencv-contrib). It is expensive on a CPU (a few flow
frames per second per core at 120x160 with OpenCV's defaults; ``benchmarks/flow_results.md``).
:data:`TVL1_FAST` loosens the stopping tolerance and uses fewer warps: several times faster,
with a mean deviation from the default flow of about one 8-bit quantisation step. Extracting whole
datasets lives in :mod:`lgdnet.data.flow_extraction`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lgdnet.errors import VideoReadError

DEFAULT_BOUND = 20.0
FLOW_ZERO_LEVEL = 127.5  # the exact 8-bit level of zero flow; stored values round it to 128
FLOW_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
FLOW_INFO_FILE = "flow_info.json"  # written next to the video folders by the extractor

# (x prefix, y prefix) of the layouts we read; the first is the one we write
_LAYOUTS = (("flow_x_", "flow_y_"), ("x_", "y_"))
_FRAME_NAME = re.compile(r"^(flow_x_|flow_y_|x_|y_)(\d+)(\.[A-Za-z]+)$")


def flow_frame_name(component: str, index: int, ext: str = ".jpg") -> str:
    """File name of one component of flow frame ``index`` (0-based) in the written layout.

    Args:
        component: ``"x"`` or ``"y"``.
        index: 0-based flow frame index; files are numbered from 1 as TSN/MMAction2 do.
        ext: ``".jpg"`` or ``".png"``.
    """
    if component not in ("x", "y"):
        raise ValueError(f"component must be 'x' or 'y', got {component!r}")
    return f"flow_{component}_{index + 1:05d}{ext}"


def quantize_flow(flow: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """Clip flow to ``[-bound, bound]`` and map it linearly onto 0..255.

    Args:
        flow: float flow in pixels, any shape (usually ``(..., H, W, 2)``, x then y).
        bound: clipping bound in pixels, > 0.

    Returns:
        uint8 array of the same shape: ``round((clip(f) + bound) / (2 * bound) * 255)``.
    """
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    flow = np.asarray(flow, dtype=np.float32)
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2.0 * bound))
    return np.rint(scaled).astype(np.uint8)


def dequantize_flow(quantized: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """Invert :func:`quantize_flow` up to its rounding (at most ``bound / 255`` px off).

    Args:
        quantized: uint8 array (or anything convertible), any shape.
        bound: the bound used when quantising.

    Returns:
        float32 array of the same shape, in pixels: ``u8 / 255 * 2 * bound - bound``.
    """
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    values = np.asarray(quantized, dtype=np.float32)
    return values * np.float32(2.0 * bound / 255.0) - np.float32(bound)


@dataclass(frozen=True)
class TVL1Params:
    """Parameters of OpenCV's Dual TV-L1 solver; the defaults are OpenCV's own.

    ``scales`` (pyramid levels, ``scale_step`` apart) bounds the largest motion found;
    ``warps``, ``inner_iterations``, ``outer_iterations`` and ``epsilon`` (the stopping
    tolerance) trade accuracy for speed.
    """

    tau: float = 0.25
    lambda_: float = 0.15  # data-term weight
    theta: float = 0.3
    scales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    gamma: float = 0.0
    median_filtering: int = 5

    def create(self) -> Any:
        """A ``cv2.optflow.DualTVL1OpticalFlow`` with these parameters."""
        import cv2

        if not hasattr(cv2, "optflow"):
            raise ImportError(
                "TV-L1 needs opencv-contrib: pip install opencv-contrib-python-headless "
                "(plain opencv-python lacks cv2.optflow)"
            )
        return cv2.optflow.DualTVL1OpticalFlow_create(
            tau=self.tau, lambda_=self.lambda_, theta=self.theta, nscales=self.scales,
            warps=self.warps, epsilon=self.epsilon, innnerIterations=self.inner_iterations,
            outerIterations=self.outer_iterations, scaleStep=self.scale_step, gamma=self.gamma,
            medianFiltering=self.median_filtering,
        )


TVL1_DEFAULT = TVL1Params()
# 4-5x faster than the default at 120x160 and 240x320; mean end-point deviation from the
# default flow 0.1-0.15 px, about one 8-bit step (0.157 px at bound 20); the pyramid is
# unchanged, so large motion is still found (benchmarks/flow_results.md).
TVL1_FAST = TVL1Params(warps=3, epsilon=0.03)


def to_gray(frames: Any) -> np.ndarray:
    """(T, H, W, 3) RGB or (T, H, W) gray uint8 (numpy or torch) -> (T, H, W) uint8."""
    import cv2

    array = frames.numpy() if hasattr(frames, "numpy") else np.asarray(frames)
    if array.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {array.dtype}")
    if array.ndim == 3:
        return np.ascontiguousarray(array)
    if array.ndim == 4 and array.shape[-1] == 3:
        return np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in array])
    raise ValueError(f"frames must be (T, H, W, 3) RGB or (T, H, W) gray, got {array.shape}")


def tvl1_flow(frames: Any, params: TVL1Params = TVL1_DEFAULT) -> np.ndarray:
    """TV-L1 flow between consecutive frames, in pixels, unquantised.

    Args:
        frames: uint8 frames, RGB ``(T, H, W, 3)`` or gray ``(T, H, W)``, numpy or torch.
        params: solver parameters.

    Returns:
        float32 flow, x (rightward positive) then y (downward positive).

    Shape:
        ``(T - 1, H, W, 2)``.
    """
    gray = to_gray(frames)
    solver = params.create()
    flows = [solver.calc(gray[t], gray[t + 1], None) for t in range(len(gray) - 1)]
    if not flows:
        return np.zeros((0, *gray.shape[1:3], 2), dtype=np.float32)
    return np.stack(flows).astype(np.float32, copy=False)


def compute_tvl1_flow(
    frames: Any, bound: float = DEFAULT_BOUND, params: TVL1Params = TVL1_DEFAULT
) -> np.ndarray:
    """TV-L1 flow between consecutive frames, clipped to ``bound`` and quantised to uint8.

    Shape:
        ``(T, H, W, 3)`` or ``(T, H, W)`` uint8 -> ``(T - 1, H, W, 2)`` uint8 (x, y).
    """
    return quantize_flow(tvl1_flow(frames, params), bound)


def _list_flow_frames(folder: Path) -> tuple[list[Path], list[Path]]:
    """The x and y files of a flow folder, in frame order; raises VideoReadError if unusable."""
    if not folder.exists():
        raise VideoReadError(folder, "flow folder does not exist")
    if not folder.is_dir():
        raise VideoReadError(folder, "is not a flow folder (not a directory)")
    found: dict[str, dict[int, Path]] = {}
    for entry in os.scandir(folder):
        match = _FRAME_NAME.match(entry.name)
        if match and match.group(3).lower() in FLOW_IMAGE_EXTENSIONS:
            prefix, number = match.group(1), int(match.group(2))
            found.setdefault(prefix, {})[number] = Path(entry.path)
    for x_prefix, y_prefix in _LAYOUTS:
        xs, ys = found.get(x_prefix, {}), found.get(y_prefix, {})
        if not xs and not ys:
            continue
        if set(xs) != set(ys):
            only = sorted(set(xs) ^ set(ys))[:3]
            raise VideoReadError(
                folder,
                f"{len(xs)} {x_prefix}* and {len(ys)} {y_prefix}* files do not pair up "
                f"(unpaired frame numbers {only})",
            )
        numbers = sorted(xs)
        if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
            missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))[:3]
            raise VideoReadError(folder, f"flow frames are not numbered contiguously "
                                         f"(missing {missing})")
        return [xs[n] for n in numbers], [ys[n] for n in numbers]
    raise VideoReadError(folder, "no flow frames (flow_x_NNNNN.jpg / flow_y_NNNNN.jpg) found")


def _read_gray(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(os.fspath(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise VideoReadError(path, "cannot decode flow image")
    return image


class FlowSource:
    """A folder of quantised flow frames, read like a :class:`~lgdnet.data.VideoSource`.

    Open with :func:`open_flow`. Frames are returned as stored (uint8, zero flow = 127.5);
    :func:`dequantize_flow` with :attr:`bound` turns them back into pixels.

    Attributes:
        path: the folder.
        num_frames: number of flow frames (video frames - 1).
        height, width: size of the stored flow images.
        fps: always ``None`` (a flow folder records no frame rate).
        bound: the clipping bound in pixels, from the extractor's ``flow_info.json`` in the
            parent folder (or the one above it, for nested video ids); else ``None``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        folder = Path(self.path)
        self._x_files, self._y_files = _list_flow_frames(folder)
        first = _read_gray(self._x_files[0])
        self.num_frames = len(self._x_files)
        self.height, self.width = int(first.shape[0]), int(first.shape[1])
        self.fps: float | None = None
        self.bound = _read_bound(folder)

    def get_frames(
        self, indices: Sequence[int], size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Read flow frames ``indices`` (0-based, may repeat), x then y.

        Args:
            indices: flow frame indices in ``[0, num_frames)``.
            size: optional ``(H, W)`` to resize to (on the stored 8-bit values). The values
                are not rescaled: they stay in pixels of the extraction resolution, as in
                TSN/MMAction2.

        Returns:
            uint8 tensor.

        Shape:
            ``(T, H, W, 2)`` with ``T = len(indices)``; channel 0 is x, channel 1 is y.
        """
        import cv2

        indices = [int(i) for i in indices]
        for index in indices:
            if not 0 <= index < self.num_frames:
                raise VideoReadError(self.path, f"flow frame index {index} out of range "
                                                f"[0, {self.num_frames})")
        height, width = size if size is not None else (self.height, self.width)
        out = np.empty((len(indices), height, width, 2), dtype=np.uint8)
        decoded: dict[int, np.ndarray] = {}
        for position, index in enumerate(indices):
            if index not in decoded:  # decode each frame once however often it is asked for
                components = []
                for file in (self._x_files[index], self._y_files[index]):
                    image = _read_gray(file)
                    if image.shape != (self.height, self.width):
                        raise VideoReadError(
                            file, f"flow image is {image.shape[1]}x{image.shape[0]}, the "
                                  f"folder's first is {self.width}x{self.height}")
                    components.append(image)
                pair = np.stack(components, -1)
                if size is not None and (height, width) != (self.height, self.width):
                    # area averaging when shrinking (no aliasing), bilinear when enlarging
                    shrink = height * width < self.height * self.width
                    pair = cv2.resize(pair, (width, height), interpolation=cv2.INTER_AREA
                                      if shrink else cv2.INTER_LINEAR)
                decoded[index] = pair
            out[position] = decoded[index]
        return torch.from_numpy(out)

    def close(self) -> None:
        """Nothing to release (files are opened per read); present for VideoSource parity."""

    def __enter__(self) -> FlowSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (f"FlowSource({self.path!r}, num_frames={self.num_frames}, "
                f"size={self.height}x{self.width})")


def _read_bound(folder: Path) -> float | None:
    """The bound from the extractor's ``flow_info.json`` in the nearest of a few ancestors
    (video ids may be nested: ``OUT/<class>/<video>``)."""
    for ancestor in list(folder.resolve().parents)[:3]:
        info = ancestor / FLOW_INFO_FILE
        if info.is_file():
            try:
                return float(json.loads(info.read_text())["bound"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
    return None


def open_flow(path: str | os.PathLike) -> FlowSource:
    """Open a flow folder (``flow_x_00001.jpg``, ``flow_y_00001.jpg``, ...).

    Raises:
        VideoReadError: the folder is missing, empty, has unpaired or non-contiguous x/y
            files, or its first image cannot be decoded.
    """
    return FlowSource(path)


def count_flow_frames(path: str | os.PathLike) -> int:
    """Number of flow frames in a folder (checks pairing, decodes nothing)."""
    return len(_list_flow_frames(Path(path))[0])
