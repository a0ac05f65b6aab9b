"""Annotated videos of detected tubes, as the examples of the paper's Fig. 5.

Each frame shows the boxes of the best tubes alive in it, in one colour per class, labelled
with the class name and the tube's score; ground-truth boxes can be drawn thin and white
beside them. Drawing is numpy; the text uses OpenCV's Hershey font when ``cv2`` is installed
(the ``video`` extra) and is left out otherwise. Frames are enlarged by an integer factor so
that text stays legible on small videos. Written as MP4 through PyAV (as
:func:`lgdnet.data.synthetic.write_video` writes videos), or as a GIF when the path ends in
``.gif`` (that needs Pillow).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .types import Tube

# Distinct colours (RGB) for classes 0, 1, 2, ...; cycled for more classes.
PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
                    (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230),
                    (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)], np.uint8)


def draw_box(frame: np.ndarray, box: Sequence[float], colour: Sequence[int],
             thickness: int = 1) -> None:
    """Draw the outline of ``box`` (``x1, y1, x2, y2`` pixels) into ``frame`` (H, W, 3) in place."""
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, x2 = np.clip([x1, x2 - 1], 0, width - 1)
    y1, y2 = np.clip([y1, y2 - 1], 0, height - 1)
    for k in range(thickness):
        frame[y1 : y2 + 1, min(x1 + k, x2)] = colour
        frame[y1 : y2 + 1, max(x2 - k, x1)] = colour
        frame[min(y1 + k, y2), x1 : x2 + 1] = colour
        frame[max(y2 - k, y1), x1 : x2 + 1] = colour


def draw_label(frame: np.ndarray, text: str, x: float, y: float,
               colour: Sequence[int]) -> None:
    """Write ``text`` on a filled tag whose bottom-left corner is ``(x, y)`` (needs cv2)."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - the boxes alone still say a lot
        return
    scale, weight = 0.4, 1
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, weight)
    x, y = int(max(0, min(x, frame.shape[1] - w - 2))), int(max(h + base + 1, y))
    frame[y - h - base - 1 : y, x : x + w + 2] = colour
    ink = (0, 0, 0) if int(np.mean(colour)) > 110 else (255, 255, 255)
    view = np.ascontiguousarray(frame)
    cv2.putText(view, text, (x + 1, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, weight,
                cv2.LINE_AA)
    frame[...] = view


def annotate_frames(
    frames: np.ndarray,
    tubes: Sequence[Tube],
    classes: Sequence[str],
    *,
    max_tubes: int = 3,
    min_score: float = 0.0,
    ground_truth: Mapping[int, Sequence[np.ndarray]] | None = None,
    scale: int = 3,
) -> np.ndarray:
    """Frames with the tubes drawn on them.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB, frame 1 first.
        tubes: the video's tubes; the ``max_tubes`` best-scoring with ``score >= min_score``
            are drawn (the linker proposes a path per class, most of them weak).
        classes: class names, by label.
        ground_truth: optional ``{label: [tube (n, 5)]}`` drawn thin and white.
        scale: integer enlargement (nearest neighbour) before drawing.

    Returns:
        ``(T, scale H, scale W, 3)`` uint8.
    """
    shown = sorted((t for t in tubes if t.score >= min_score), key=lambda t: -t.score)[:max_tubes]
    out = np.ascontiguousarray(np.repeat(np.repeat(frames, scale, axis=1), scale, axis=2))
    for gt_tubes in (ground_truth or {}).values():
        for tube in gt_tubes:
            for row in np.asarray(tube):
                t = int(row[0]) - 1
                if 0 <= t < len(out):
                    draw_box(out[t], row[1:5] * scale, (255, 255, 255), 1)
    for tube in shown:
        colour = PALETTE[tube.label % len(PALETTE)].tolist()
        name = classes[tube.label] if tube.label < len(classes) else str(tube.label)
        for row in tube.boxes:
            t = int(row[0]) - 1
            if 0 <= t < len(out):
                box = row[1:5] * scale
                draw_box(out[t], box, colour, 2)
                draw_label(out[t], f"{name} {tube.score:.2f}", box[0], box[1], colour)
    return out


def write_annotated_video(
    path: str | os.PathLike,
    video_path: str | os.PathLike,
    tubes: Sequence[Tube],
    classes: Sequence[str],
    *,
    fps: float | None = None,
    **options: object,
) -> Path:
    """Decode ``video_path``, draw ``tubes`` (see :func:`annotate_frames`, whose keyword
    arguments ``options`` are) and write ``path`` (``.mp4``, or ``.gif`` with Pillow).

    Returns:
        ``path``.
    """
    from lgdnet.data.decoding import open_video

    with open_video(video_path) as source:
        frames = source.get_frames(range(source.num_frames)).numpy()
        rate = fps or source.fps or 25
    out = annotate_frames(frames, tubes, classes, **options)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        from PIL import Image  # optional: only GIFs need it

        images = [Image.fromarray(frame) for frame in out]
        images[0].save(path, save_all=True, append_images=images[1:], loop=0,
                       duration=int(round(1000 / rate)))
        return path
    from lgdnet.data.synthetic import write_video

    even = out[:, : out.shape[1] // 2 * 2, : out.shape[2] // 2 * 2]  # 4:2:0 needs even sizes
    write_video(path, np.ascontiguousarray(even), fps=int(round(rate)), bit_rate=1_500_000)
    return path
