"""Linking frame detections into action tubes (Sec. 5.6: "proposal linking and temporally
trimming in [32]", i.e. Saha et al., BMVC 2016).

Input of one video: for every frame ``t = 1..T`` the proposals' boxes ``(n_t, 4)`` (``x1, y1, x2,
y2`` pixels) and their class scores ``(n_t, K)`` (the ROI classifier's softmax, background
column removed). Output: :class:`~lgdnet.detection.types.Tube` objects with 1-based frames.

Offline linking (:func:`link_videos`, :func:`link_video`), two passes as in Saha et al.:

1. **Linking**, per class ``c``: the path ``b_1..b_T`` (one box per frame) maximising
   ``sum_t E(b_t, b_{t+1})`` with ``E = s_c(b_t) + s_c(b_{t+1}) + lambda * IoU(b_t, b_{t+1})``
   is found by Viterbi; its boxes are removed and the search repeated, for at most
   ``max_paths_per_class`` paths or until some frame has no box left.
2. **Trimming**, per path: a two-label (action / background) Viterbi over its frames with unary
   ``s_c(b_t)`` for action and ``1 - s_c(b_t)`` for background, minus ``alpha`` per label
   switch. Every maximal run of action frames at least ``min_length`` long becomes a tube.

All K classes, and up to ``batch_size`` videos, are solved as one array program. Frames with
no proposal split a video into pieces that are linked independently (Saha et al.
assume a box in every frame; a path cannot cross an empty frame).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np

from lgdnet.errors import ConfigError, DetectionDataError

from .boxes import _iou
from .types import Tube, check_boxes

TUBE_SCORES = ("mean", "path_mean")


@dataclass(frozen=True)
class LinkingConfig:
    """Parameters of :func:`link_video` (Saha et al., BMVC 2016).

    Args:
        iou_weight: ``lambda`` of the linking energy (Saha et al., after Gkioxari & Malik, CVPR
            2015); 1.0 weighs the overlap and the two scores equally.
        max_paths_per_class: paths extracted per class and video before trimming. Our default 5 (a
            UCF101-24 video rarely shows more actors); fewer when a frame runs out of boxes.
        switch_penalty: ``alpha``, subtracted per action/background label switch. Saha et al.
            pick a class-specific alpha by cross-validation; give a tuple of K values for that.
            The default 3.0 is our choice: with unaries in [0, 1] an action run needs a total
            margin ``sum_t (2 s_t - 1) > 2 alpha = 6`` to be cut out of background on both
            sides, which suppresses flicker of a few frames.
        min_length: shortest tube kept, in frames (our choice, 5: a fifth of a second at 25 fps).
        tube_score: ``"mean"`` (default), the mean class score of the tube's own boxes, as Saha
            et al. score tubes by their mean detection score; ``"path_mean"``, the mean over the
            whole untrimmed path (``path_total_score`` in the MATLAB code released with Saha
            et al.). Class scores are taken as probabilities (``1 - s`` is background).
    """

    iou_weight: float = 1.0
    max_paths_per_class: int = 5
    switch_penalty: float | tuple[float, ...] = 3.0
    min_length: int = 5
    tube_score: str = "mean"

    def __post_init__(self) -> None:
        if self.iou_weight < 0:
            raise ConfigError(f"iou_weight must be >= 0, got {self.iou_weight}")
        if self.max_paths_per_class < 1 or self.min_length < 1:
            raise ConfigError("max_paths_per_class and min_length must be >= 1")
        if np.any(np.asarray(self.switch_penalty) < 0):
            raise ConfigError(f"switch_penalty must be >= 0, got {self.switch_penalty}")
        if self.tube_score not in TUBE_SCORES:
            raise ConfigError(f"tube_score must be one of {TUBE_SCORES}, got {self.tube_score!r}")


def _stack(video: str, boxes: Sequence[np.ndarray], scores: Sequence[np.ndarray]):
    # Validate one video and pad it to (T, n_max, 4) boxes, (T, n_max, K) scores, (T, n_max) mask.
    if len(boxes) != len(scores):
        raise DetectionDataError(f"video {video!r}: {len(boxes)} frames of boxes but "
                                 f"{len(scores)} of scores")
    boxes = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in boxes]
    scores = [np.asarray(s, dtype=np.float64) for s in scores]
    counts = np.array([len(b) for b in boxes], dtype=np.int64)
    widths = {s.shape[1] for s in scores if s.ndim == 2}
    if any(s.ndim != 2 or len(s) != n for s, n in zip(scores, counts)) or len(widths) > 1:
        raise DetectionDataError(f"video {video!r}: scores of frame t must be (n_t, K) with the "
                                 "n_t of its boxes and one K for the video")
    num_classes = widths.pop() if widths else 0
    flat_boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    flat_scores = np.concatenate(scores) if scores else np.zeros((0, num_classes))
    bad_box = ~np.isfinite(flat_boxes).all(axis=1) | (flat_boxes[:, 2] < flat_boxes[:, 0]) | (
        flat_boxes[:, 3] < flat_boxes[:, 1])
    for bad, what in ((np.isnan(flat_scores).any(axis=1), "NaN class score"), (bad_box, "box")):
        if bad.any():
            frame = int(np.searchsorted(np.cumsum(counts), np.argmax(bad), side="right")) + 1
            check_boxes(video, boxes[frame - 1], f"frame {frame} proposal")
            raise DetectionDataError(f"video {video!r}: {what} at frame {frame}")
    width = int(counts.max(initial=0))
    valid = np.arange(width)[None, :] < counts[:, None]
    box_pad = np.zeros((len(boxes), width, 4))
    box_pad[valid] = flat_boxes
    score_pad = np.zeros((len(boxes), width, num_classes))
    score_pad[valid] = flat_scores
    return box_pad, score_pad, valid


def _link_batch(
    boxes: np.ndarray, scores: np.ndarray, valid: np.ndarray, lengths: np.ndarray,
    iou_weight: float, max_paths: int,
) -> tuple[np.ndarray, np.ndarray]:
    # Pass 1 for B padded pieces at once: boxes (B, T, n, 4), scores (B, T, n, K), valid (B, T, n),
    # lengths (B,) real frames (every real frame has a box). Returns paths (B, K, P, T) of box
    # indices and the number of real paths of each piece (B,). The B * K Viterbi problems run
    # as one array program, because per frame each is only an n x n max-plus step.
    num_seq, num_frames, width, num_classes = scores.shape
    per_frame = np.where(np.arange(num_frames) < lengths[:, None], valid.sum(axis=2), width)
    num_paths = np.minimum(max_paths, per_frame.min(axis=1))
    rounds = int(num_paths.max(initial=0))
    # Edge energy minus the two scores, lambda * IoU(b_t, b_{t+1}), is the same for every class;
    # laid out (T-1, n_{t+1}, n_t, B, 1) so that a step's max over b_t runs along a middle axis
    # and lands directly in the (n, B, K) layout of the next step.
    overlap = iou_weight * _iou(boxes[:, 1:, :, None, :], boxes[:, :-1, None, :, :])
    overlap = np.ascontiguousarray(overlap.transpose(1, 2, 3, 0))[..., None]
    real = valid & (np.arange(num_frames)[None, :, None] < lengths[:, None, None])
    unary = np.where(real.transpose(1, 2, 0)[..., None], scores.transpose(1, 2, 0, 3), -np.inf)
    seq, cls = np.arange(num_seq)[:, None], np.arange(num_classes)[None, :]
    frame_of = np.arange(num_frames)[None, None, :]
    last = lengths - 1
    paths = np.zeros((num_seq, num_classes, rounds, num_frames), dtype=np.int64)
    reach = np.empty((num_frames, width, num_seq, num_classes))
    for p in range(rounds):
        # reach[t, i, b, k]: best energy of a class-k path of piece b ending at box i of frame
        # t, plus s_k(b_t) (the part of the next edge that depends on b_t alone); -inf marks
        # removed and padded boxes. A one-frame piece has no edge: its best box wins.
        reach[0] = unary[0]
        end = unary[0].copy()  # (n, B, K) energies at each piece's last frame
        twice = 2.0 * unary
        for t in range(num_frames - 1):
            best = (reach[t][None] + overlap[t]).max(axis=1)  # (n_{t+1}, B, K)
            np.add(best, twice[t + 1], out=reach[t + 1])
            ending = np.flatnonzero(last == t + 1)
            if ending.size:
                end[:, ending] = best[:, ending] + unary[t + 1][:, ending]
        paths[:, :, p, :][seq, cls, last[:, None]] = end.argmax(axis=0)
        for t in range(num_frames - 2, -1, -1):
            nxt = paths[:, :, p, t + 1]  # (B, K)
            into = overlap[t][nxt, :, seq, 0]  # (B, K, n_t): lambda * IoU(., b_{t+1})
            choice = (reach[t].transpose(1, 2, 0) + into).argmax(axis=2)
            paths[:, :, p, t] = np.where((t < last)[:, None], choice, paths[:, :, p, t])
        unary[frame_of, paths[:, :, p, :], seq[:, :, None], cls[:, :, None]] = -np.inf
    return paths, num_paths


def link_paths(
    boxes: Sequence[np.ndarray], scores: Sequence[np.ndarray], iou_weight: float = 1.0,
    max_paths: int = 5,
) -> np.ndarray:
    """Pass 1 on one video piece: the best paths of every class, best first.

    Viterbi maximises ``sum_t s_c(b_t) + s_c(b_{t+1}) + iou_weight * IoU(b_t, b_{t+1})``; the
    path's boxes are removed and the search repeated (Saha et al. 2016, Sec. 3.3).

    Args:
        boxes: per frame, ``(n_t, 4)`` boxes; every frame needs at least one.
        scores: per frame, ``(n_t, K)`` class scores.
        iou_weight: ``lambda``.
        max_paths: paths per class at most (fewer when a frame has fewer boxes).

    Returns:
        ``(K, P, T)`` index of the chosen box of each class, path and frame.
    """
    box_pad, score_pad, valid = _stack("<link_paths>", boxes, scores)
    if not valid.any(axis=1).all():
        raise DetectionDataError("video '<link_paths>': every frame needs a box")
    paths, _ = _link_batch(box_pad[None], score_pad[None], valid[None],
                           np.array([len(boxes)]), iou_weight, max_paths)
    return paths[0]


def trim_paths(
    scores: np.ndarray, switch_penalty: float | np.ndarray, lengths: np.ndarray | None = None
) -> np.ndarray:
    """Pass 2: action/background labelling of paths by a two-label Viterbi (Saha et al. Sec. 3.4).

    Maximises ``sum_t u(l_t) - alpha * #{t: l_t != l_{t-1}}`` with ``u(action) = s_t`` and
    ``u(background) = 1 - s_t``; the first frame's label is free. Ties keep the label of the
    previous frame, and the last frame is background on a tie.

    Args:
        scores: ``(M, T)`` class score of each path's box in each frame (or ``(T,)``).
        switch_penalty: ``alpha``, a scalar or ``(M,)``.
        lengths: ``(M,)`` real frames of each row, the rest padding (all frames when None).

    Returns:
        Boolean array shaped like ``scores``: True where the label is action (False on padding).
    """
    scores = np.asarray(scores, dtype=np.float64)
    single = scores.ndim == 1
    scores = np.atleast_2d(scores)
    num_rows, num_frames = scores.shape
    alpha = np.broadcast_to(np.asarray(switch_penalty, dtype=np.float64), (num_rows,))
    lengths = np.full(num_rows, num_frames) if lengths is None else np.asarray(lengths)
    real = (np.arange(num_frames)[None, :] < lengths[:, None]).T  # (T, M): columns contiguous
    action = np.where(real, scores.T, 0.0)
    background = np.where(real, 1.0 - scores.T, 0.0)
    # Switching into a padded frame is free, so padding never changes the real frames' labels.
    penalty = np.where(real, alpha[None, :], 0.0)
    act, bg = action[0].copy(), background[0].copy()
    switched = np.zeros((2, num_frames, num_rows), dtype=bool)  # [into action, into background]
    for t in range(1, num_frames):
        from_bg, from_act = bg - penalty[t], act - penalty[t]
        switched[0, t], switched[1, t] = from_bg > act, from_act > bg
        act, bg = action[t] + np.maximum(act, from_bg), background[t] + np.maximum(bg, from_act)
    labels = np.zeros((num_frames, num_rows), dtype=bool)
    labels[-1] = act > bg
    for t in range(num_frames - 1, 0, -1):
        labels[t - 1] = labels[t] ^ np.where(labels[t], switched[0, t], switched[1, t])
    labels = (labels & real).T
    return labels[0] if single else labels


def _runs(mask: np.ndarray, min_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Maximal runs of True in each row of (M, T): (row, first, end exclusive), row-major order.
    edges = np.diff(np.pad(mask.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    keep = ends - starts >= min_length
    return rows[keep], starts[keep], ends[keep]


def _link_pieces(pieces: list, config: LinkingConfig) -> list[tuple[tuple, Tube]]:
    # Pieces (video, order, first frame, boxes, scores, valid) of similar length, padded to one
    # batch; returns (sort key, tube) pairs.
    lengths = np.array([len(piece[3]) for piece in pieces])
    num_frames, width = int(lengths.max()), max(piece[3].shape[1] for piece in pieces)
    num_classes = pieces[0][4].shape[2]
    box_pad = np.zeros((len(pieces), num_frames, width, 4))
    score_pad = np.zeros((len(pieces), num_frames, width, num_classes))
    valid = np.zeros((len(pieces), num_frames, width), dtype=bool)
    for b, (_, _, _, boxes, scores, mask) in enumerate(pieces):
        box_pad[b, : len(boxes), : boxes.shape[1]] = boxes
        score_pad[b, : len(boxes), : boxes.shape[1]] = scores
        valid[b, : len(boxes), : boxes.shape[1]] = mask
    paths, num_paths = _link_batch(box_pad, score_pad, valid, lengths, config.iou_weight,
                                   config.max_paths_per_class)
    rounds = paths.shape[2]
    seq = np.arange(len(pieces))[:, None, None, None]
    frames = np.arange(num_frames)[None, None, None, :]
    classes = np.arange(num_classes)[None, :, None, None]
    path_scores = score_pad[seq, frames, paths, classes]  # (B, K, P, T)
    alpha = np.broadcast_to(np.asarray(config.switch_penalty, dtype=np.float64), (num_classes,))
    alpha = np.broadcast_to(alpha[None, :, None], paths.shape[:3]).reshape(-1)
    row_length = np.repeat(lengths, num_classes * rounds)
    labels = trim_paths(path_scores.reshape(-1, num_frames), alpha, row_length)
    path_mean = path_scores.sum(axis=3).reshape(-1) / row_length
    results = []
    for row, lo, hi in zip(*_runs(labels, config.min_length)):
        b, rest = divmod(int(row), num_classes * rounds)
        c, p = divmod(rest, rounds)
        if p >= num_paths[b]:
            continue  # the piece ran out of boxes before this round
        video, order, first = pieces[b][:3]
        segment = path_scores[b, c, p, lo:hi]
        score = segment.mean() if config.tube_score == "mean" else path_mean[row]
        rows = np.column_stack([np.arange(first + lo, first + hi) + 1.0,
                                box_pad[b, np.arange(lo, hi), paths[b, c, p, lo:hi]]])
        results.append(((order, c, first, p, lo), Tube(video, c, float(score), rows)))
    return results


def link_videos(
    videos: Iterable[tuple[str, Sequence[np.ndarray], Sequence[np.ndarray]]],
    config: LinkingConfig | None = None,
    *,
    batch_size: int = 32,
) -> list[Tube]:
    """Action tubes of many videos by linking and trimming (Saha et al., BMVC 2016).

    Videos are read ``8 * batch_size`` at a time; their pieces (runs of frames with proposals)
    are sorted by length and linked ``batch_size`` at once, which is what makes a UCF101-24-
    sized test set take seconds: the per-frame work of one video is too small for numpy.

    Args:
        videos: ``(video, boxes, scores)`` triples: per frame (frame 1 first), ``(n_t, 4)``
            proposals ``x1, y1, x2, y2`` and their ``(n_t, K)`` class scores, background
            excluded. K must be the same for every video.
        config: :class:`LinkingConfig` (defaults when None).
        batch_size: pieces linked together (memory ~ ``batch_size * T * n * K`` floats).

    Returns:
        Tubes ordered by video (input order), class, start of the piece, path rank and time.

    Raises:
        DetectionDataError: bad boxes, NaN scores or mismatched shapes (names the video).
    """
    config = config or LinkingConfig()
    tubes: list[Tube] = []
    videos = iter(videos)
    num_classes = None
    while chunk := list(islice(videos, 8 * batch_size)):
        pieces = []
        for order, (video, boxes, scores) in enumerate(chunk):
            box_pad, score_pad, valid = _stack(video, boxes, scores)
            if not len(boxes):
                continue  # a video without frames has no tubes (and no K to check)
            num_classes = num_classes or score_pad.shape[2]
            if score_pad.shape[2] != num_classes:
                raise DetectionDataError(f"video {video!r}: {score_pad.shape[2]} class scores, "
                                         f"other videos have {num_classes}")
            if np.ndim(config.switch_penalty) and np.size(config.switch_penalty) != num_classes:
                raise ConfigError(f"switch_penalty has {np.size(config.switch_penalty)} values "
                                  f"for {num_classes} classes")
            for _, first, end in zip(*_runs(valid.any(axis=1)[None], 1)):
                cut = slice(first, end)
                pieces.append((video, order, first, box_pad[cut], score_pad[cut], valid[cut]))
        pieces.sort(key=lambda piece: len(piece[3]))
        results = []
        for start in range(0, len(pieces), batch_size):
            results += _link_pieces(pieces[start : start + batch_size], config)
        results.sort(key=lambda item: item[0])
        tubes += [tube for _, tube in results]
    return tubes


def link_video(
    video: str,
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    config: LinkingConfig | None = None,
) -> list[Tube]:
    """Action tubes of one video: :func:`link_videos` on ``[(video, boxes, scores)]``.

    Returns:
        Tubes ordered by class, start of the piece, path rank and time.
    """
    return link_videos([(video, boxes, scores)], config)
