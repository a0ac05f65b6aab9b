"""Fine-tuning from lgdnet checkpoints (Sec. 5.6): what loads, what is re-initialised, what
is refused, and the fine-tuning options (backbone learning rate, frozen BN, frozen backbone)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import tiny_training_config as tiny

from lgdnet.engine import stage as stage_module
from lgdnet.engine import training
from lgdnet.engine.checkpoint import load_model, save_checkpoint
from lgdnet.engine.transfer import imagenet_report, load_for_finetuning
from lgdnet.errors import CheckpointError
from lgdnet.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["approach", "separate"]


def tiny_model(num_classes, seed=0, **options):
    torch.manual_seed(seed)
    return create_model("lgd3d_tiny", num_classes, base_width=4, **options)


def write_checkpoint(path, model, classes, stage=1):
    if stage == 2:
        model.to_stage2(sketch_dim=32)
    save_checkpoint(path, model, config={}, classes=classes, epoch=1)
    return path


def backbone(model):
    return {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}


def test_other_class_count_loads_the_backbone_and_reinitialises_the_head(tmp_path):
    source = tiny_model(5, seed=1)
    write_checkpoint(tmp_path / "k5", source, [f"c{i}" for i in range(5)])
    model = tiny_model(2, seed=2)
    fresh_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
    report = load_for_finetuning(model, tmp_path / "k5", CLASSES)
    for key, value in backbone(source).items():
        assert torch.equal(model.state_dict()[key], value), key
    for key, value in fresh_head.items():  # the run's own fresh classifier is kept
        assert torch.equal(model.state_dict()[key], value), key
    heads = ["head.global_classifier.bias", "head.global_classifier.weight",
             "head.local_classifier.bias", "head.local_classifier.weight"]
    assert report.reinitialised == heads and report.left_out == heads
    assert set(report.loaded) == set(backbone(source))
    assert "other classes" in report.reasons["reinitialised"]
    text = "\n".join(report.lines())
    assert "loaded" in text and "layer4" in text and "head.global_classifier.weight" in text


def test_same_classes_load_everything(tmp_path):
    source = tiny_model(2, seed=1)
    write_checkpoint(tmp_path / "same", source, CLASSES)
    model = tiny_model(2, seed=2)
    report = load_for_finetuning(model, tmp_path / "same", CLASSES)
    assert not report.reinitialised and not report.left_out
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_reordered_classes_map_the_classifier_rows_by_name(tmp_path, caplog):
    source = tiny_model(3, seed=1)
    names = ["a", "b", "c"]
    write_checkpoint(tmp_path / "abc", source, names)
    model = tiny_model(3, seed=2)
    with caplog.at_level(logging.WARNING, logger="lgdnet"):
        report = load_for_finetuning(model, tmp_path / "abc", ["c", "a", "b"])
    assert "another order" in caplog.text and "mapped by class name" in caplog.text
    assert report.reasons["classes"].startswith("the same classes in another order")
    weight = source.state_dict()["head.global_classifier.weight"]
    torch.testing.assert_close(model.state_dict()["head.global_classifier.weight"], weight[[2, 0, 1]])
    clip = torch.randn(1, 3, 8, 32, 32)
    source.eval(), model.eval()
    with torch.no_grad():  # the same network, its outputs in the new class order
        torch.testing.assert_close(model(clip), source(clip)[:, [2, 0, 1]])


def test_stage2_checkpoint_into_a_stage1_run_leaves_its_classifier_out(tmp_path):
    source = tiny_model(2, seed=1)
    write_checkpoint(tmp_path / "s2", source, CLASSES, stage=2)
    model = tiny_model(2, seed=2)
    report = load_for_finetuning(model, tmp_path / "s2", CLASSES)
    assert report.source_stage == 2
    assert {"head.classifier.bias", "head.classifier.weight", "head.sketch.hash1"} <= set(
        report.left_out)  # the combination classifier and its Tensor Sketch's hashes
    assert report.reinitialised[0].startswith("head.global_classifier")
    assert "stage 2" in report.reasons["left_out"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in backbone(source).items())


def test_flow_checkpoint_into_an_rgb_network_is_refused(tmp_path):
    write_checkpoint(tmp_path / "flow", tiny_model(2, in_channels=2), CLASSES)
    with pytest.raises(CheckpointError, match=r"2-channel input.*takes 3.*data.modality"):
        load_for_finetuning(tiny_model(2), tmp_path / "flow", CLASSES)


def test_other_architecture_is_refused_not_loaded_in_part(tmp_path):
    torch.manual_seed(0)
    p3d = create_model("p3d_tiny", 2, base_width=4)
    write_checkpoint(tmp_path / "p3d", p3d, CLASSES)
    model = tiny_model(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"p3d_tiny \(none diffusion\).*lacks \d+ of this"):
        load_for_finetuning(model, tmp_path / "p3d", CLASSES)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # untouched
    wide = create_model("lgd3d_tiny", 2, base_width=8)
    write_checkpoint(tmp_path / "wide", wide, CLASSES)
    with pytest.raises(CheckpointError, match="differ in shape"):
        load_for_finetuning(model, tmp_path / "wide", CLASSES)


def test_imagenet_report_names_what_the_2d_file_gave(tmp_path):
    net = create_model("tsn_tiny", 1000)
    state = {k.replace(".local_unit.", "."): v for k, v in net.state_dict().items()
             if not k.startswith("head.")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 256), torch.zeros(1000)
    torch.save(state, tmp_path / "resnet.pth")
    model = create_model("lgd3d_tiny", 3, init="imagenet", pretrained=str(tmp_path / "resnet.pth"))
    report = imagenet_report(model.init_report)
    assert "conv1.weight" in report.loaded and "fc.weight" in report.left_out
    assert "head.global_classifier.weight" in report.reinitialised


# ---------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def three_class_dataset(tmp_path_factory):
    from lgdnet.data import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("three"), clips_per_class=3,
                                   classes=["orbit_clockwise", "orbit_counterclockwise",
                                            "toward_marker"],
                                   num_frames=12, size=(48, 64), workers=1, progress=False)


@pytest.fixture(scope="module")
def pretrained(two_class_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrained")
    training.train(tiny(two_class_dataset, out, "optim.epochs=1", "optim.stage2_epochs=1"))
    return out


def test_finetuning_run_with_another_class_count(pretrained, three_class_dataset, tmp_path, caplog):
    """A 3-class run from a 2-class stage-2 checkpoint trains and says what it loaded."""
    seen = {}
    real = training.fit_stage

    def spy(model, stage, ctx, resume=None):
        seen[stage] = {k: v.clone() for k, v in model.state_dict().items()}
        return real(model, stage, ctx, resume)

    source, _, _ = load_model(pretrained / "best")
    config = tiny(three_class_dataset, tmp_path / "ft", "run.stages=[2]", "optim.epochs=1",
                  f"model.init_checkpoint={pretrained / 'best.safetensors'}")
    with caplog.at_level(logging.INFO, logger="lgdnet"), pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "fit_stage", spy)
        summary = training.train(config)
    assert all(torch.equal(seen[2][k], v) for k, v in backbone(source).items())
    assert "re-initialised 6 tensors: head.classifier.bias, head.classifier.weight" in caplog.text
    assert "other classes: the checkpoint has 2, this run 3" in caplog.text
    report = json.loads((tmp_path / "ft" / "init_report.json").read_text())
    assert report["source_stage"] == 2 and "layer1.0.local_unit.conv1.weight" in report["loaded"]
    assert summary["init"]["reinitialised"] == 6  # classifier and the sketch's hashes
    model, _, classes = load_model(tmp_path / "ft" / "best")
    assert model.num_classes == 3 and classes == list(three_class_dataset.classes)


def test_finetuning_options(pretrained, three_class_dataset, tmp_path):
    """backbone_lr_mult gives the backbone its own learning rate; freeze_backbone_epochs=1
    leaves the backbone (and its BatchNorm statistics) as loaded after epoch 1; freeze_bn=all
    keeps every running statistic for the whole run."""
    from lgdnet.engine.stage import param_groups

    init = pretrained / "stage1_best.safetensors"
    source, _, _ = load_model(init)
    groups = param_groups(source, 0.01, 0.1)
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.001)]
    assert len(groups[0]["params"]) == 4  # the two classifiers' weights and biases

    config = tiny(three_class_dataset, tmp_path / "frozen", "run.stages=[1]", "optim.epochs=2",
                  f"model.init_checkpoint={init}", "optim.freeze_backbone_epochs=1",
                  "optim.backbone_lr_mult=0.1")
    weights = {}
    real = stage_module.run_epoch

    def spy(run, epoch, ctx, show_bar):
        record = real(run, epoch, ctx, show_bar)
        weights[epoch] = {k: v.clone() for k, v in run.model.state_dict().items()}
        return record

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stage_module, "run_epoch", spy)
        training.train(config)
    for key, value in backbone(source).items():
        assert torch.equal(weights[1][key], value), key  # epoch 1: classifier only
    assert not torch.equal(weights[1]["head.global_classifier.weight"],
                           weights[2]["head.global_classifier.weight"])
    assert not torch.equal(weights[2]["layer1.0.local_unit.conv1.weight"],
                           source.state_dict()["layer1.0.local_unit.conv1.weight"])

    config = tiny(three_class_dataset, tmp_path / "bn", "run.stages=[1]", "optim.epochs=1",
                  f"model.init_checkpoint={init}", "optim.freeze_bn=all")
    training.train(config)
    tuned, _, _ = load_model(tmp_path / "bn" / "best")
    stats = [k for k in backbone(source) if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(tuned.state_dict()[k], source.state_dict()[k]) for k in stats)
    assert not torch.equal(tuned.state_dict()["layer1.0.local_unit.conv1.weight"],
                           source.state_dict()["layer1.0.local_unit.conv1.weight"])


def test_cli_reports_a_checkpoint_of_another_modality(pretrained, three_class_dataset, tmp_path,
                                                      capsys):
    from lgdnet.cli import main as lgdnet_main

    flow = tiny_model(2, in_channels=2)
    write_checkpoint(tmp_path / "flow", flow, CLASSES)
    status = lgdnet_main(["train", "--train-list", str(three_class_dataset.train_list),
                          "--set", "model.name=lgd3d_tiny", "--set", "model.options.base_width=4",
                          "--set", f"model.init_checkpoint={tmp_path / 'flow.safetensors'}",
                          "--out", str(tmp_path / "run")])
    assert status != 0
    err = capsys.readouterr().err
    assert "2-channel input" in err and err.count("\n") == 1


def test_features_for_downstream_use_read_without_lgdnet(pretrained, two_class_dataset, tmp_path):
    """`lgdnet features --outputs global local local_pooled` writes plain .npz files that
    NumPy (allow_pickle=False) and PyTorch read in a process where lgdnet cannot be imported."""
    import subprocess
    import sys

    from lgdnet.cli import main as lgdnet_main

    out = tmp_path / "features"
    status = lgdnet_main(["features", str(two_class_dataset.val_list), "--checkpoint",
                          str(pretrained / "best.safetensors"), "--out", str(out),
                          "--outputs", "global", "local", "local_pooled", "--no-progress"])
    assert status == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"] == ["global", "local", "local_pooled"]
    assert manifest["shapes"]["global"] == manifest["shapes"]["local_pooled"] == [128]  # C_L
    assert len(manifest["shapes"]["local"]) == 4  # C, T', H', W': the full map
    first = out / manifest["videos"][0]["file"]
    script = (
        "import sys; sys.modules['lgdnet'] = None\n"  # any import of lgdnet now fails
        "import numpy as np, torch\n"
        f"data = np.load({str(first)!r}, allow_pickle=False)\n"
        "local = torch.from_numpy(data['local'])\n"
        "pooled = torch.from_numpy(data['local_pooled'])\n"
        "assert torch.allclose(local.mean((1, 2, 3)), pooled, atol=1e-6)\n"
        "print(sorted(data.files), tuple(data['global'].shape), str(data['video_id']))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert "['global', 'label', 'local', 'local_pooled', 'video_id']" in result.stdout
    only_global = tmp_path / "global_only"
    assert lgdnet_main(["features", str(two_class_dataset.val_list), "--checkpoint",
                        str(pretrained / "best.safetensors"), "--out", str(only_global),
                        "--outputs", "global", "--no-progress"]) == 0
    import numpy as np

    with np.load(next(only_global.rglob("*.npz"))) as data:
        assert sorted(data.files) == ["global", "label", "video_id"]
