"""Write ``golden_outputs.pt``: every zoo model's logits and features at a small seeded input.

Run from the repository root (``python tests/data/golden/make_golden.py``) only when a change
is *meant* to change the networks' numbers; ``tests/test_models_golden.py`` compares today's
outputs with the committed file. Models: ``create_model(name, num_classes=5)`` after
``torch.manual_seed(0)`` (Xavier, Sec. 5.2), BatchNorm statistics from one training-mode pass,
then eval mode; input ``torch.randn(2, 3, T, 32, 32)`` from a generator seeded with 1, T = 8
(3D) or 2 (2D, ``num_segments=2``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from lgdnet.models import create_model, list_models  # noqa: E402


def golden_model(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    probe = create_model(name, num_classes=5, memory_format="contiguous")
    options = {"num_segments": 2} if probe.kind == "2d" else {}
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, memory_format="contiguous", **options)
    frames = 8 if model.kind == "3d" else 2
    x = torch.randn(2, 3, frames, 32, 32, generator=torch.Generator().manual_seed(1))
    model.train()
    with torch.no_grad():
        model(x)  # non-trivial BatchNorm statistics
    return model.eval(), x


def golden_outputs(name: str) -> dict[str, torch.Tensor]:
    model, x = golden_model(name)
    with torch.no_grad():
        local, global_ = model.forward_features(x)
        return {"logits": model(x), "local_mean": local.mean((2, 3, 4)), "global": global_}


if __name__ == "__main__":
    table = {name: golden_outputs(name) for name in list_models()}
    torch.save(table, Path(__file__).with_name("golden_outputs.pt"))
    print(f"wrote {len(table)} models")
