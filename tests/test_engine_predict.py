"""Predictor, lgdnet.load and feature extraction on real clips with a tiny LGD-3D."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lgdnet
from lgdnet.data.annotations import VideoRecord
from lgdnet.engine.checkpoint import save_checkpoint
from lgdnet.engine.config import config_from_dict, config_to_dict
from lgdnet.engine.features import extract_features, feature_file, pool_local
from lgdnet.engine.predict import inference_sampling, load_predictor
from lgdnet.errors import CheckpointError

CLIPS = Path(__file__).parent / "data" / "clips"
UCF = CLIPS / "v_SoccerJuggling_g23_c01.avi"
HMDB = CLIPS / "RATRACE_wave_f_nm_np1_fr_goo_37.avi"
CLASSES = ["juggle", "wave", "run", "jump", "sit", "stand", "clap"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = lgdnet.create_model("lgd3d_tiny", len(CLASSES))
    model.to_stage2(sketch_dim=64)
    config = config_from_dict({
        "model": {"name": "lgd3d_tiny", "sketch_dim": 64},
        "data": {"num_frames": 4, "frame_stride": 2, "train_resize": [32, 40], "crop_size": 32,
                 "test_short_side": 32, "num_test_views": 3},
    })
    path = tmp_path_factory.mktemp("ckpt") / "best"
    return save_checkpoint(path, model, config=config_to_dict(config), classes=CLASSES, epoch=1)


def test_test_sampling_defaults_follow_the_paper():
    # Sec. 5.2: 15 clips for LGD-3D, 10 triples for LGD-2D, whole frame
    spec_3d, spec_2d = inference_sampling({}, "3d"), inference_sampling({}, "2d")
    assert (spec_3d.num_test_views, spec_3d.num_frames, spec_3d.test_crops) == (15, 16, 1)
    assert (spec_2d.num_test_views, spec_2d.num_frames, spec_2d.scheme) == (10, 3, "segments")
    configured = inference_sampling({"data": {"num_test_views": 4, "num_frames": 8}}, "3d", crops=3)
    assert (configured.num_test_views, configured.num_frames, configured.test_crops) == (4, 8, 3)


def test_load_predict_matches_manual_view_average(checkpoint):
    predictor = lgdnet.load(str(checkpoint))
    assert predictor.classes == CLASSES and predictor.num_views == 3
    predictions = predictor.predict(UCF)
    assert len(predictions) == 5
    names = [name for name, _ in predictions]
    probabilities = [p for _, p in predictions]
    assert set(names) <= set(CLASSES) and len(set(names)) == 5
    assert probabilities == sorted(probabilities, reverse=True)

    views = predictor.load_views(UCF)
    assert views.shape == (3, 3, 4, 32, 43)  # 240x320 -> shorter side 32 (42.7), whole frame
    with torch.no_grad():
        expected = torch.softmax(predictor.model(views), dim=1).mean(0)
    for name, probability in predictions:
        assert probability == pytest.approx(expected[CLASSES.index(name)].item(), abs=1e-5)
    assert len(predictor.predict(UCF, top_k=100)) == len(CLASSES)


def test_views_option_changes_sampling(checkpoint):
    predictor = load_predictor(checkpoint, views=2, views_per_chunk=1)
    assert predictor.load_views(HMDB).shape[0] == 2
    scores = predictor.scores(HMDB)
    assert scores.shape == (len(CLASSES),) and scores.sum() == pytest.approx(1.0, abs=1e-5)


def test_memory_format_option_gives_the_same_scores(checkpoint):
    from lgdnet.models import is_channels_last

    default = load_predictor(checkpoint, views=2)  # "auto": channels-last on the CPU
    contiguous = load_predictor(checkpoint, views=2, memory_format="contiguous")
    assert is_channels_last(default.model) and not is_channels_last(contiguous.model)
    np.testing.assert_allclose(default.scores(HMDB), contiguous.scores(HMDB), atol=1e-5)


def test_features_averaged_and_per_view(checkpoint):
    predictor = lgdnet.load(str(checkpoint))
    local, global_ = predictor.features(UCF)
    per_local, per_global = predictor.features(UCF, average_views=False)
    channels = predictor.model.feature_dim
    assert global_.shape == (channels,) and local.shape[0] == channels and local.dim() == 4
    assert per_global.shape == (3, channels) and per_local.shape == (3, *local.shape)
    torch.testing.assert_close(per_global.mean(0), global_)
    torch.testing.assert_close(per_local.mean(0), local)


def test_missing_and_corrupt_checkpoints_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothing\.safetensors: checkpoint not found"):
        lgdnet.load(str(tmp_path / "nothing.safetensors"))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="corrupt.safetensors"):
        lgdnet.load(str(corrupt))


def test_pool_local_shapes():
    local = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    assert pool_local(local, "none") is local
    torch.testing.assert_close(pool_local(local, "mean"), local.mean((1, 2, 3)))
    assert pool_local(local, "time").shape == (2, 4, 5)
    with pytest.raises(ValueError):
        pool_local(local, "max")


def test_feature_file_stays_inside_out_dir(tmp_path):
    assert feature_file(tmp_path, "a/b/c") == tmp_path / "a" / "b" / "c.npz"
    assert feature_file(tmp_path, "../../etc/x") == tmp_path / "etc" / "x.npz"
    assert feature_file(tmp_path, "/abs/y") == tmp_path / "abs" / "y.npz"


def test_extract_features_resumes_and_reports_bad_videos(checkpoint, tmp_path):
    predictor = load_predictor(checkpoint, views=2)
    records = [VideoRecord(str(UCF), 0, "ucf/soccer"), VideoRecord(str(tmp_path / "gone.avi"), 1, "gone"),
               VideoRecord(str(HMDB), 1, "hmdb/wave")]
    out = tmp_path / "features"
    summary = extract_features(predictor, records, out, pooling="mean", progress=False)
    assert summary.written == 2 and summary.skipped_existing == 0
    assert [path for path, _ in summary.failed] == [str(tmp_path / "gone.avi")]
    assert not (out / "gone.npz").exists()  # not replaced by a neighbour's features
    with np.load(out / "hmdb" / "wave.npz") as data:
        assert data["local"].shape == (predictor.model.feature_dim,)
        assert int(data["label"]) == 1 and str(data["video_id"]) == "hmdb/wave"
        local, global_ = predictor.features(HMDB)
        np.testing.assert_allclose(data["global"], global_.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(data["local"], local.mean((1, 2, 3)).numpy(), rtol=1e-4,
                                   atol=1e-5)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [v["video_id"] for v in manifest["videos"]] == ["ucf/soccer", "hmdb/wave"]
    assert manifest["pooling"] == "mean" and manifest["failed"][0]["path"].endswith("gone.avi")

    before = (out / "ucf" / "soccer.npz").stat().st_mtime_ns
    again = extract_features(predictor, records, out, pooling="mean", progress=False)
    assert again.written == 0 and again.skipped_existing == 2
    assert (out / "ucf" / "soccer.npz").stat().st_mtime_ns == before
