"""lgdnet's LGD-3D ResNet-50 against the authors' public LGD-P3D code, in one process.

The authors' network (``model/lgd_p3d_resnet.py`` of ZhaofanQiu/Optimization-Planning-for-
3D-ConvNets) is read from a checkout named by ``--authors-repo`` and run as published; nothing
of it is copied here. The two networks differ in design (theirs: a temporally strided stem
with a max-pool and P3D-A/B/C blocks in turn; ours: Table 1), so the figure of merit is the
rate, FLOP/s = FLOPs of one training step / its time, and the ratio is ours over theirs.

Both train in a loop written as a user writes it, with no settings beyond the defaults::

    model = lgdnet.create_model("lgd3d_r50", num_classes=400)
    loss = F.cross_entropy(model(clips), labels); loss.backward(); optimizer.step()

(theirs: the sum of the cross-entropies of its two training outputs). Arms, interleaved
round-robin (median of per-round ratios):

* ``lgdnet``: ``create_model`` as it comes (channels-last weights, the allocator setting that
  ``import lgdnet`` applies to the whole process, so the authors' code gets it too);
* ``lgdnet_contiguous``: ``create_model(..., memory_format="contiguous")``;
* ``authors``: their network as published (contiguous);
* ``authors_channels_last``: theirs converted with ``model.to(memory_format=channels_last_3d)``.

Run: ``python benchmarks/bench_vs_authors.py --authors-repo PATH [--batch 4] [--rounds 7]``;
writes ``benchmarks/vs_authors_results.{md,json}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    count_flops,
    fmt_ratio,
    fmt_seconds,
    library_versions,
    machine_description,
    summarize,
    time_round_robin,
    utc_now,
    write_results,
)

import lgdnet  # noqa: E402

CLASSES = 400


def load_authors_network(repo: Path) -> torch.nn.Module:
    """Their ``lgd_p3d_resnet50`` with average pooling, imported from the checkout as a
    package of its own (its relative import of ``model_factory`` only registers names)."""
    package = types.ModuleType("authors_model")
    package.__path__ = [str(repo / "model")]
    factory = types.ModuleType("authors_model.model_factory")
    factory.register_model = lambda fn: fn
    sys.modules.update({"authors_model": package, "authors_model.model_factory": factory})
    modules = {}
    for name, path in (("lgd_p3d_resnet", repo / "model" / "lgd_p3d_resnet.py"),
                       ("pooling_factory", repo / "layer" / "pooling_factory.py")):
        if not path.is_file():
            raise SystemExit(f"{path}: not found; --authors-repo must be a checkout of "
                             "ZhaofanQiu/Optimization-Planning-for-3D-ConvNets")
        spec = importlib.util.spec_from_file_location(f"authors_model.{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        modules[name] = module
    return modules["lgd_p3d_resnet"].lgd_p3d_resnet50(
        pooling_arch=modules["pooling_factory"].PoolingAverage, num_classes=CLASSES)


def user_step(model: torch.nn.Module, clips: torch.Tensor, labels: torch.Tensor) -> Any:
    """One training step as a user writes it; the authors' network returns two logits in
    training mode (local and global classifier), summed as their training script does."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4)

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = model(clips)
        outputs = out if isinstance(out, (list, tuple)) else [out]
        loss = sum(F.cross_entropy(o, labels) for o in outputs)
        loss.backward()
        optimizer.step()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--authors-repo", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    device = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    clips = torch.randn(args.batch, 3, 16, 112, 112, generator=generator)
    labels = torch.randint(0, CLASSES, (args.batch,), generator=generator)
    torch.manual_seed(0)
    networks = {
        "lgdnet": lgdnet.create_model("lgd3d_r50", num_classes=CLASSES),
        "lgdnet_contiguous": lgdnet.create_model("lgd3d_r50", num_classes=CLASSES,
                                                 memory_format="contiguous"),
        "authors": load_authors_network(args.authors_repo),
    }
    networks["authors_channels_last"] = load_authors_network(args.authors_repo).to(
        memory_format=torch.channels_last_3d)
    steps = {name: user_step(model, clips, labels) for name, model in networks.items()}
    flops = {name: count_flops(step) for name, step in steps.items()}
    timing = time_round_robin(steps, "authors", device, args.warmup, args.rounds)
    rows = {}
    for name in steps:
        times = timing[name]["seconds"]["times"]
        reference = timing["authors"]["seconds"]["times"]
        # per round: (our FLOPs / our time) / (their FLOPs / their time)
        rate_ratio = [(flops[name] / t) / (flops["authors"] / r) for t, r in zip(times, reference)]
        rows[name] = {"flops": flops[name], "seconds": timing[name]["seconds"],
                      "gflops_per_s": flops[name] / timing[name]["seconds"]["median"] / 1e9,
                      "rate_ratio_to_authors": {**summarize(rate_ratio), "ratios": rate_ratio}}
    command = (f"python benchmarks/bench_vs_authors.py --authors-repo PATH --batch {args.batch} "
               f"--rounds {args.rounds}")
    report = {"command": command, "date": utc_now(), "machine": machine_description(device),
              "versions": library_versions(), "batch": args.batch, "input": [3, 16, 112, 112],
              "rows": rows}
    lines = [
        "# lgdnet against the authors' LGD-P3D ResNet-50 code",
        "",
        f"Command: `{command}` ({report['date']}); PATH is a checkout of "
        "ZhaofanQiu/Optimization-Planning-for-3D-ConvNets. "
        f"Machine: {report['machine'].get('cpu_model', '?')}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}.",
        "",
        f"Training step at batch {args.batch}, 16x112x112 clips, 400 classes, in one process, "
        f"arms interleaved round-robin ({args.rounds} rounds after {args.warmup} warm-up). "
        "FLOPs by `torch.utils.flop_counter` (2 per multiply-add). Rate ratio: (FLOPs / time) "
        "of the arm over that of the authors' network as published, per round.",
        "",
        "| arm | GFLOPs per step | median step | GFLOP/s | rate / authors' |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(f"| `{name}` | {row['flops'] / 1e9:.1f} | "
                     f"{fmt_seconds(row['seconds']['median'])} | {row['gflops_per_s']:.1f} | "
                     f"{fmt_ratio(row['rate_ratio_to_authors'])} |")
    path = write_results(args.out, "vs_authors_results", report, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
