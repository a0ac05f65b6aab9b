"""Video files decoded with PyAV (FFmpeg): keyframe seeking, threaded decoding, exact indices.

How a file is read, and why:

- **Index first, then seek.** Opening a file demuxes its video packets without decoding them
  (a few milliseconds for a 10 s clip). That gives the true number of frames (container
  metadata is often wrong or zero), the positions of the keyframes, and detects truncation.
  ``get_frames`` then seeks to the keyframe before the first wanted frame and decodes forward
  only as far as the last wanted frame, seeking again whenever a keyframe lies between two
  wanted frames. The decoder stays where it stopped, so reading a video in consecutive
  chunks decodes every frame once. Only wanted frames are converted to RGB (``rgb24``),
  optionally resized in swscale during the conversion (much cheaper than resizing tensors),
  and frames that are neither wanted nor referenced (most B-frames) are not decoded at all.
- **Frame index = display order.** Frame ``i`` is the ``i``-th frame the decoder outputs
  when the video is decoded from the start; with a variable frame rate this is still the
  ``i``-th frame, not the frame at time ``i / fps``. When seeking, frames are placed by their
  presentation timestamp among the packets' timestamps, and checked to come in order,
  starting with the keyframe, with no wanted frame missing. Files whose timestamps do not
  allow this (packed-bitstream DivX AVI, missing or duplicate timestamps), and any file on
  which a check fails, are decoded sequentially from the start, counting frames.
- **Past the end.** Indices past the last frame are clamped to the last decoded frame, so a
  frame count one too high (packed-bitstream AVI holds one packet more than it has frames)
  never fails a sample.
- **Repeated frames.** An AVI index may hold zero-length video chunks, the AVI way of saying
  "show the previous frame again" (older capture tools write them for dropped frames). The
  demuxer skips them, so the stored frames' timestamps have gaps; when the container's
  declared frame count equals the span of those timestamps, the video has that many frames
  and a frame in a gap is the stored frame before it, so frame count and timing are the
  container's (``num_frames / fps`` is its duration).
- **Truncation.** A file holding fewer than 95% of the frames its container declares (or,
  without a declared count, under half of duration x rate) is reported as truncated.
- **Rotation.** A stream's rotation metadata (a display matrix, as phones write it) is not
  applied: frames come as they are stored, and ``height``/``width`` are the stored sizes.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from lgdnet.data.decoding import VideoSource, check_file, describe_error, prepare_indices
from lgdnet.errors import VideoReadError

__all__ = ["PyAVVideo"]

# A container that declares N frames but holds fewer than this fraction of them was cut short.
_TRUNCATED_FRACTION = 0.95
# Without a declared count, the duration gives only a rough estimate: be lenient.
_TRUNCATED_FRACTION_FROM_DURATION = 0.5


class _SeekMismatch(Exception):
    """Decoded timestamps do not follow the packet index: fall back to sequential decoding."""


class PyAVVideo(VideoSource):
    """A video file decoded with PyAV, with threaded decoding and keyframe seeking.

    Args:
        path: the video file.
        num_threads: decoder threads; 0 lets FFmpeg choose (one per core). Use 1 in
            data-loader workers, which already fill the cores.

    Raises:
        VideoReadError: the file is missing, empty, not a video, has no video stream or is
            truncated.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int = 0) -> None:
        import av  # optional dependency: only needed once a file is opened

        self._av = av
        self.path = os.fspath(path)
        self._num_threads = num_threads
        self._container = None
        self._cursor: Iterator | None = None
        self._last: tuple[int, object] | None = None  # the cursor's last frame
        check_file(self.path)
        self._open()
        try:
            self._build_index()
        except VideoReadError:
            self.close()
            raise
        except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as error:
            self.close()
            raise VideoReadError(self.path, f"corrupt container ({describe_error(error)})") from None

    # -- opening and indexing -------------------------------------------------------------

    def _open(self) -> None:
        av = self._av
        try:
            # One real HMDB51 file has metadata that is not UTF-8.
            container = av.open(self.path, metadata_errors="ignore")
        except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as error:
            reason = f"not a readable video: truncated, corrupt or not a video ({describe_error(error)})"
            raise VideoReadError(self.path, reason) from None
        if not container.streams.video:
            kinds = sorted({stream.type for stream in container.streams}) or ["none"]
            container.close()
            raise VideoReadError(self.path, f"no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads
        stream.thread_count = self._num_threads
        self._container = container
        self._stream = stream
        # One reformatter per video keeps its swscale context: frame.to_ndarray(format=...)
        # builds a new one per frame, which costs more than the conversion itself.
        self._reformatter = av.video.reformatter.VideoReformatter()

    def _build_index(self) -> None:
        stream = self._stream
        self.fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 30.0)
        self.height = int(stream.codec_context.height)
        self.width = int(stream.codec_context.width)
        if self.height <= 0 or self.width <= 0:
            raise VideoReadError(self.path, "video stream has no frame size")
        pts: list[int | None] = []
        keyframe: list[bool] = []
        try:
            for packet in self._container.demux(stream):
                if packet.size:  # skip the empty flush packet at the end
                    pts.append(packet.pts)
                    keyframe.append(bool(packet.is_keyframe))
        except (self._av.error.FFmpegError, OSError) as error:
            raise VideoReadError(self.path, f"truncated or corrupt file ({describe_error(error)})") from None
        if not pts:
            raise VideoReadError(self.path, "video stream holds no frames")
        usable = all(p is not None for p in pts) and len(set(pts)) == len(pts)
        # frame -> stored frame, when zero-length chunks repeat frames (None: one to one)
        self._stored_of = self._repeated_frames(pts) if usable else None
        if self._stored_of is None:
            self._check_truncation(len(pts))
            self.num_frames = len(pts)
        else:
            self.num_frames = len(self._stored_of)

        if usable and stream.codec_context.has_b_frames:
            # A codec that reorders frames, yet timestamps that never do: they are decode
            # times (packed-bitstream DivX AVI), useless for placing frames after a seek.
            usable = any(b < a for a, b in zip(pts, pts[1:]))
        self._pts_to_index = {p: i for i, p in enumerate(sorted(pts))} if usable else {}
        # Seek by pts: MP4 and Matroska seek by presentation time (by dts, MP4 lands a whole
        # GOP early), and a keyframe's pts is never below its dts, so demuxers that index by
        # dts (AVI) land on it too.
        keyframes = sorted((self._pts_to_index[p], p) for p, k in zip(pts, keyframe) if k and usable)
        self._keyframe_index = [index for index, _ in keyframes]
        self._keyframe_pts = [p for _, p in keyframes]
        self._seekable = usable and bool(keyframes) and self._keyframe_index[0] == 0

    def _repeated_frames(self, pts: list[int]) -> np.ndarray | None:
        """For a container that declares more frames than it stores, because zero-length
        chunks repeat the previous frame (AVI), the stored frame (in display order) of each of
        the declared frames; ``None`` when every frame is stored, or when the timestamps'
        gaps do not account for the declared count (then it is truncation)."""
        declared = int(self._stream.frames or 0)
        if declared <= len(pts):
            return None
        ordered = sorted(pts)
        # the frames' timestamps count frames (AVI: time base 1 / rate); a gap of k ticks is
        # k - 1 repeats. Leading empty chunks (pts starting above 0) repeat the first frame.
        for origin in (0, ordered[0]):
            span = ordered[-1] - origin + 1
            if origin <= ordered[0] and abs(span - declared) <= 1:
                slots = np.arange(origin, origin + span)
                stored = np.searchsorted(np.asarray(ordered), slots, side="right") - 1
                return np.maximum(stored, 0)
        return None

    def _check_truncation(self, num_packets: int) -> None:
        stream = self._stream
        declared = int(stream.frames or 0)
        if declared > 0:
            if num_packets < _TRUNCATED_FRACTION * declared - 1:
                raise VideoReadError(
                    self.path,
                    f"truncated: the container declares {declared} frames, "
                    f"only {num_packets} are present",
                )
            return
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif self._container.duration is not None:
            duration = self._container.duration / 1_000_000
        if duration and num_packets < _TRUNCATED_FRACTION_FROM_DURATION * duration * self.fps:
            raise VideoReadError(
                self.path,
                f"truncated: {duration:.2f} s at {self.fps:g} fps declared, "
                f"only {num_packets} frames present",
            )

    # -- reading --------------------------------------------------------------------------

    def get_frames(
        self, indices: Sequence[int], size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        if self._container is None:
            raise VideoReadError(self.path, "video is closed")
        wanted_all = prepare_indices(indices, self.num_frames)
        if wanted_all.size == 0:
            height, width = size if size is not None else (self.height, self.width)
            return torch.empty((0, height, width, 3), dtype=torch.uint8)
        if self._stored_of is not None:  # a repeated frame is the stored frame before it
            wanted_all = self._stored_of[wanted_all]
        wanted = np.unique(wanted_all).tolist()  # sorted
        av = self._av
        try:
            try:
                decoded = self._read(wanted, size)
            except _SeekMismatch:
                self._seekable = False  # this file's timestamps cannot be trusted
                self._drop_cursor()
                decoded = self._read(wanted, size)
        except _SeekMismatch:  # cannot happen when counting frames; never let it escape
            self._drop_cursor()
            raise VideoReadError(self.path, "frames come out of order") from None
        except VideoReadError:
            raise
        except (av.error.FFmpegError, OSError, ValueError, RuntimeError, MemoryError) as error:
            self._drop_cursor()
            raise VideoReadError(self.path, f"cannot decode frames ({describe_error(error)})") from None
        return torch.from_numpy(np.stack([decoded[int(i)] for i in wanted_all]))

    def _to_array(self, frame, size: tuple[int, int] | None) -> np.ndarray:
        height, width = size if size is not None else (None, None)
        return self._reformatter.reformat(frame, width, height, "rgb24", threads=1).to_ndarray()

    def _keyframe_before(self, index: int) -> int:
        return self._keyframe_index[bisect.bisect_right(self._keyframe_index, index) - 1]

    def _read(self, wanted: list[int], size: tuple[int, int] | None) -> dict[int, np.ndarray]:
        """Decode the sorted unique ``wanted`` frames, reusing the decoder where it stopped."""
        # Read by the seeking cursor to skip unwanted B-frames (see _frames_by_timestamp).
        self._wanted, self._last_wanted = set(wanted), wanted[-1]
        decoded: dict[int, np.ndarray] = {}
        k = 0
        while k < len(wanted):
            target = wanted[k]
            fresh = not self._cursor_can_reach(target)
            if fresh:
                self._start_cursor(target)
            for index, frame in self._cursor:
                self._last = (index, frame)
                if index < target:
                    continue
                if index > target:
                    # A wanted frame was not output: skipped as unwanted by an earlier call
                    # (restart here), or the timestamps lie (fall back, see get_frames).
                    if fresh or not self._seekable:
                        raise _SeekMismatch
                    self._drop_cursor()
                    break
                decoded[index] = self._to_array(frame, size)
                k += 1
                if k == len(wanted):
                    break
                target = wanted[k]
                if self._seekable and self._keyframe_before(target) > index + 1:
                    break  # seeking to the next wanted frame's keyframe is cheaper
            else:  # the decoder ran out of frames: the rest clamp to the last one
                self._cursor = None
                if self._last is None:
                    if self._seekable:
                        raise _SeekMismatch  # nothing after the seek: try from the start
                    raise VideoReadError(self.path, "no frame could be decoded")
                last = self._to_array(self._last[1], size)
                for index in wanted[k:]:
                    decoded[index] = last
                break
        return decoded

    def _cursor_can_reach(self, target: int) -> bool:
        if self._cursor is None or self._last is None or self._last[0] >= target:
            return False
        return not self._seekable or self._keyframe_before(target) <= self._last[0] + 1

    def _drop_cursor(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
        self._cursor = None
        self._last = None

    def _start_cursor(self, target: int) -> None:
        self._drop_cursor()
        if self._seekable:
            k = bisect.bisect_right(self._keyframe_index, target) - 1
            self._container.seek(self._keyframe_pts[k], backward=True, stream=self._stream)
            self._cursor = self._frames_by_timestamp(self._keyframe_index[k])
        else:
            # Reopening is the one way back to the first frame that works for every file.
            container, self._container = self._container, None
            container.close()
            self._open()
            self._cursor = self._frames_by_count()

    def _frames_by_count(self) -> Iterator[tuple[int, object]]:
        """Frames from the start of the file, numbered in the order they come out."""
        yield from enumerate(self._container.decode(self._stream))

    def _frames_by_timestamp(self, start: int) -> Iterator[tuple[int, object]]:
        """Frames from keyframe ``start`` on, placed by timestamp and checked."""
        context = self._stream.codec_context
        previous = start - 1
        for packet in self._container.demux(self._stream):
            if packet.size:
                # Frames nobody wants and nothing references (most B-frames) need not be
                # decoded at all: about a third less work on H.264. Frames past the last
                # wanted one are decoded in full: the decoder is ahead of its output, and a
                # later call may continue from here and want them.
                index = self._pts_to_index.get(packet.pts, -1)
                skip = index < self._last_wanted and index not in self._wanted
                context.skip_frame = "NONREF" if skip else "DEFAULT"
            for frame in packet.decode():
                index = self._pts_to_index.get(frame.pts)
                if index is None:
                    raise _SeekMismatch
                if index < start:
                    continue  # leading frames of an open GOP, or an early landing
                if index <= previous or (previous < start and index != start):
                    raise _SeekMismatch  # out of order, or not starting at the keyframe
                previous = index
                yield index, frame

    def close(self) -> None:
        self._drop_cursor()
        if self._container is not None:
            self._container.close()
            self._container = None
