"""``lgdnet demo``: train and evaluate a small LGD-3D on the embedded dataset, on a CPU."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train and evaluate a small LGD-3D on the embedded dataset (CPU, minutes)",
        description=(
            "Write the embedded synthetic dataset, train a tiny LGD-3D through both stages "
            "(Sec. 4.3) on the CPU, evaluate it with multi-clip inference on held-out clips "
            "(Sec. 5.2), print the accuracy next to chance, and predict one held-out clip. "
            "Takes at most 10 minutes on 2 CPU cores (--quick: about 2 minutes). Everything "
            "goes under ./lgdnet-demo (or --out)."
        ),
    )
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="demo folder: data/, run/ (checkpoints, plots), run/eval/ "
                             "(default: ./lgdnet-demo)")
    parser.add_argument("--quick", action="store_true",
                        help="a smaller dataset and schedule: about 2 minutes")
    parser.add_argument("--seed", type=int, default=0, help="seeds the dataset and training")
    parser.add_argument("--mode", choices=["full", "quick", "tiny"], default=None,
                        help=argparse.SUPPRESS)  # "tiny": seconds, for the test suite
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--task", choices=["classification", "detection"],
                        default="classification",
                        help="classification (default), or detection: spatio-temporal action "
                             "detection with LGD-3D's local features (Sec. 5.6), into "
                             "./lgdnet-demo-detection unless --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from lgdnet.apps.demo import run_demo

    mode = args.mode or ("quick" if args.quick else "full")
    previous = torch.get_num_threads()
    torch.set_num_threads(demo_threads())
    try:
        if args.task == "detection":
            from lgdnet.apps.detection_demo import run_detection_demo

            run_detection_demo(args.out or "lgdnet-demo-detection", mode=mode, seed=args.seed,
                               progress=not args.no_progress)
        else:
            run_demo(args.out or "lgdnet-demo", mode=mode, seed=args.seed,
                     progress=not args.no_progress)
    finally:
        torch.set_num_threads(previous)
    return 0


def demo_threads() -> int:
    """One thread: the demo's network is tiny, so more threads gain little, and on a busy
    machine threads that wait for each other at every operation cost far more than they give
    (measured: one step 15 times slower with 2 threads than with 1 while other processes kept
    both cores busy). A fixed count also makes the demo's numbers the same on every machine,
    since the results of floating-point reductions depend on the thread count."""
    return 1
