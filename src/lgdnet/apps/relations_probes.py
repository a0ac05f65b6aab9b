"""Linear probes of the relation grid's models: does g_l after each stage, or P(x_l), carry
the relation? Logistic regression on standardised features, fitted on the training clips
(one whole-frame view each), scored on the held-out clips."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lgdnet.atomic import write_text


def linear_probe(train_x: Any, train_y: Any, test_x: Any, test_y: Any, l2: float = 1e-3) -> dict[str, float]:
    """Multinomial logistic regression (standardised features, L2 ``l2``, L-BFGS) fitted on
    the training features; returns its ``train`` and ``test`` accuracy."""
    import torch

    xtr, xte = torch.as_tensor(train_x, dtype=torch.float64), torch.as_tensor(test_x, dtype=torch.float64)
    ytr, yte = torch.as_tensor(train_y).long(), torch.as_tensor(test_y).long()
    mean, std = xtr.mean(0), xtr.std(0) + 1e-8
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    classes = int(max(ytr.max(), yte.max())) + 1
    weight = torch.zeros(xtr.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> Any:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(xtr @ weight + bias, ytr) + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        return {"train": float(((xtr @ weight + bias).argmax(1) == ytr).double().mean()),
                "test": float(((xte @ weight + bias).argmax(1) == yte).double().mean())}


def stage_features(model: Any, loader: Any) -> tuple[dict[str, Any], Any]:
    """``P(x_l)`` and ``g_l`` after each stage (hooks on ``layer1..4``), for every item.

    Returns ``({"P(x_1)": (N, C), "g_1": ..., ...}, labels)``.
    """
    import torch

    from lgdnet.models.units import to_clip

    collected: dict[str, list[Any]] = {}
    batch_size = {"n": 0}

    def hook(index: int) -> Callable[..., None]:
        def record(module: Any, inputs: Any, output: Any) -> None:
            x, g = output
            clip = x if x.dim() == 5 else to_clip(x, batch_size["n"])
            collected.setdefault(f"P(x_{index})", []).append(clip.mean((2, 3, 4)).float())
            if g is not None:
                collected.setdefault(f"g_{index}", []).append(g.float())
        return record

    handles = [getattr(model, f"layer{i}").register_forward_hook(hook(i)) for i in range(1, 5)]
    labels = []
    model.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                video = batch["video"]
                if video.dim() == 6:  # test items: (N, V, C, T, H, W); one view here
                    video = video[:, 0]
                batch_size["n"] = video.shape[0]
                model(video)
                labels.append(torch.as_tensor(batch["label"]))
    finally:
        for handle in handles:
            handle.remove()
    return {k: torch.cat(v) for k, v in collected.items()}, torch.cat(labels)


def probe_run(run_dir: Path, data: Any, max_items: int = 0) -> dict[str, Any]:
    """Linear probes of a trained run's stage features: fitted on the training clips (one
    whole-frame view each, no augmentation), scored on the held-out clips."""
    return probe_runs([run_dir], data, max_items)[run_dir]


def probe_runs(run_dirs: list[Path], data: Any, max_items: int = 0) -> dict[Path, dict[str, Any]]:
    """:func:`probe_run` for several runs trained on the same dataset with the same sampling
    (one task and network kind): the clips are decoded once and every model scores them."""
    import torch

    from lgdnet.data import VideoDataset, load_annotations
    from lgdnet.engine.builders import sampling_spec
    from lgdnet.engine.checkpoint import load_model
    from lgdnet.engine.config import config_from_dict

    batches: dict[str, list[dict[str, Any]]] = {}
    probes = {}
    for run_dir in run_dirs:
        model, config, classes = load_model(run_dir / "stage1_last.safetensors", "cpu")
        if isinstance(config, dict):
            config = config_from_dict(config)
        if not batches:
            spec = dataclasses.replace(sampling_spec(config.data, model.kind), num_test_views=1)
            for subset, path in (("train", data.train_list), ("test", data.val_list)):
                records = load_annotations(path, root=data.root, classes=classes).records
                if max_items:
                    records = records[:max_items]
                dataset = VideoDataset(records, spec, mode="test", seed=0)
                loader = torch.utils.data.DataLoader(dataset, batch_size=16, num_workers=0,
                                                     collate_fn=_collate)
                batches[subset] = list(loader)
        (train, ytr), (test, yte) = (stage_features(model, batches[s]) for s in ("train", "test"))
        probes[run_dir] = {key: linear_probe(train[key], ytr, test[key], yte) for key in train}
    return probes


def write_probes(results: list[dict[str, Any]], runs_dir: Path, datasets: dict[tuple[str, str], Any]) -> None:
    """``probe.json`` in every finished stage-1 run that has none (one decoding of the clips
    per task and network), and each result's ``probe`` entry."""
    missing: dict[tuple[str, str], list[Path]] = {}
    for result in results:
        if result["kind"] == "stage1" and not result.get("diverged"):
            run_dir = runs_dir / result["name"]
            if not (run_dir / "probe.json").is_file():
                missing.setdefault((result["task"], result["network"]), []).append(run_dir)
    for key, run_dirs in missing.items():
        for run_dir, probe in probe_runs(run_dirs, datasets[key]).items():
            write_text(run_dir / "probe.json", json.dumps(probe))
    for result in results:
        probe_file = runs_dir / result["name"] / "probe.json"
        if result["kind"] == "stage1" and probe_file.is_file():
            result["probe"] = json.loads(probe_file.read_text())


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    return {"video": torch.stack([item["video"] for item in items]),
            "label": torch.tensor([item["label"] for item in items])}
