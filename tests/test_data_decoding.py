"""Decoding real and synthetic videos and frame folders; every kind of bad input."""

from __future__ import annotations

import shutil

import av
import numpy as np
import pytest
import torch
from conftest import REAL_CLIPS, index_frame, read_index

from lgdnet.data import open_video
from lgdnet.data.frame_folder import FrameFolderVideo, template_to_regex
from lgdnet.data.pyav_video import PyAVVideo
from lgdnet.errors import VideoReadError


def decode_all(path) -> np.ndarray:
    """Reference: every frame, decoded from the start with plain PyAV, in output order."""
    with av.open(str(path), metadata_errors="ignore") as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# -- real clips ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REAL_CLIPS))
def test_real_clip_metadata_and_frames(clips_dir, name):
    height, width, frames = REAL_CLIPS[name]
    with open_video(clips_dir / name) as video:
        assert (video.height, video.width) == (height, width)
        # Packed-bitstream AVI (HMDB51) holds one packet more than it has frames.
        assert frames <= video.num_frames <= frames + 1
        assert 29 < video.fps < 31
        out = video.get_frames([0, 5, 5, 2])
    assert out.dtype == torch.uint8 and out.shape == (4, height, width, 3)
    assert torch.equal(out[1], out[2]) and not torch.equal(out[0], out[1])


@pytest.mark.parametrize("name", sorted(REAL_CLIPS))
def test_real_clip_seeking_matches_sequential_decode(clips_dir, name):
    reference = decode_all(clips_dir / name)
    rng = np.random.default_rng(7)
    with open_video(clips_dir / name) as video:
        for _ in range(6):
            indices = rng.integers(0, len(reference), size=int(rng.integers(1, 12)))
            got = video.get_frames(indices.tolist()).numpy()
            np.testing.assert_array_equal(got, reference[indices])
    # A fresh source per read, as a data-loader worker does, with a late frame first.
    with open_video(clips_dir / name) as video:
        late = [len(reference) - 3, 1, len(reference) - 20]
        np.testing.assert_array_equal(video.get_frames(late).numpy(), reference[late])


def test_real_clips_with_several_keyframes_are_read_by_seeking(clips_dir):
    # The UCF101 clip has a keyframe every 12 frames, the Kinetics one at 0 and 250.
    for name in ("v_SoccerJuggling_g23_c01.avi", "R6llTwEh07w.mp4"):
        with open_video(clips_dir / name) as video:
            video.get_frames([260, 100])
            assert video._seekable, name


@pytest.mark.parametrize("name", sorted(REAL_CLIPS))
def test_consecutive_chunks_continue_the_decoder(clips_dir, name, monkeypatch):
    reference = decode_all(clips_dir / name)
    starts = []
    original = PyAVVideo._start_cursor
    monkeypatch.setattr(
        PyAVVideo, "_start_cursor", lambda self, target: (starts.append(target), original(self, target))
    )
    with open_video(clips_dir / name) as video:
        for start in range(0, len(reference), 16):
            chunk = list(range(start, min(start + 16, len(reference))))
            np.testing.assert_array_equal(video.get_frames(chunk).numpy(), reference[chunk])
        # The decoder went on from where each chunk stopped (no seek, no restart).
        assert starts == [0]
        # Frames left out earlier (skipped B-frames) are found again when asked for.
        rng = np.random.default_rng(1)
        position = 0
        for _ in range(8):
            position = min(position + int(rng.integers(1, 4)), len(reference) - 1)
            np.testing.assert_array_equal(video.get_frames([position]).numpy(), reference[[position]])


@pytest.mark.parametrize("name", sorted(REAL_CLIPS))
def test_resize_while_decoding(clips_dir, name):
    with open_video(clips_dir / name) as video:
        full = video.get_frames([3]).float()
        small = video.get_frames([3, 4], size=(120, 160))
    assert small.shape == (2, 120, 160, 3) and small.dtype == torch.uint8
    # Same picture: the mean colour survives the resize.
    assert torch.allclose(small[0].float().mean((0, 1)), full[0].mean((0, 1)), atol=4)


def test_index_past_the_end_is_clamped_to_last_frame(clips_dir):
    name = "RATRACE_wave_f_nm_np1_fr_goo_37.avi"  # metadata says 73 frames, 72 decode
    reference = decode_all(clips_dir / name)
    with open_video(clips_dir / name) as video:
        out = video.get_frames([10_000, video.num_frames - 1, 0]).numpy()
    np.testing.assert_array_equal(out[0], reference[-1])
    np.testing.assert_array_equal(out[1], reference[-1])
    np.testing.assert_array_equal(out[2], reference[0])


def test_negative_index_is_an_error(clips_dir):
    with open_video(clips_dir / "v_SoccerJuggling_g23_c01.avi") as video:
        with pytest.raises(ValueError):
            video.get_frames([-1])


# -- synthetic videos: exact indices ------------------------------------------------------

_SYNTHETIC = {
    "h264_bframes.mp4": {},
    "h264.mkv": {},
    "mpeg4_bframes.avi": {"codec": "mpeg4"},
    "mpeg4_one_gop.avi": {"codec": "mpeg4", "gop": 1000},
}


@pytest.mark.parametrize("name", sorted(_SYNTHETIC))
def test_synthetic_video_exact_indices_and_pixels(make_index_video, name):
    path = make_index_video(name, 90, **_SYNTHETIC[name])
    reference = decode_all(path)
    assert np.array_equal(read_index(reference), np.arange(90))
    rng = np.random.default_rng(3)
    with open_video(path) as video:
        assert video.num_frames == 90
        for _ in range(8):
            indices = rng.integers(0, 90, size=int(rng.integers(1, 10)))
            got = video.get_frames(indices.tolist()).numpy()
            assert np.array_equal(read_index(got), indices)
            np.testing.assert_array_equal(got, reference[indices])


def test_variable_frame_rate_indexes_by_order(make_index_video):
    gaps = np.random.default_rng(0).integers(15, 90, size=80)
    pts_ms = np.concatenate([[0], np.cumsum(gaps)[:-1]])
    for name in ("vfr.mkv", "vfr.mp4"):
        path = make_index_video(name, 80, pts_ms=pts_ms)
        with open_video(path) as video:
            assert video.num_frames == 80
            wanted = [79, 3, 41, 40, 66, 12]
            assert read_index(video.get_frames(wanted).numpy()).tolist() == wanted


def test_video_with_audio_track(clips_dir):
    # The Kinetics clip carries AAC audio: ignored.
    with av.open(str(clips_dir / "R6llTwEh07w.mp4")) as container:
        assert container.streams.audio
    with open_video(clips_dir / "R6llTwEh07w.mp4") as video:
        assert video.get_frames([0, 299]).shape == (2, 256, 340, 3)


def test_closed_video_cannot_be_read(clips_dir):
    video = open_video(clips_dir / "v_SoccerJuggling_g23_c01.avi")
    with video:
        video.get_frames([0])
    with pytest.raises(VideoReadError):
        video.get_frames([0])


# -- frame folders ------------------------------------------------------------------------


def _write_frame_folder(folder, num_frames, template="img_{:05d}.jpg", size=(48, 64)):
    import cv2

    folder.mkdir()
    for i in range(num_frames):
        image = index_frame(i, *size)[..., ::-1]  # OpenCV writes BGR
        cv2.imwrite(str(folder / template.format(i + 1)), image, [cv2.IMWRITE_JPEG_QUALITY, 98])
    return folder


def test_frame_folder(tmp_path):
    folder = _write_frame_folder(tmp_path / "video", 25)
    (folder / "notes.txt").write_text("not a frame")
    with open_video(folder) as video:
        assert isinstance(video, FrameFolderVideo)
        assert (video.num_frames, video.height, video.width) == (25, 48, 64)
        wanted = [24, 0, 7, 7, 99]
        frames = video.get_frames(wanted)
        assert frames.shape == (5, 48, 64, 3)
        assert read_index(frames.numpy()).tolist() == [24, 0, 7, 7, 24]
        assert video.get_frames([3], size=(24, 32)).shape == (1, 24, 32, 3)


def test_frame_folder_custom_template(tmp_path):
    folder = _write_frame_folder(tmp_path / "video", 6, template="frame{:04d}.png")
    with open_video(folder, frame_template="frame{:04d}.png") as video:
        assert video.num_frames == 6
        assert read_index(video.get_frames([5, 1]).numpy()).tolist() == [5, 1]
    assert template_to_regex("img_{:05d}.jpg").match("img_00012.jpg").group(1) == "00012"


# -- bad input ----------------------------------------------------------------------------


def _assert_read_error(path, match):
    with pytest.raises(VideoReadError, match=match) as info:
        with open_video(path) as video:
            video.get_frames([0, video.num_frames - 1])
    assert info.value.path == str(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    _assert_read_error(tmp_path / "nowhere.mp4", "not found")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    _assert_read_error(path, "empty")


@pytest.mark.parametrize("name", sorted(REAL_CLIPS))
def test_truncated_file(clips_dir, tmp_path, name):
    data = (clips_dir / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    _assert_read_error(path, "truncated")


def test_text_file_renamed_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are not the frames you are looking for\n" * 20)
    _assert_read_error(path, "not a video")


def test_audio_only_file(tmp_path):
    path = tmp_path / "speech.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    _assert_read_error(path, "no video stream")


def test_undecodable_frames(make_index_video, tmp_path):
    # A valid container whose video packets are noise: demuxes, but decodes to nothing.
    source = make_index_video("good.mkv", 20)
    path = tmp_path / "noise.mkv"
    rng = np.random.default_rng(0)
    with av.open(str(source)) as src, av.open(str(path), "w") as dst:
        stream_in = src.streams.video[0]
        stream_out = dst.add_stream_from_template(stream_in)
        for packet in src.demux(stream_in):
            if packet.size == 0:
                continue
            noise = av.Packet(rng.integers(0, 256, size=packet.size, dtype=np.uint8).tobytes())
            noise.pts, noise.dts, noise.time_base = packet.pts, packet.dts, packet.time_base
            noise.stream = stream_out
            dst.mux(noise)
    _assert_read_error(path, "decode")


def test_empty_frame_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    _assert_read_error(folder, "no frame")


def test_frame_folder_with_corrupt_frame(tmp_path):
    folder = _write_frame_folder(tmp_path / "video", 4)
    (folder / "img_00003.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with open_video(folder) as video:
        with pytest.raises(VideoReadError, match="img_00003.jpg"):
            video.get_frames([2])


def test_copied_file_reads_and_folder_is_not_a_file(tmp_path, clips_dir):
    # A copied real file reads the same as the original (paths need no special form).
    copy = tmp_path / "copy.avi"
    shutil.copy(clips_dir / "v_SoccerJuggling_g23_c01.avi", copy)
    with PyAVVideo(copy) as video:
        assert video.num_frames == 240
    with pytest.raises(VideoReadError, match="not a regular file"):
        PyAVVideo(tmp_path)
