"""Run every lgdnet benchmark and write ``benchmarks/RESULTS.md`` and ``benchmarks/results.json``.

Usage::

    python benchmarks/run_all.py                 # full run (the committed results)
    python benchmarks/run_all.py --quick         # smoke run: tiny models, few repeats
    python benchmarks/run_all.py --device cuda   # on a GPU (adds bf16 figures)
    python benchmarks/run_all.py --only diffusion efficiency

Sections: ``models`` (item 1), ``diffusion`` (item 2), ``efficiency`` (item 3), ``sketch``
(item 4), ``pipeline`` (items 5 and 6). A partial run (``--only``) writes next to the full
results under its own name (``RESULTS.diffusion.md``, ...) and a quick run to the temporary
folder, so that neither replaces the committed results.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BENCH_DIR,
    FLOP_CONVENTION,
    REPO_ROOT,
    BenchOptions,
    clock_name,
    library_versions,
    machine_description,
    use_cpu_clock,
    utc_now,
)

from lgdnet.allocator import keep_freed_memory  # noqa: E402

SECTIONS = ("models", "diffusion", "efficiency", "sketch", "pipeline")
# Execution order: the headline comparisons first, so a run cut short still has them.
RUN_ORDER = ("diffusion", "efficiency", "sketch", "pipeline", "models")
TITLES = {
    "models": "1. Per-model cost",
    "diffusion": "2. The cost of diffusion",
    "efficiency": "3. Hardware efficiency",
    "sketch": "4. The combination classifier (Tensor Sketch head)",
    "pipeline": "5-6. Input pipeline and multi-view evaluation memory",
}


def _section_module(name: str) -> Any:
    return __import__(f"bench_{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny models and few repeats (numbers not meaningful)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda[:i] (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: PyTorch's choice, reported)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="run only these sections")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time (default), or process CPU time: with --threads 1 on a "
                        "machine busy with other jobs it measures work, not the share of cores")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement")
    parser.add_argument("--pairs", type=int, default=None,
                        help="interleaved pairs per comparison (at least 10 for the targets)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--no-compile", action="store_true",
                        help="skip the block-level torch.compile arms (bench_compile.py has the "
                             "whole-network comparison)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where RESULTS.md and results.json go (default: benchmarks/; "
                        "for --quick the system's temporary folder)")
    parser.add_argument("--skip-companions", action="store_true",
                        help="do not run bench_decoding.py / bench_flow.py after the sections")
    return parser


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    if args.threads:
        torch.set_num_threads(args.threads)
    quick = args.quick
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # as training does (run.cudnn_benchmark)
    use_cpu_clock(args.clock == "cpu")
    return BenchOptions(
        device=torch.device(args.device),
        quick=quick,
        repeats=args.repeats or (2 if quick else 3),
        pairs=args.pairs or (3 if quick else 11),
        warmup=1,
        memory=not args.no_memory,
        compile=not args.no_compile,
    )


def _command(argv: list[str]) -> str:
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(REPO_ROOT))
    except ValueError:
        script_text = str(script)
    return shlex.join(["python", script_text, *argv])


def run_sections(opts: BenchOptions, sections: list[str]) -> tuple[dict[str, Any], list[str]]:
    results: dict[str, Any] = {}
    failed = []
    for name in sections:
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            results[name] = _section_module(name).run(opts)
        except Exception:  # one broken section must not lose the others' numbers
            failed.append(name)
            results[name] = {"error": traceback.format_exc()}
            print(results[name]["error"], file=sys.stderr, flush=True)
        results[name]["duration_s"] = round(time.perf_counter() - start, 1)
        print(f"== {name} done in {results[name]['duration_s']:.0f} s", flush=True)
    return results, failed


# Benchmarks with their own scripts and result files, run after the sections when present.
COMPANIONS = (
    ("bench_decoding.py", "decoding_results.md", "Video decoding"),
    ("bench_flow.py", "flow_results.md", "Optical flow"),
    ("bench_allocator.py", "allocator_results.md", "CPU allocation"),
)


def _run_companions() -> list[dict[str, Any]]:
    ran = []
    for script, results, title in COMPANIONS:
        if not (BENCH_DIR / script).exists():
            continue
        print(f"== {script}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(BENCH_DIR / script)], cwd=REPO_ROOT, check=False)
        ran.append({"script": f"benchmarks/{script}", "results": results, "title": title,
                    "exit_status": proc.returncode,
                    "duration_s": round(time.perf_counter() - start, 1)})
    return ran


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    v = report["versions"]
    lines = [
        "# lgdnet benchmarks",
        "",
        f"Command: `{report['command']}` (from the repository root; `make bench` runs it).",
        "",
        f"Date: {report['date']}. Duration: {report['duration_s']:.0f} s."
        + (" **Quick smoke run: numbers are not meaningful.**" if report["quick"] else ""),
        "",
        f"Machine: {m['cpu_model']} ({', '.join(m['cpu_flags']) or 'no SIMD flags read'}), "
        f"{m['usable_cores']} usable of {m['logical_cores']} logical cores, {m['memory_gib']} GiB "
        f"memory, {m['os']}; device `{m['device']}`"
        + (f" ({m['gpu']})" if m["gpu"] else "")
        + f"; torch threads {m['torch_threads']} (inter-op {m['torch_interop_threads']}); "
        f"load average at start {m['load_average_at_start']}.",
        "",
        f"Versions: lgdnet {v['lgdnet']} ({v['lgdnet_commit']}), torch {v['torch']}, "
        f"numpy {v['numpy']}, av {v['av']}" + (f", CUDA {v['cuda']}" if v["cuda"] else "") + ".",
        "",
        f"Conventions: times are medians over repeats after warm-up ({report['settings']['clock']} "
        "clock, synchronised on CUDA); A/B comparisons are interleaved in one process and reported as the median "
        "of per-pair ratios `median [min, max] (IQR, n)`. " + FLOP_CONVENTION + ". "
        "Inference runs in eval mode under `torch.inference_mode`; a training step is forward "
        "+ `stage_loss` + backward + SGD (momentum) step. Random inputs, 400 classes. "
        + ("Large CPU buffers are kept for reuse, as the `lgdnet` command runs "
           "(`lgdnet.allocator.keep_freed_memory`); peak memory is measured in fresh "
           "processes with glibc's default allocation, i.e. the working memory."
           if report["settings"].get("keep_freed_memory") else
           "glibc's default allocation (large buffers mapped anew each time)."),
        "",
    ]
    for name in SECTIONS:
        if name not in report["results"]:
            continue
        section = report["results"][name]
        lines += [f"## {TITLES[name]}", ""]
        if "error" in section:
            lines += ["This section failed:", "", "```", section["error"].strip(), "```", ""]
            continue
        lines += [_section_module(name).to_markdown(section), "",
                  f"_Section time: {section['duration_s']:.0f} s._", ""]
    for companion in report.get("companions", []):
        lines += [f"## {companion['title']}", "",
                  f"See [{companion['results']}]({companion['results']}), written by "
                  f"`{companion['script']}` in this run ({companion['duration_s']:.0f} s, exit "
                  f"status {companion['exit_status']}).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    # as the lgdnet command does at start-up (lgdnet.allocator)
    kept = keep_freed_memory()
    opts = options_from_args(args)
    start = time.perf_counter()
    report: dict[str, Any] = {
        "command": _command(argv),
        "date": utc_now(),
        "quick": opts.quick,
        "machine": machine_description(opts.device),
        "versions": library_versions(),
        "settings": {"clock": clock_name(), "repeats": opts.repeats, "pairs": opts.pairs, "warmup": opts.warmup,
                     "memory": opts.memory, "flop_convention": FLOP_CONVENTION,
                     "keep_freed_memory": kept},
    }
    report["results"], failed = run_sections(opts, [s for s in RUN_ORDER if s in args.only])
    if not args.skip_companions and not opts.quick and set(args.only) == set(SECTIONS):
        report["companions"] = _run_companions()
    report["duration_s"] = time.perf_counter() - start
    # Quick or partial runs never replace the full results.
    suffix = ".quick" if opts.quick else ""
    if set(args.only) != set(SECTIONS):
        suffix += "." + "-".join(args.only)
    out_dir = args.out_dir or (Path(tempfile.gettempdir()) / "lgdnet-bench" if opts.quick
                               else BENCH_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"results{suffix}.json"
    md_path = out_dir / f"RESULTS{suffix}.md"
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    md_path.write_text(render_markdown(report))
    print(f"wrote {md_path} and {json_path} in {report['duration_s']:.0f} s")
    return 1 if failed else 0


def main_for_section(name: str) -> int:
    """Entry point of ``python benchmarks/bench_NAME.py``: that section alone, same flags."""
    return main(["--only", name, *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
