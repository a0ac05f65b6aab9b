"""The command line on bad input, run as a user runs it: a subprocess, its exit code and its
one-line message (issue #13: nothing lost, nothing silently wrong).

Each case is a way a careless or unlucky user meets a failure: two runs in one folder, a
"best model" that was never written, a list whose class names are not the checkpoint's, an
empty list, a complete AVI with zero-length chunks, a full disk, a missing device, a
malformed training state, out-of-range settings, an output path that is a file. The
policy these tests hold: bad input is refused with one line naming the file, line or option
(exit 2), a failed write names the path (exit 1), an unreadable video in a list is skipped
and named, and nothing ends in a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_training_config

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["approach", "separate"]


def lgdnet(*args: str, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m lgdnet.cli ARGS`` as a user runs it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LGDNET_DEBUG": ""}
    return subprocess.run([sys.executable, "-m", "lgdnet.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def refused(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """Assert exit ``code`` and a one-line message holding every fragment; return it."""
    line = last_line(result.stderr)
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


# ---------------------------------------------------------------- shared data and a model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from lgdnet.data import write_synthetic_dataset

    out = tmp_path_factory.mktemp("bad_input_data")
    return write_synthetic_dataset(out, clips_per_class=3, classes=CLASSES, num_frames=8,
                                   size=(32, 32), val_fraction=0.34, workers=1, progress=False)


def tiny_yaml(dataset, path: Path, out_dir: Path, **sections: dict) -> Path:
    """A seconds-long run as a YAML file (1 epoch per stage, tiny LGD-3D)."""
    import yaml

    from lgdnet.engine.config import config_to_dict

    config = config_to_dict(tiny_training_config(dataset, out_dir, "optim.epochs=1",
                                                 "run.device=cpu"))
    for section, values in sections.items():
        config[section].update(values)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def checkpoint(dataset, tmp_path_factory):
    """A stage-1 checkpoint trained for one epoch on ``dataset``."""
    from lgdnet.engine.training import train

    out = tmp_path_factory.mktemp("bad_input_run")
    config = tiny_training_config(dataset, out / "run", "optim.epochs=1", "run.stages=1",
                                  "run.device=cpu")
    summary = train(config)
    return Path(summary["best_checkpoint"])


# ---------------------------------------------------------------- 1. two runs in one folder


def test_a_second_train_into_a_locked_folder_is_refused_naming_the_first(dataset, tmp_path):
    import socket

    from lgdnet.locking import output_lock

    run = tmp_path / "run"
    config = tiny_yaml(dataset, tmp_path / "run.yaml", run)
    with output_lock(run, command="lgdnet train (the first run)"):
        result = lgdnet("train", "--config", config)
    refused(result, 2, f"{run}: in use by another lgdnet process (PID {os.getpid()} on host "
                       f"{socket.gethostname()}", "lgdnet train (the first run)")
    # the refused run wrote nothing
    assert sorted(p.name for p in run.iterdir()) == [".lgdnet.lock"]


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    from lgdnet.locking import LOCK_NAME, output_lock

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a PID that no longer runs
    import socket

    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": child.pid, "host": socket.gethostname()}))
    with output_lock(tmp_path) as folder:  # the kernel's flock died with its holder
        holder = json.loads((folder / LOCK_NAME).read_text())
    assert holder["pid"] == os.getpid()


def test_a_second_extract_frames_into_a_locked_folder_is_refused(clips_dir, tmp_path):
    from lgdnet.locking import output_lock

    listing = tmp_path / "list.txt"
    listing.write_text("v_SoccerJuggling_g23_c01.avi 0\n")
    out = tmp_path / "frames"
    with output_lock(out):
        result = lgdnet("extract-frames", listing, "--root", clips_dir, "--out", out, "--quiet")
    refused(result, 2, f"{out}: in use by another lgdnet process (PID {os.getpid()}")
    assert not any(p.name.endswith(".partial") or p.is_dir() for p in out.iterdir())


# ---------------------------------------------------------------- 2. the "best model" exists


def test_eval_every_0_ends_with_a_best_model_that_exists(dataset, tmp_path):
    run = tmp_path / "run"
    config = tiny_yaml(dataset, tmp_path / "run.yaml", run, run={"eval_every": 0, "stages": [1]})
    result = lgdnet("train", "--config", config)
    assert result.returncode == 0, result.stderr[-3000:]
    best = run / "best.safetensors"
    assert f"best model: {best} (stage 1 epoch 1, the last: validation is off " \
           "(run.eval_every=0)" in result.stdout
    assert best.is_file()
    from lgdnet.engine.checkpoint import load_weights

    last = load_weights(run / "stage1_last.safetensors")
    assert all(torch.equal(tensor, last[name]) for name, tensor in load_weights(best).items())
    assert oct(best.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_checkpoint"] == str(best) and "run.eval_every=0" in summary["best_reason"]


def test_stage2_epochs_0_is_refused_before_anything_is_written(dataset, tmp_path):
    run = tmp_path / "run"
    config = tiny_yaml(dataset, tmp_path / "run.yaml", run)
    result = lgdnet("train", "--config", config, "--set", "optim.stage2_epochs=0")
    refused(result, 2, "optim.stage2_epochs: expected > 0 to train stage 2 (run.stages=[1] "
                       "trains stage 1 only), got 0.0")
    assert not run.exists()


# ---------------------------------------------------------------- 3. class names


def _list_with_classes(dataset, folder: Path, classes: list[str], labels: dict[str, str]) -> Path:
    """The validation videos, listed with ``classes.txt`` = ``classes`` and each video's
    label written as the index of its true class in ``classes``."""
    folder.mkdir()
    (folder / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    lines = []
    for line in dataset.val_list.read_text().splitlines():
        relative, label = line.split()
        name = CLASSES[int(label)]
        lines.append(f"{dataset.root / relative} {classes.index(labels.get(name, name))}\n")
    listing = folder / "val.txt"
    listing.write_text("".join(lines))
    return listing


def test_eval_refuses_a_list_whose_classes_are_not_the_checkpoints(dataset, checkpoint, tmp_path):
    listing = _list_with_classes(dataset, tmp_path / "other", ["approach", "wave"],
                                 {"separate": "wave"})
    result = lgdnet("eval", "--checkpoint", checkpoint, "--list", listing, "--device", "cpu",
                    "--workers", "0", "--no-progress", "--out", tmp_path / "eval")
    refused(result, 2, f"{listing}: its 2 classes are not the checkpoint's 2: the list has "
                       "'wave' that the checkpoint lacks; the checkpoint has 'separate'")


def test_eval_maps_a_permutation_of_the_classes_by_name(dataset, checkpoint, tmp_path):
    from lgdnet.engine.metrics import load_scores

    straight = tmp_path / "straight"
    result = lgdnet("eval", "--checkpoint", checkpoint, "--list", dataset.val_list, "--device",
                    "cpu", "--workers", "0", "--no-progress", "--out", straight, "--views", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    listing = _list_with_classes(dataset, tmp_path / "swapped", ["separate", "approach"], {})
    result = lgdnet("eval", "--checkpoint", checkpoint, "--list", listing, "--device", "cpu",
                    "--workers", "0", "--no-progress", "--out", tmp_path / "mapped", "--views", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "classes are the checkpoint's in another order; labels are mapped by name" in result.stderr
    a, b = load_scores(straight / "scores.npz"), load_scores(tmp_path / "mapped" / "scores.npz")
    assert a.labels.tolist() == b.labels.tolist() and a.classes == b.classes == CLASSES


# ---------------------------------------------------------------- 4. an empty training list


def test_an_empty_training_list_is_a_problem_and_trains_nothing(dataset, tmp_path):
    shutil.copy(dataset.classes_file, tmp_path / "classes.txt")  # names, but no videos
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here yet\n")
    result = lgdnet("check-data", empty, "--root", dataset.root, "--quiet")
    assert result.returncode == 1 and "no videos listed" in result.stdout, result.stdout
    run = tmp_path / "run"
    config = tiny_yaml(dataset, tmp_path / "run.yaml", run, data={"train_list": str(empty)})
    refused(lgdnet("train", "--config", config), 2, f"{empty}: no videos to train on")
    assert not (run / "best.safetensors").exists()


# ---------------------------------------------------------------- 5. zero-length AVI chunks


def write_repeating_avi(source: Path, path: Path, every: int = 4) -> list[int]:
    """Re-mux a real AVI with a zero-length chunk (repeat the previous frame) after every
    ``every`` stored frames, as capture tools that drop frames write it; returns, for each
    frame of the new file, the stored frame it shows."""
    import av

    shows: list[int] = []
    with av.open(str(source)) as inp, av.open(str(path), "w", format="avi") as out:
        in_stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        shift = 0
        for k, packet in enumerate(p for p in inp.demux(in_stream) if p.size):
            if k and k % every == 0:
                shift += 1  # the muxer writes an empty chunk into the gap
                shows.append(k - 1)
            packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
            packet.stream = out_stream
            out.mux(packet)
            shows.append(k)
    with av.open(str(path)) as check:  # the container declares every frame, empty or not
        assert check.streams.video[0].frames == len(shows)
    return shows


def test_an_avi_with_zero_length_chunks_is_complete(clips_dir, tmp_path):
    from lgdnet.data import open_video

    source = clips_dir / "v_SoccerJuggling_g23_c01.avi"
    repeating = tmp_path / "v_SoccerJuggling_repeats.avi"
    shows = write_repeating_avi(source, repeating)
    with open_video(source) as original, open_video(repeating) as video:
        assert video.num_frames == len(shows) == 299  # 240 stored + 59 repeats
        assert video.fps == pytest.approx(original.fps)
        frames = video.get_frames(range(video.num_frames))
        assert torch.equal(frames, original.get_frames(shows))
        # and read out of order, with seeking
        picks = [298, 5, 4, 150, 3]
        assert torch.equal(video.get_frames(picks), original.get_frames([shows[i] for i in picks]))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{repeating.name} 0\n")
    result = lgdnet("check-data", listing, "--root", tmp_path, "--quiet")
    assert result.returncode == 0 and "no problems" in result.stdout, result.stdout


# ---------------------------------------------------------------- tracebacks: full disk


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing_half_written(
        dataset, tmp_path, monkeypatch, capsys):
    import errno

    import lgdnet.atomic
    from lgdnet.cli import main

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    run = tmp_path / "run"
    config = tiny_yaml(dataset, tmp_path / "run.yaml", run)
    monkeypatch.setattr(lgdnet.atomic.os, "fsync", no_space)
    assert main(["train", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert last_line(err) == f"lgdnet train: error: {run / 'config.yaml'}: No space left on device"
    assert not (run / "config.yaml").exists()
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    from lgdnet.atomic import atomic_write, write_text

    target = tmp_path / "summary.json"
    write_text(target, "old")

    def fail(handle) -> None:
        handle.write(b"new, half")
        raise PermissionError(13, "Permission denied")

    with pytest.raises(PermissionError) as caught:
        atomic_write(target, fail)
    assert caught.value.filename == str(target)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


# ---------------------------------------------------------------- tracebacks: devices


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("how", [("--set", "run.device=cuda"), ("--device", "cuda:7")])
def test_train_on_a_missing_device_writes_nothing(dataset, tmp_path, how):
    run = tmp_path / "run"
    config = tiny_yaml(dataset, tmp_path / "run.yaml", run)
    device = how[1].split("=")[-1]
    refused(lgdnet("train", "--config", config, *how), 2,
            f"lgdnet train: error: device {device!r}: this machine has no CUDA GPU")
    assert not run.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_eval_and_features_on_a_missing_device_write_nothing(dataset, checkpoint, tmp_path):
    for command in ("eval", "features"):
        out = tmp_path / command
        args = (["eval", "--checkpoint", checkpoint, "--list", dataset.val_list] if command == "eval"
                else ["features", dataset.val_list, "--checkpoint", checkpoint])
        refused(lgdnet(*args, "--out", out, "--device", "cuda:7"), 2,
                f"lgdnet {command}: error: device 'cuda:7': this machine has no CUDA GPU")
        assert not out.exists()


def test_an_unknown_device_type_names_the_key(dataset, tmp_path):
    config = tiny_yaml(dataset, tmp_path / "run.yaml", tmp_path / "run")
    refused(lgdnet("train", "--config", config, "--set", "run.device=tpu"), 2,
            "run.device: expected 'auto', 'cpu' or 'cuda', got 'tpu'")


# ---------------------------------------------------------------- tracebacks: bad files


def test_a_training_state_of_the_wrong_structure_is_refused(dataset, checkpoint, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(checkpoint.with_name("stage1_last.safetensors"), run / "stage1_last.safetensors")
    torch.save({"optimizer": {}, "scheduler": {}, "rng": {}}, run / "stage1_last.state.pt")
    config = tiny_yaml(dataset, tmp_path / "run.yaml", run, run={"stages": [1]})
    refused(lgdnet("train", "--config", config, "--resume"), 2,
            f"{run / 'stage1_last.state.pt'}: not a training state lgdnet wrote (no 'progress')")


def test_a_checkpoint_naming_fewer_classes_than_the_model_has_is_refused(checkpoint, tmp_path, clips_dir):
    from safetensors.torch import load_file, save_file

    metadata = _metadata(checkpoint)
    metadata["classes"] = json.dumps(["approach"])
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(checkpoint)), str(bad), metadata=metadata)
    refused(lgdnet("predict", clips_dir / "R6llTwEh07w.mp4", "--checkpoint", bad, "--device", "cpu"),
            2, f"{bad}: metadata names 1 classes, the model has 2 outputs")


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata())


# ---------------------------------------------------------------- tracebacks: values


@pytest.mark.parametrize("override, message", [
    ("optim.momentum=-1", "optim.momentum: expected in [0, 1), got -1.0"),
    ("optim.weight_decay=-1", "optim.weight_decay: expected a finite number >= 0, got -1.0"),
    ("optim.stage2_lr=-1", "optim.stage2_lr: expected a finite number > 0 (or null: optim.lr), got -1.0"),
    ("optim.stage2_lr=0", "optim.stage2_lr: expected a finite number > 0 (or null: optim.lr), got 0.0"),
    ("model.sketch_dim=0", "model.sketch_dim: expected > 0, got 0"),
    ("optim.lr=inf", "optim.lr: expected a finite number > 0, got inf"),
    ("run.seed=-1", "run.seed: expected in [0, 2**32), got -1"),
])
def test_out_of_range_settings_name_the_key(override, message, tmp_path):
    result = lgdnet("train", "--train-list", tmp_path / "train.txt", "--out", tmp_path / "run",
                    "--set", override)
    assert refused(result, 2) == f"lgdnet train: error: {message}"
    assert not (tmp_path / "run").exists()


def test_options_out_of_range_and_outputs_that_are_files(dataset, checkpoint, tmp_path):
    base = ["eval", "--checkpoint", checkpoint, "--list", dataset.val_list, "--device", "cpu"]
    refused(lgdnet(*base, "--views-per-chunk", "0"), 2, "--views-per-chunk: must be >= 1, got 0")
    refused(lgdnet(*base, "--workers", "-1"), 2, "--workers: must be >= 0, got -1")
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    refused(lgdnet(*base, "--out", a_file), 2, f"{a_file}: --out {a_file} cannot be created: "
                                               f"{a_file} is a file, not a folder")
    config = tiny_yaml(dataset, tmp_path / "run.yaml", a_file / "run")
    refused(lgdnet("train", "--config", config), 2, f"{a_file} is a file, not a folder")
    refused(lgdnet("synthetic", a_file, "--clips-per-class", "1"), 2, f"{a_file} is a file, not a folder")
    refused(lgdnet("synthetic", tmp_path / "syn", "--frames", "0"), 2, "--frames: must be >= 2, got 0")
    assert a_file.read_text() == "keep me"


def _list_with_bad_videos(dataset, tmp_path: Path) -> tuple[Path, list[Path]]:
    bad = [tmp_path / "empty.mp4", tmp_path / "missing.mp4", tmp_path / "notes.mp4"]
    bad[0].write_bytes(b"")
    bad[2].write_text("not a video\n")
    lines = dataset.val_list.read_text().splitlines()
    good = [f"{dataset.root / line.split()[0]} {line.split()[1]}" for line in lines]
    listing = tmp_path / "mixed.txt"
    mixed = [good[0], f"{bad[0]} 0", f"{bad[1]} 0", good[1], f"{bad[2]} 0"]
    listing.write_text("".join(f"{line}\n" for line in mixed))
    return listing, bad


def test_eval_on_error_raise_is_one_line_not_a_worker_traceback(dataset, checkpoint, tmp_path):
    listing, bad = _list_with_bad_videos(dataset, tmp_path)
    result = lgdnet("eval", "--checkpoint", checkpoint, "--list", listing, "--device", "cpu",
                    "--workers", "1", "--on-error", "raise", "--no-progress", "--out", tmp_path / "e")
    refused(result, 2, f"lgdnet eval: error: {bad[0]}: file is empty (0 bytes)")


# ---------------------------------------------------------------- smaller items


def test_bad_files_lists_each_skipped_video_once_with_two_workers(dataset, checkpoint, tmp_path):
    listing, bad = _list_with_bad_videos(dataset, tmp_path)
    out = tmp_path / "eval"
    result = lgdnet("eval", "--checkpoint", checkpoint, "--list", listing, "--device", "cpu",
                    "--workers", "2", "--views", "2", "--views-per-chunk", "1", "--no-progress",
                    "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    listed = [line.split("\t")[0] for line in (out / "bad_files.txt").read_text().splitlines()]
    assert sorted(listed) == sorted(map(str, bad))
    assert "skipped 3 unreadable videos" in result.stdout


def test_predict_goes_on_after_a_bad_video(checkpoint, clips_dir, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    good = clips_dir / "R6llTwEh07w.mp4"
    result = lgdnet("predict", good, empty, good, "--checkpoint", checkpoint, "--device", "cpu",
                    "--views", "1", "--json")
    refused(result, 1, "lgdnet predict: error: 1 of 3 videos could not be read")
    results = json.loads(result.stdout)
    assert [("error" in r, r["video"]) for r in results] == [(False, str(good)), (True, str(empty)),
                                                            (False, str(good))]
    assert results[1]["error"] == f"{empty}: file is empty (0 bytes)"
    assert len(results[0]["predictions"]) == 2


def test_a_stale_temporary_file_beside_a_checkpoint_is_removed(checkpoint, tmp_path):
    from lgdnet.engine.checkpoint import load_model, save_checkpoint

    model, config, classes = load_model(checkpoint)
    stale = tmp_path / ".stage1_last.safetensors.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    save_checkpoint(tmp_path / "stage1_last", model, config=config, classes=classes, epoch=1)
    assert not stale.exists() and (tmp_path / "stage1_last.safetensors").is_file()


def test_a_resumed_run_keeps_every_stage_in_its_summary_and_warns_of_changes(dataset, tmp_path):
    import dataclasses
    import logging

    from lgdnet.engine.training import train

    config = tiny_training_config(dataset, tmp_path / "run", "optim.epochs=1", "run.device=cpu")
    first = train(config)
    assert sorted(first["stages"]) == [1, 2]
    changed = dataclasses.replace(config, optim=dataclasses.replace(config.optim, batch_size=2))
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("lgdnet.engine.training")
    logger.addHandler(handler)
    try:
        resumed = train(changed, resume=True)  # resumes the finished stage 2
    finally:
        logger.removeHandler(handler)
    assert any("with changed settings: optim.batch_size 4 -> 2" in w for w in warnings), warnings
    assert sorted(resumed["stages"]) == [1, 2]
    assert resumed["stages"][1]["best_epoch"] == first["stages"][1]["best_epoch"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert sorted(summary["stages"]) == ["1", "2"]


def test_list_paths_with_spaces(clips_dir, tmp_path):
    from lgdnet.data import load_annotations
    from lgdnet.errors import AnnotationError

    shutil.copy(clips_dir / "RATRACE_wave_f_nm_np1_fr_goo_37.avi", tmp_path / "my wave clip.avi")
    (tmp_path / "list.txt").write_text('my wave clip.avi 0\n"my wave clip.avi" 1\n'
                                       "my wave clip.avi\t0\n")
    records = load_annotations(tmp_path / "list.txt", root=tmp_path).records
    assert [(Path(r.path).name, r.label) for r in records] == [("my wave clip.avi", 0),
                                                               ("my wave clip.avi", 1),
                                                               ("my wave clip.avi", 0)]
    (tmp_path / "bad.txt").write_text("no such clip.avi 0\n")
    with pytest.raises(AnnotationError, match=r"bad.txt:1: .*got 4 fields \(a path with spaces "
                                              r"must be quoted"):
        load_annotations(tmp_path / "bad.txt", root=tmp_path)


def test_an_unexpected_exception_asks_for_a_bug_report_and_debug_shows_it(monkeypatch, capsys):
    import lgdnet.cli.models as models_command
    from lgdnet.cli import main

    def broken(args) -> int:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(models_command, "run", broken)
    monkeypatch.delenv("LGDNET_DEBUG", raising=False)
    assert main(["models"]) == 70
    line = last_line(capsys.readouterr().err)
    assert line.startswith("lgdnet models: internal error: ZeroDivisionError: division by zero. "
                           "This is a bug in lgdnet; please report it")
    assert "lgdnet --debug models" in line
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "models"])
    monkeypatch.setenv("LGDNET_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["models"])
