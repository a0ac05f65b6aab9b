"""The epilogue kernel of this tree against the same kernel at another commit, side by side.

The source of ``lgd_epilogue.cpp`` at ``--ref`` (read with ``git show``) is built as a second
library, its ops registered as ``lgdnet_ref::*``, so both versions run in one process on the
same tensors: forward (``add_relu_pool_``) and backward (``add_relu_pool_backward``) on
LGD-2D's block maps (frames, batch 2 and 4 of 3 segments) in each layout of ``--layouts``,
at one and two threads. In the same rounds the ops the plain block runs in their place, the
in-place ReLU forward and ``threshold_backward``. Reported: the median of per-round ratios
this tree / ``--ref`` and this tree / ReLU, below 1 faster.

Run: ``python benchmarks/bench_epilogue_ab.py --ref COMMIT [--rounds 40] [--layouts ...]``; writes
``epilogue_ab_results.md`` and ``.json`` next to this file.
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BENCH_DIR,
    fmt_ratio,
    library_versions,
    machine_description,
    summarize,
    utc_now,
    write_results,
)

from lgdnet.models import epilogue_kernel  # noqa: E402

SOURCE = "src/lgdnet/models/csrc/lgd_epilogue.cpp"
SHAPES = [(6, 256, 56, 56), (6, 512, 28, 28), (6, 1024, 14, 14), (6, 2048, 7, 7),
          (12, 256, 56, 56), (12, 512, 28, 28), (12, 1024, 14, 14), (12, 2048, 7, 7)]


def build_reference(ref: str, folder: Path) -> Any:
    """Build the kernel source at ``ref`` as ``torch.ops.lgdnet_ref``."""
    from torch.utils import cpp_extension

    root = Path(__file__).resolve().parent.parent
    text = subprocess.run(["git", "show", f"{ref}:{SOURCE}"], cwd=root, check=True, capture_output=True,
                          text=True).stdout
    text = text.replace("TORCH_LIBRARY(lgdnet,", "TORCH_LIBRARY(lgdnet_ref,")
    text = text.replace("TORCH_LIBRARY_IMPL(lgdnet,", "TORCH_LIBRARY_IMPL(lgdnet_ref,")
    # built alone: without the header the other sources share, and without exporting the
    # entry point they call (this tree's library defines it)
    text = text.replace('#include "kernels.h"', "").replace("lgdnet::epilogue_forward", "reference_epilogue_forward")
    path = folder / "lgd_epilogue_ref.cpp"
    path.write_text(text)
    _, flags = epilogue_kernel._flags()
    cpp_extension.load(name="lgdnet_epilogue_ref_" + hashlib.sha1(text.encode()).hexdigest()[:10], sources=[str(path)],
                       extra_cflags=flags, extra_ldflags=[f for f in flags if f == "-fopenmp"],
                       is_python_module=False, build_directory=str(folder))
    return torch.ops.lgdnet_ref


LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def compare(shape: tuple[int, ...], reference: Any, rounds: int, layout: str = "channels_last",
            calls: int = 5) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    fmt = LAYOUTS[layout]
    x = torch.rand(shape, generator=generator).contiguous(memory_format=fmt)
    r = torch.rand(2, shape[1], generator=generator) * 1e-3  # small: x stays bounded over the calls
    y = torch.relu(torch.randn(shape, generator=generator)).contiguous(memory_format=fmt)
    grad_y = torch.randn(shape, generator=generator).contiguous(memory_format=fmt)
    ours = torch.ops.lgdnet
    fns = {"forward": (lambda: ours.add_relu_pool_(x, r, 1.0), lambda: reference.add_relu_pool_(x, r, 1.0),
                       lambda: x.relu_()),
           "backward": (lambda: ours.add_relu_pool_backward(grad_y, y, r),
                        lambda: reference.add_relu_pool_backward(grad_y, y, r),
                        lambda: torch.ops.aten.threshold_backward(grad_y, y, 0))}
    result: dict[str, Any] = {"shape": list(shape), "layout": layout, "mib": x.numel() * 4 / 2**20}
    for name, (new, old, plain) in fns.items():
        arms = [("new", new), ("old", old), ("plain", plain)]
        for _ in range(3):
            new(), old(), plain()
        times: dict[str, list[float]] = {key: [] for key, _ in arms}
        for i in range(rounds):
            for key, fn in arms[i % 3:] + arms[:i % 3]:  # each arm first in a third of the rounds
                started = time.perf_counter()
                for _ in range(calls):
                    fn()
                times[key].append((time.perf_counter() - started) / calls)
        ratios = [a / b for a, b in zip(times["new"], times["old"])]
        to_plain = [a / b for a, b in zip(times["new"], times["plain"])]
        result[name] = {"new_s": summarize(times["new"])["median"], "ref_s": summarize(times["old"])["median"],
                        "plain_s": summarize(times["plain"])["median"],
                        "ratio": {**summarize(ratios), "ratios": ratios},
                        "ratio_to_plain": {**summarize(to_plain), "ratios": to_plain}}
    return result


def markdown(report: dict[str, Any]) -> str:
    lines = ["# The epilogue kernel against an earlier version of it", "",
             f"Command: `{report['command']}`. Date: {report['date']}. Machine: "
             f"{report['machine']['cpu_model']}, {report['machine'].get('usable_cores', '?')} cores; "
             f"torch {report['versions'].get('torch')}.", "",
             f"This tree's kernel against the one at `{report['ref']}`, both built in one process and called "
             "alternately on the same float32 maps (LGD-2D's block outputs, in cache between the calls), "
             "with the ops the plain block runs instead (*ReLU*: the in-place ReLU forward, "
             "`threshold_backward` backward). Ratio per round, `median [min, max] (IQR, n)`: this tree / "
             "reference (below 1 this tree is faster) and this tree / ReLU (what the kernel costs beyond "
             "the pass it replaces).", "",
             "| threads | layout | map (frames, C, H, W) | MiB | forward: ref, now, ReLU | now / ref | now / ReLU "
             "| backward: ref, now, ReLU | now / ref | now / ReLU |", "|---|---|---|---|---|---|---|---|---|---|"]
    for threads, rows in report["results"].items():
        for e in rows:
            cells = [f"{threads}", e.get("layout", "channels_last"), f"{tuple(e['shape'])}", f"{e['mib']:.1f}"]
            for d in (e["forward"], e["backward"]):
                plain = d.get("plain_s")
                times = [d["ref_s"], d["new_s"]] + ([plain] if plain is not None else [])
                cells += [", ".join(f"{t * 1e3:.3f}" for t in times) + " ms", fmt_ratio(d["ratio"]),
                          fmt_ratio(d["ratio_to_plain"]) if "ratio_to_plain" in d else ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", required=True, help="the git commit to compare against")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--layouts", nargs="+", choices=tuple(LAYOUTS), default=list(LAYOUTS))
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR)
    args = parser.parse_args(argv)
    if not epilogue_kernel.available():
        raise SystemExit(f"the epilogue kernel is unavailable: {epilogue_kernel.reason()}")
    previous = torch.get_num_threads()
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="lgdnet-epilogue-ref-") as tmp:
        reference = build_reference(args.ref, Path(tmp))
        for threads in sorted({previous, 1}, reverse=True):
            torch.set_num_threads(threads)
            results[str(threads)] = []
            for layout in args.layouts:
                for shape in SHAPES:
                    print(f"[epilogue-ab] {threads} thread(s) {layout} {shape}", flush=True)
                    results[str(threads)].append(compare(shape, reference, args.rounds, layout))
    torch.set_num_threads(previous)
    report = {"command": "python benchmarks/bench_epilogue_ab.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "date": utc_now(), "ref": args.ref, "machine": machine_description(torch.device("cpu")),
              "versions": library_versions(), "results": results}
    text = markdown(report)
    path = write_results(args.out_dir, "epilogue_ab_results", report, text)
    print(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
