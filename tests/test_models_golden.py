"""Golden outputs: every zoo model's logits and features at a small seeded input, against the
tensors committed in ``tests/data/golden/golden_outputs.pt`` (torchvision's
``test_models.py`` habit). The file was written by ``tests/data/golden/make_golden.py``;
before it was committed, the same script run on the code before ``LGDBlock`` registered its
local unit gave identical numbers (largest difference 0.0). Tolerance: 1e-4 relative and
absolute for the tiny networks, 1e-3 for the ResNet-50/101 ones (float32 rounding differs
with the thread count; with BatchNorm statistics from a batch of two, 33 blocks of
ResNet-101 carry it to 2.5e-4 on values of about 0.2 between 1 and 2 threads)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from lgdnet.models import list_models

GOLDEN = Path(__file__).parent / "data" / "golden"
_spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)
EXPECTED = torch.load(GOLDEN / "golden_outputs.pt")

SLOW = {name for name in list_models() if not name.endswith("_tiny")}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in list_models()])
def test_outputs_match_the_committed_golden_tensors(name):
    assert name in EXPECTED, f"{name}: no golden outputs; run tests/data/golden/make_golden.py"
    got = make_golden.golden_outputs(name)
    tolerance = 1e-3 if name in SLOW else 1e-4
    for key, expected in EXPECTED[name].items():
        torch.testing.assert_close(got[key], expected, rtol=tolerance, atol=tolerance,
                                   msg=f"{name} {key}")


def test_every_registered_model_has_golden_outputs():
    assert sorted(EXPECTED) == list_models()
