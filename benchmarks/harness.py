"""Measurement utilities shared by the lgdnet benchmarks.

Conventions used by every benchmark in this folder:

- **Times** are wall-clock seconds of one call, synchronised on CUDA, after warm-up calls.
  We report medians over repeats, never a lone run.
- **Comparisons** (A vs B) are measured interleaved in one process (A, B, A, B, ...) and
  reported as the median of the per-pair ratios B/A with their spread (min, quartiles, max),
  so that load from other processes affects both sides of a pair alike.
- **FLOPs** come from ``torch.utils.flop_counter.FlopCounterMode``: **2 FLOPs per
  multiply-add**, counting convolutions and matrix products (their backward too) only;
  element-wise work (BatchNorm, ReLU, pooling, additions, FFTs) is not counted.
- **Peak memory** on CPU is the peak resident set size of a fresh subprocess that builds one
  configuration and runs one step (``resource.getrusage``), reported both in total and as the
  increase over the resident size just before the step; on CUDA it is
  ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
FLOP_CONVENTION = (
    "FLOPs counted by torch.utils.flop_counter.FlopCounterMode: 2 FLOPs per multiply-add, "
    "convolutions and matrix products only (element-wise ops, pooling and FFTs not counted)"
)


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    """The SIMD features that decide fp32/bf16 throughput on x86 (empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                return [f for f in wanted if f in flags]
    except OSError:
        pass
    return []


def _memory_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # a missing optional package is reported as None, not an error
        return None
    return getattr(mod, "__version__", None)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
            text=True, timeout=10, check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine_description(device: torch.device) -> dict[str, Any]:
    """CPU model, core counts, memory, accelerator, threads and library versions."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    desc: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,
        "memory_gib": _memory_total_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "load_average_at_start": [round(v, 2) for v in load] if load else None,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    return desc


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries whose speed the numbers depend on."""
    import lgdnet

    return {
        "lgdnet": lgdnet.__version__,
        "lgdnet_commit": _git_commit(),
        "torch": torch.__version__,
        "numpy": _version("numpy"),
        "av": _version("av"),
        "cuda": torch.version.cuda,
    }


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# --------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# The clock of every measurement: wall time by default. ``use_cpu_clock()`` switches to the
# process's CPU time (all threads), which on a machine shared with other jobs, at one thread,
# measures the work done rather than the share of the cores obtained (CPU only).
_clock: Callable[[], float] = time.perf_counter


def use_cpu_clock(enabled: bool) -> None:
    global _clock
    _clock = time.process_time if enabled else time.perf_counter


def clock_name() -> str:
    return "cpu" if _clock is time.process_time else "wall"


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds taken by one call of ``fn`` (synchronised on CUDA)."""
    synchronize(device)
    start = _clock()
    fn()
    synchronize(device)
    return _clock() - start


def summarize(values: list[float]) -> dict[str, float | int]:
    """Median, quartiles, extremes and count of a list of measurements."""
    ordered = sorted(values)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {
        "median": statistics.median(ordered),
        "q1": q1,
        "q3": q3,
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
    }


def time_repeated(
    fn: Callable[[], object], device: torch.device, warmup: int, repeats: int
) -> dict[str, Any]:
    """Warm up, then time ``repeats`` calls; returns :func:`summarize` plus raw times."""
    for _ in range(warmup):
        time_once(fn, device)
    times = [time_once(fn, device) for _ in range(repeats)]
    return {**summarize(times), "times": times}


def time_interleaved(
    fn_a: Callable[[], object],
    fn_b: Callable[[], object],
    device: torch.device,
    warmup: int,
    pairs: int,
) -> dict[str, Any]:
    """Time A and B alternately (A, B, A, B, ...) and summarise the per-pair ratios B / A.

    The order inside a pair alternates too (AB, BA, AB, ...), so that neither side always
    runs right after the other's cache footprint.
    """
    for _ in range(warmup):
        time_once(fn_a, device)
        time_once(fn_b, device)
    times_a: list[float] = []
    times_b: list[float] = []
    for i in range(pairs):
        if i % 2 == 0:
            times_a.append(time_once(fn_a, device))
            times_b.append(time_once(fn_b, device))
        else:
            times_b.append(time_once(fn_b, device))
            times_a.append(time_once(fn_a, device))
    ratios = [b / a for a, b in zip(times_a, times_b)]
    return {
        "a": {**summarize(times_a), "times": times_a},
        "b": {**summarize(times_b), "times": times_b},
        "ratio_b_over_a": {**summarize(ratios), "ratios": ratios},
    }


# --------------------------------------------------------------------------- FLOPs


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (2 per multiply-add; see :data:`FLOP_CONVENTION`)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def make_matmul(device: torch.device, dtype: torch.dtype, size: int) -> tuple[Callable[[], None], int]:
    """A callable running one ``size``-square matrix product, and its FLOPs."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)

    def run() -> None:
        torch.mm(a, b, out=out)

    return run, 2 * size**3


# --------------------------------------------------------------------------- memory


def measure_memory(config: dict[str, Any], timeout_s: float = 900.0) -> dict[str, Any]:
    """Peak memory of one configuration, measured in a fresh subprocess.

    ``config`` is passed as JSON to ``benchmarks/memory_probe.py``; see its docstring.
    Returns the probe's JSON answer, or ``{"error": ...}`` if it failed.
    """
    cmd = [sys.executable, str(BENCH_DIR / "memory_probe.py"), json.dumps(config)]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    # `import lgdnet` keeps freed blocks (lgdnet.allocator); the probes measure the working
    # memory with glibc's default unless the configuration asks for the setting
    env["LGDNET_KEEP_FREED_MEMORY"] = "0"
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit status {proc.returncode}"}
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": "no JSON answer from memory_probe.py"}


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class BenchOptions:
    """Settings shared by every benchmark section.

    Args:
        device: where to run (``cpu`` or ``cuda[:i]``).
        quick: smoke run: tiny models and few repeats (numbers are not meaningful).
        repeats: timed repeats per measurement (after warm-up).
        pairs: interleaved pairs per A/B comparison.
        warmup: untimed calls before timing.
        memory: measure peak memory in subprocesses.
        compile: include the ``torch.compile`` arms (their compile time is minutes on 2 cores).
    """

    device: torch.device
    quick: bool
    repeats: int
    pairs: int
    warmup: int
    memory: bool = True
    compile: bool = True


def write_results(out_dir: Path, stem: str, report: dict[str, Any], markdown: str) -> Path:
    """Write ``STEM.json`` (the report) and ``STEM.md`` (its text) into ``out_dir``; returns
    the path of the ``.md`` file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    md_path = out_dir / f"{stem}.md"
    md_path.write_text(markdown)
    return md_path


def fmt_memory(entry: dict[str, Any] | None, peak: bool = True) -> str:
    """A memory probe's answer (:func:`measure_memory`) for a table cell: ``peak (+step)``
    MiB, or the step's increase alone with ``peak=False``."""
    if not entry:
        return "-"
    if "error" in entry:
        return "error"
    if peak:
        return f"{entry['peak_mib']:.0f} ({entry['step_mib']:+.0f})"
    return f"{entry['step_mib']:.0f}"


def fmt_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.1f} ms"


def fmt_count(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"


def fmt_ratio(summary: dict[str, Any]) -> str:
    """``median [min, max] (IQR q1-q3, n pairs)`` of a ratio summary."""
    return (
        f"{summary['median']:.3f} [{summary['min']:.3f}, {summary['max']:.3f}] "
        f"(IQR {summary['q1']:.3f}-{summary['q3']:.3f}, n={summary['n']})"
    )


def time_round_robin(
    fns: dict[str, Callable[[], object]],
    reference: str,
    device: torch.device,
    warmup: int,
    rounds: int,
) -> dict[str, Any]:
    """Interleave several callables (one call each per round, rotating the order) and
    summarise each one's per-round time ratio to ``reference``."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            time_once(fns[name], device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            times[name].append(time_once(fns[name], device))
    out: dict[str, Any] = {}
    for name in names:
        ratios = [t / ref for t, ref in zip(times[name], times[reference])]
        out[name] = {"seconds": {**summarize(times[name]), "times": times[name]},
                     "ratio_to_reference": {**summarize(ratios), "ratios": ratios}}
    return out


# --------------------------------------------------------------------------- memory traffic


def _touched_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements a tensor view addresses (broadcast dims count once)."""
    elements = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            elements *= size
    return elements * t.element_size()


def count_traffic(fn: Callable[[], object]) -> dict[str, dict[str, float]]:
    """Bytes read, written and freshly allocated per ATen op during one call of ``fn``.

    A deterministic proxy for memory traffic: every tensor argument of an op counts as read
    once and every tensor result as written once; view ops (``view``, ``expand``,
    ``transpose``, ...) move no data and are left out. Real kernels may read an input more
    than once (convolutions) or keep data in cache, so this is a lower bound meant for
    comparing two variants of the same network, not an absolute figure.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    table: dict[str, dict[str, float]] = {}

    class _Traffic(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            out = func(*args, **(kwargs or {}))
            if torch.Tag.view_copy in func.tags or func.is_view or func.__name__ in (
                    "detach.default", "alias.default", "_to_copy.default"):
                return out
            # out= arguments are written, not read
            out_names = {a.name for a in func._schema.arguments if a.is_out}
            read_kwargs = {k: v for k, v in (kwargs or {}).items() if k not in out_names}
            inputs = [a for a in tree_flatten((args, read_kwargs))[0] if isinstance(a, torch.Tensor)]
            outputs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
            entry = table.setdefault(func.overloadpacket.__name__,
                                     {"read": 0.0, "written": 0.0, "allocated": 0.0, "calls": 0.0})
            entry["read"] += sum(_touched_bytes(t) for t in inputs)
            written = sum(_touched_bytes(t) for t in outputs)
            entry["written"] += written
            if not out_names and not func._schema.is_mutable:  # results in fresh memory
                entry["allocated"] += written
            entry["calls"] += 1
            return out

    with _Traffic():
        fn()
    return table
