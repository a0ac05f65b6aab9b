"""The relation experiment (lgdnet.apps.relations): receptive fields measured by gradients,
the pooling argument, linear probes, paired statistics, the authors' block order and
initialisation, and the pipeline end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lgdnet.apps.relations import (
    RELATION_MODES,
    RelationSettings,
    measure_receptive_field,
    pooled_interaction,
    run_relations,
    sees_both,
)
from lgdnet.apps.relations_probes import linear_probe
from lgdnet.apps.relations_report import paired
from lgdnet.data.synthetic_relations import far_gap, sample_scene
from lgdnet.models import create_model
from lgdnet.models.lgd_block import LGDBlock

SETTINGS = RelationSettings()


@pytest.fixture(scope="module")
def fields():
    return {"3d": measure_receptive_field("p3d_tiny", (4, 72, 72)),
            "2d": measure_receptive_field("tsn_tiny", (1, 112, 112))}


def test_receptive_fields_match_the_architecture(fields):
    # on paper: 3D 7 + 4 + 4 + 8 + 16 = 39 px, 2D (max-pool, stride 32 at res5) 75 px
    assert fields["3d"]["width"] == 39 and fields["3d"]["local_shape"][-1] == 5
    assert fields["2d"]["width"] == 75 and fields["2d"]["local_shape"][-1] == 4
    assert fields["3d"]["effective_width"] <= 39
    # the LGD network's local map has the same field: the global path is not local
    assert measure_receptive_field("lgd3d_tiny", (4, 72, 72), diffusion="none")["columns"] == fields["3d"]["columns"]
    assert far_gap(72) > fields["3d"]["width"] and far_gap(112) > fields["2d"]["width"]


@pytest.mark.parametrize("network", ["3d", "2d"])
def test_no_position_of_x_l_sees_both_far_events_and_some_sees_both_near_ones(fields, network):
    side = 72 if network == "3d" else 112
    rng = np.random.default_rng(0)
    for _ in range(300):
        assert not sees_both(fields[network]["columns"], sample_scene(rng, "colour", "far", (side, side), 8).footprints())
        assert sees_both(fields[network]["columns"], sample_scene(rng, "colour", "near", (side, side), 8).footprints())


def _scene(layout, seed=0, relation="colour", side=72):
    return sample_scene(np.random.default_rng(seed), relation, layout, (side, side), 8)


def test_plain_network_pools_far_events_additively_and_lgd_does_not():
    torch.manual_seed(0)
    plain = create_model("p3d_tiny", 2, memory_format="contiguous").double()
    lgd = create_model("lgd3d_tiny", 2, memory_format="contiguous").double()
    for relation in ("colour", "motion"):
        far, near = _scene("far", 1, relation), _scene("near", 1, relation)
        # "different" pooled feature = midpoint of the two "same" ones, to float64 rounding
        assert pooled_interaction(plain, far, "3d", SETTINGS)["pooled"] < 1e-9
        assert pooled_interaction(plain, near, "3d", SETTINGS)["pooled"] > 1e-3
        assert pooled_interaction(lgd, far, "3d", SETTINGS)["global"] > 1e-3


def test_plain_2d_network_is_additive_on_far_shapes():
    torch.manual_seed(0)
    plain = create_model("tsn_tiny", 2, memory_format="contiguous", num_segments=1).double()
    settings = RelationSettings(segments=1)
    far, near = _scene("far", 2, "shape", 112), _scene("near", 2, "shape", 112)
    assert pooled_interaction(plain, far, "2d", settings)["pooled"] < 1e-9
    assert pooled_interaction(plain, near, "2d", settings)["pooled"] > 1e-3


def test_linear_probe_solves_linear_labels_and_not_xor():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, size=(400, 2))
    x = bits + 0.1 * rng.standard_normal((400, 2))
    xor = bits[:, 0] ^ bits[:, 1]
    assert linear_probe(x[:200], bits[:200, 0], x[200:], bits[200:, 0])["test"] > 0.95
    assert linear_probe(x[:200], xor[:200], x[200:], xor[200:])["test"] < 0.65
    with_product = np.c_[x, x[:, 0] * x[:, 1]]
    assert linear_probe(with_product[:200], xor[:200], with_product[200:], xor[200:])["test"] > 0.9


def test_paired_interval_by_hand():
    result = paired([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, 2) = 4.303: 2 -+ 4.303 / sqrt(3)
    assert result["mean"] == 2.0
    assert result["low"] == pytest.approx(2 - 4.303 / 3**0.5)
    assert result["high"] == pytest.approx(2 + 4.303 / 3**0.5)


class _Unit(torch.nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = torch.nn.Conv3d(c_in, c_out, 1)

    def forward(self, x):
        return self.conv(x)


def test_authors_order_matches_the_formula_of_their_code():
    torch.manual_seed(0)
    block = LGDBlock(_Unit(4, 8), 4, 8, "lgd", 4, order="authors", bias=True).double()
    x, g = torch.randn(2, 4, 3, 5, 5, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    y, g_new = block(x, g)
    w = block
    ref_g = torch.relu(w.local_to_global(x.mean((2, 3, 4))) + w.global_to_global(g))
    ref_y = torch.relu(w.local_unit(x) + w.global_to_local(ref_g)[..., None, None, None])
    torch.testing.assert_close(g_new, ref_g)
    torch.testing.assert_close(y, ref_y)
    assert w.global_to_local.reduce.in_features == 8 and w.local_to_global.reduce.in_features == 4
    with pytest.raises(ValueError, match="order"):
        LGDBlock(_Unit(4, 8), 4, 8, "v1", 4, order="authors")


def test_authors_initialisation_and_rebuild_from_build_args():
    torch.manual_seed(0)
    model = create_model("lgd3d_tiny", 3, init_scheme="authors", block_order="authors")
    block = model.layer2[0]
    assert block.order == "authors" and block.global_to_local.expand.bias is not None
    assert torch.count_nonzero(block.global_to_local.expand.weight) == 0
    assert torch.count_nonzero(block.global_to_local.expand.bias) > 0  # as their code: kept
    conv = block.local_unit.conv3.weight  # Kaiming fan-out: std sqrt(2 / (C_out * k))
    assert conv.std().item() == pytest.approx((2 / conv.shape[0]) ** 0.5, rel=0.15)
    rebuilt = create_model(**model.build_args)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 3, 4, 32, 32)
    torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))
    default = create_model("lgd3d_tiny", 3)
    assert "init_scheme" not in default.build_args and default.layer2[0].global_to_local.expand.bias is None


def test_quick_grid_runs_reports_and_resumes(tmp_path):
    lines = []
    report = run_relations(tmp_path, mode="quick", progress=False, echo=lines.append)
    cells = report["cells"]
    assert set(cells) == {f"{t}/3d/{a}" for t in ("far", "near") for a in RELATION_MODES["quick"].arms}
    lgd = cells["far/3d/lgd:authors:paper"]
    assert "gain" in lgd and set(lgd["probe"]) >= {"P(x_4)", "g_4"}
    assert "P(x_4)" in cells["far/3d/none:authors:paper"]["probe"]
    stored = json.loads((tmp_path / "results.json").read_text())
    assert {r["kind"] for r in stored["runs"]} == {"stage1", "com", "continued"}
    assert (tmp_path / "losses.png").stat().st_size > 0
    assert json.loads((tmp_path / "receptive_fields.json").read_text())["3d"]["width"] == 39
    again = run_relations(tmp_path, mode="quick", progress=False, echo=lines.append)
    assert again["cells"].keys() == cells.keys()
    assert any("done before" in line for line in lines)


def test_init_comparison_pairs_each_authors_arm_with_the_paper_arm_of_its_seed():
    from lgdnet.apps.relations_report import compare_inits

    def run(arm, seed, top1, losses, diverged=False):
        history = [{"epoch": e + 1, "local_loss": loss / 2, "global_loss": loss / 2}
                   for e, loss in enumerate(losses)]
        result = {"kind": "stage1", "task": "far", "network": "3d", "arm": arm, "seed": seed,
                  "metrics": {"top1": top1}, "history": history}
        return {**result, "diverged": "nan"} if diverged else result

    settings = RelationSettings(tasks=("far",), networks=("3d",),
                                arms=("lgd:paper:paper", "lgd:authors:paper", "lgd:authors:authors"))
    results = [run("lgd:paper:paper", 0, 0.90, [1.0, 0.5]), run("lgd:paper:paper", 1, 0.80, [1.2, 0.6]),
               run("lgd:authors:paper", 0, 0.95, [0.8, 0.4]), run("lgd:authors:paper", 1, 0.90, [1.0, 0.4]),
               run("lgd:authors:authors", 0, 0.5, [], diverged=True)]  # seed 1 missing: not paired
    comparison = compare_inits(results, settings)
    same_order = comparison["pairs"]["far/3d/lgd:authors:paper"]
    assert same_order["reference"] == "lgd:paper:paper"
    assert same_order["top1"]["values"] == pytest.approx([5.0, 10.0])
    assert same_order["final_loss"]["values"] == pytest.approx([-0.1, -0.2])
    assert same_order["mean_loss"]["values"] == pytest.approx([-0.15, -0.2])
    assert same_order["diverged"] == [0, 0]
    whole_code = comparison["pairs"]["far/3d/lgd:authors:authors"]
    assert whole_code["top1"]["n"] == 1 and whole_code["diverged"] == [1, 0]
    assert whole_code["final_loss"]["n"] == 0  # the diverged pair has no loss to compare
    assert len(comparison["markdown"]) == 4 + 2
    # no paper-initialised reference arm: nothing to compare
    alone = RelationSettings(tasks=("far",), networks=("3d",), arms=("lgd:authors:paper",))
    assert compare_inits(results, alone) == {"pairs": {}, "markdown": []}
