"""The Python an LGD block spends choosing and calling its one-call diffusion (per block call).

Before its kernel runs, a block checks that nothing could tell the kernel from its modules
(hooks on the nine projection modules, the weights' dtype, compilers, dispatch modes,
autocast, the map's layout; :func:`lgdnet.models.diffusion_kernel.applies`) and gathers the
six factor weights. Two arms, interleaved, on ``lgd2d_r50``'s ``layer4[1]`` at inference:

* ``getattr``: the same checks and weights looked up by name through ``nn.Module.__getattr__``
  (how the block did it before, kept here as the reference);
* ``dicts``: the library's :func:`~lgdnet.models.diffusion_kernel.applies` and the weights
  read from the modules' own dictionaries.

The diffusion itself (``lgdnet::diffuse_`` on the block's warm 2x3-frame map) is timed beside
them for scale. Run: ``python benchmarks/bench_block_calls.py``; writes
``block_calls_results.md`` and ``.json`` next to this file.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BENCH_DIR, library_versions, machine_description, utc_now, write_results  # noqa: E402

import lgdnet  # noqa: E402
from lgdnet.models import diffusion_kernel, epilogue_kernel, low_rank_kernel  # noqa: E402

CALLS = 2000
ROUNDS = 15


def _by_getattr(block: torch.nn.Module, out: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
    """The checks and weights of ``applies`` + ``_weights``, every name through ``getattr``."""
    def hooked(module: torch.nn.Module) -> bool:
        return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                    or module._backward_pre_hooks)

    assert not torch.is_grad_enabled() and isinstance(out, torch.Tensor)
    assert block.diffusion == "lgd" and block.order == "paper" and not block.bias
    assert g.dim() == 2 and g.dtype == out.dtype and g.device == out.device
    for name in diffusion_kernel.PROJECTIONS:
        projection = getattr(block, name)
        assert not (hooked(projection) or hooked(projection.reduce) or hooked(projection.expand))
        assert projection.reduce.weight.dtype == out.dtype
    assert not (low_rank_kernel._dispatch_mode_active() or low_rank_kernel._autocast_on())
    assert epilogue_kernel.applies(out, g)
    weights = []
    for name in diffusion_kernel.PROJECTIONS:
        projection = getattr(block, name)
        weights += [projection.reduce.weight, projection.expand.weight]
    return weights


def _by_dicts(block: torch.nn.Module, out: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
    assert diffusion_kernel.applies(block, out, g)
    return diffusion_kernel._weights(block)


def run() -> dict[str, Any]:
    model = lgdnet.create_model("lgd2d_r50", num_classes=400).eval()
    block = model.layer4[1]
    out = torch.randn(6, 2048, 7, 7).contiguous(memory_format=torch.channels_last)
    g = torch.randn(2, 2048)
    arms = {"getattr": lambda: _by_getattr(block, out, g), "dicts": lambda: _by_dicts(block, out, g)}
    times: dict[str, list[float]] = {name: [] for name in arms}
    with torch.inference_mode():
        weights = _by_dicts(block, out, g)
        kernel = [time.perf_counter()]
        for _ in range(50):
            torch.ops.lgdnet.diffuse_(out, g, *weights, low_rank_kernel.MAX_ROWS,
                                      low_rank_kernel.MIN_WEIGHT_ELEMENTS)
        kernel.append(time.perf_counter())
        for r in range(ROUNDS + 1):
            for name in list(arms)[r % 2:] + list(arms)[: r % 2]:
                start = time.perf_counter()
                for _ in range(CALLS):
                    arms[name]()
                if r:  # the first round warms up
                    times[name].append((time.perf_counter() - start) / CALLS)
    median = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    return {"calls": CALLS, "rounds": ROUNDS, "median_us": {k: v * 1e6 for k, v in median.items()},
            "ratios": [d / a for d, a in zip(times["dicts"], times["getattr"])],
            "diffuse_us": (kernel[1] - kernel[0]) / 50 * 1e6}


def to_markdown(report: dict[str, Any]) -> str:
    m = report["median_us"]
    ratios = sorted(report["ratios"])
    return "\n".join([
        "# The Python of a block's one-call diffusion",
        "",
        f"Command: `{report['command']}`. Date: {report['date']}. Machine: "
        f"{report['machine']['cpu_model']}, {report['machine']['usable_cores']} cores, torch "
        f"{report['versions']['torch']}.",
        "",
        f"`lgd2d_r50`'s `layer4[1]` at inference, median over {report['rounds']} interleaved "
        f"rounds of {report['calls']} calls: the checks and weight lookups of one block call.",
        "",
        "| arm | per block call |",
        "|---|---|",
        f"| names through `nn.Module.__getattr__` (before) | {m['getattr']:.1f} us |",
        f"| the modules' dictionaries (`diffusion_kernel.applies` + `_weights`) | {m['dicts']:.1f} us |",
        f"| ratio dicts / getattr, median [min, max] | {ratios[len(ratios) // 2]:.2f} "
        f"[{ratios[0]:.2f}, {ratios[-1]:.2f}] |",
        f"| for scale: `lgdnet::diffuse_` on the block's warm map (2 clips x 3 frames) | "
        f"{report['diffuse_us']:.0f} us |",
        "",
        f"A forward calls 16 blocks: {16 * (m['getattr'] - m['dicts']) / 1e3:.2f} ms saved per "
        "forward.",
    ]) + "\n"


def main() -> int:
    report = run()
    report.update(command="python benchmarks/bench_block_calls.py", date=utc_now(),
                  machine=machine_description(torch.device("cpu")), versions=library_versions())
    path = write_results(BENCH_DIR, "block_calls_results", report, to_markdown(report))
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
