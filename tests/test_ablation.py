"""``lgdnet ablate``: the grid runs end to end, writes its tables and plot, and resumes.

These tests check the pipeline, never which variant wins: the quick grid trains for one epoch.
"""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
from pathlib import Path

import pytest

from lgdnet.apps.ablation import (
    ABLATION_MODES,
    VARIANT_LABELS,
    AblationSettings,
    RunSpec,
    run_ablation,
    run_config,
    summarise,
)
from lgdnet.cli import main
from lgdnet.engine.config import config_to_dict

QUICK = ABLATION_MODES["quick"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ablation")
    assert main(["ablate", "--quick", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.mark.slow
def test_quick_grid_writes_results_tables_and_loss_plot(quick_run: Path) -> None:
    results = json.loads((quick_run / "results.json").read_text())
    names = {run["name"] for run in results["runs"]}
    expected = {RunSpec(n, v, 0).name for n in ("2d", "3d") for v in ("none", "v1", "v2", "lgd")}
    expected |= {RunSpec(n, "lgd", 0, kind).name for n in ("2d", "3d") for kind in ("com", "continued")}
    assert names == expected
    for run in results["runs"]:
        assert 0.0 <= run["metrics"]["top1"] <= 1.0
        assert run["metrics"]["num_videos"] == 3 * round(QUICK.clips_per_class * QUICK.val_fraction)
        if run["kind"] != "com":  # stage 1: the two terms of Eq. (6) are logged per epoch
            assert [r["epoch"] for r in run["history"]] == list(range(1, len(run["history"]) + 1))
            assert all(r["global_loss"] > 0 and r["local_loss"] > 0 for r in run["history"])

    # Table 2: one row per variant, the cells are the runs' top-1 in % (one seed: std 0)
    table2 = (quick_run / "table2.md").read_text()
    by_name = {run["name"]: run for run in results["runs"]}
    for variant, label in VARIANT_LABELS.items():
        row = next(line for line in table2.splitlines() if line.startswith(f"| {label} |"))
        cells = [re.match(r"\s*(\d+\.\d) ± (\d+\.\d)", cell) for cell in row.split("|")[2:4]]
        assert all(cells)
        for match, network in zip(cells, ("2d", "3d")):
            mean, std = match.groups()
            top1 = 100 * by_name[RunSpec(network, variant, 0).name]["metrics"]["top1"]
            assert float(mean) == pytest.approx(top1, abs=0.051)
            assert float(std) == 0.0
    table3 = (quick_run / "table3.md").read_text()
    assert "combination classifier" in table3 and "continued" in table3
    assert len(re.findall(r"\d+\.\d ± \d+\.\d", table3)) == 6

    png = (quick_run / "losses.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.slow
def test_rerun_skips_finished_runs_and_redoes_changed_ones(quick_run: Path) -> None:
    before = json.loads((quick_run / "results.json").read_text())
    runs = quick_run / "runs"
    # a result written before an option existed still counts (the option takes its default)
    older = runs / RunSpec("2d", "none", 0).name / "result.json"
    record = json.loads(older.read_text())
    del record["config"]["run"]["tensorboard"]
    older.write_text(json.dumps(record))
    # a result of another configuration does not
    changed = runs / RunSpec("3d", "v1", 0).name / "result.json"
    record = json.loads(changed.read_text())
    record["config"]["optim"]["lr"] *= 2
    changed.write_text(json.dumps(record))

    report = run_ablation(quick_run, mode="quick", progress=False, echo=lambda line: None)
    redone = {run["name"] for run in report["runs"] if not run["skipped"]}
    assert redone == {RunSpec("3d", "v1", 0).name}
    assert report["train_seconds"] > 0
    assert ({r["name"]: r["metrics"] for r in report["runs"]}
            == {r["name"]: r["metrics"] for r in before["runs"]})


@dataclasses.dataclass
class _FakeData:
    root: Path
    train_list: Path
    val_list: Path
    classes_file: Path


def test_variants_share_data_schedule_and_seed(tmp_path: Path) -> None:
    data = _FakeData(tmp_path, tmp_path / "train.txt", tmp_path / "val.txt", tmp_path / "classes.txt")
    settings = AblationSettings(epochs=12)
    for network in ("2d", "3d"):
        configs = [config_to_dict(run_config(settings, RunSpec(network, v, 1), data, tmp_path))
                   for v in ("none", "v1", "v2", "lgd")]
        for config in configs:
            assert config["data"] == configs[0]["data"] and config["optim"] == configs[0]["optim"]
            assert config["run"]["seed"] == 1 and config["run"]["stages"] == [1]
        assert [c["model"]["diffusion"] for c in configs] == ["none", "v1", "v2", "lgd"]
        assert configs[0]["optim"]["epochs"] == 12 and configs[0]["optim"]["lr_step"] == 9
    # the combination classifier and its control start from the same stage-1 model
    com, continued = (config_to_dict(run_config(settings, RunSpec("3d", "lgd", 1, kind), data, tmp_path))
                      for kind in ("com", "continued"))
    assert com["model"]["init_checkpoint"] == continued["model"]["init_checkpoint"]
    assert com["model"]["init_checkpoint"].endswith("stage1-3d-lgd-seed1/stage1_last.safetensors")
    assert (com["run"]["stages"], continued["run"]["stages"]) == ([2], [1])
    assert com["optim"]["stage2_epochs"] == continued["optim"]["epochs"] == settings.stage2_epochs


def test_zero_global_residual_reaches_the_diffusion_models_only(tmp_path: Path) -> None:
    data = _FakeData(tmp_path, tmp_path / "train.txt", tmp_path / "val.txt", tmp_path / "classes.txt")
    settings = AblationSettings(global_residual_init="zero")
    options = {v: config_to_dict(run_config(settings, RunSpec("3d", v, 0), data, tmp_path))
               ["model"]["options"] for v in ("none", "v1", "v2", "lgd")}
    assert "global_residual_init" not in options["none"]  # same runs as the default grid's
    assert all(options[v]["global_residual_init"] == "zero" for v in ("v1", "v2", "lgd"))
    default = config_to_dict(run_config(AblationSettings(), RunSpec("3d", "lgd", 0), data, tmp_path))
    assert "global_residual_init" not in default["model"]["options"]


def test_memory_format_reaches_the_run_config(tmp_path: Path) -> None:
    data = _FakeData(tmp_path, tmp_path / "train.txt", tmp_path / "val.txt", tmp_path / "classes.txt")
    for layout in ("auto", "contiguous"):
        config = run_config(AblationSettings(memory_format=layout), RunSpec("3d", "lgd", 0), data,
                            tmp_path)
        assert config.run.memory_format == layout


def _record(network: str, variant: str, seed: int, top1: float, kind: str = "stage1") -> dict:
    return {"kind": kind, "network": network, "variant": variant, "seed": seed,
            "name": RunSpec(network, variant, seed, kind).name, "metrics": {"top1": top1},
            "history": [{"epoch": 1, "loss": 2.0, "local_loss": 1.0, "global_loss": 1.0}]}


def test_summary_is_mean_and_std_over_seeds_with_paired_gains() -> None:
    settings = AblationSettings(seeds=3, networks=("3d",), variants=("none", "lgd"))
    baseline, lgd = [0.50, 0.60, 0.40], [0.55, 0.70, 0.42]
    results = [_record("3d", "none", s, v) for s, v in enumerate(baseline)]
    results += [_record("3d", "lgd", s, v) for s, v in enumerate(lgd)]
    results += [_record("3d", "lgd", s, 0.6, kind) for s in range(3) for kind in ("com", "continued")]
    report = summarise(results, settings)
    entry = report["table2"]["3d/lgd"]
    assert entry["top1"]["mean"] == pytest.approx(100 * statistics.fmean(lgd))
    assert entry["top1"]["std"] == pytest.approx(100 * statistics.stdev(lgd))
    gains = [a - b for a, b in zip(lgd, baseline)]
    assert entry["gain_over_baseline"]["mean"] == pytest.approx(100 * statistics.fmean(gains))
    assert entry["gain_over_baseline"]["std"] == pytest.approx(100 * statistics.stdev(gains))
    assert "gain_over_baseline" not in report["table2"]["3d/none"]
    assert f"{100 * statistics.fmean(lgd):.1f} ± {100 * statistics.stdev(lgd):.1f}" in report["table2_markdown"]
    assert report["table3"]["3d/com"]["top1"]["mean"] == pytest.approx(60.0)


def test_cli_rejects_an_unknown_network(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ablate", "--quick", "--networks", "4d", "--out", str(tmp_path)]) == 2
    assert "networks" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()
