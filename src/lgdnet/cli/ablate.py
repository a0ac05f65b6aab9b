"""``lgdnet ablate``: the paper's ablations (Table 2, Table 3, Fig. 4) in miniature on the CPU."""

from __future__ import annotations

import argparse


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ablate",
        help="compare the diffusion variants and the combination classifier (Table 2/3, Fig. 4)",
        description=(
            "Train tiny 2D (TSN-style) and 3D (P3D-style) networks with no diffusion, "
            "block_v1, block_v2 and the LGD block on the embedded dataset, several seeds "
            "each, with identical data and schedules (Sec. 5.3); then train the combination "
            "classifier on top of the stage-1 LGD models (Sec. 5.4), next to stage 1 "
            "continued for the same epochs. Every model is scored by multi-clip evaluation "
            "on held-out clips. Writes results.json, table2.md, table3.md and losses.png "
            "(local and global path losses per epoch, Fig. 4) under --out. Finished runs are "
            "skipped when rerun. The full grid takes about an hour on 2 CPU cores; --quick "
            "takes a minute or two."
        ),
    )
    parser.add_argument("--out", default="lgdnet-ablation", metavar="DIR",
                        help="folder for data/, runs/ and the reports (default: ./lgdnet-ablation)")
    parser.add_argument("--quick", action="store_true",
                        help="a minimal grid (1 seed, 1 epoch, a few clips): checks the pipeline")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per variant (default 3)")
    parser.add_argument("--epochs", type=int, default=None, help="stage-1 epochs (default 60)")
    parser.add_argument("--lr", type=float, default=None, help="stage-1 learning rate (default 0.01)")
    parser.add_argument("--lr-step", type=int, default=None,
                        help="epochs between divisions of the learning rate by 10 "
                             "(default: once, after 3/4 of the epochs)")
    parser.add_argument("--stage2-epochs", type=int, default=None,
                        help="epochs of the combination classifier and of the control (default 3; "
                             "0 skips Table 3)")
    parser.add_argument("--clips-per-class", type=int, default=None,
                        help="clips written per class, a quarter held out (default 120)")
    parser.add_argument("--networks", type=_names, default=None, metavar="LIST",
                        help="comma-separated subset of 2d,3d")
    parser.add_argument("--variants", type=_names, default=None, metavar="LIST",
                        help="comma-separated subset of none,v1,v2,lgd")
    parser.add_argument("--global-residual-init", choices=("xavier", "zero"), default=None,
                        help="initial W^{x,g} of the diffusion blocks: Xavier like every weight "
                             "(default, Sec. 5.2) or zero (the blocks start as the baseline's)")
    parser.add_argument("--memory-format", default=None,
                        choices=("auto", "channels_last", "contiguous"),
                        help="activations' layout (default auto: channels-last on the CPU); the "
                             "documented results were trained contiguous")
    parser.add_argument("--workers", type=int, default=2,
                        help="runs trained side by side in separate processes, one thread each "
                             "(default 2)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per run (default: 1 with several workers, else "
                             "torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--task", default="embedded",
                        choices=("embedded", "relations", "relations-authors-init",
                                 "relations-preliminary"),
                        help="embedded (default): the embedded action dataset; relations: the "
                             "far and near relation tasks (lgdnet.apps.relations, "
                             "docs/ablations.md), Xavier initialisation (Sec. 5.2); "
                             "relations-authors-init: the far task with both initialisations paired "
                             "by seed, and the authors' block order; "
                             "relations-preliminary: a few minutes, 3D, far task, 2 seeds")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import sys

    if args.task != "embedded":
        return run_relation_grid(args)

    from lgdnet.apps.ablation import ABLATION_MODES, run_ablation

    settings = ABLATION_MODES["quick" if args.quick else "full"]
    changes = {name: getattr(args, name) for name in
               ("seeds", "epochs", "lr", "lr_step", "stage2_epochs", "clips_per_class", "networks",
                "variants", "global_residual_init", "memory_format")
               if getattr(args, name) is not None}
    try:
        settings = dataclasses.replace(settings, **changes)
    except ValueError as error:
        print(f"lgdnet ablate: {error}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("lgdnet ablate: --workers must be at least 1", file=sys.stderr)
        return 2
    from lgdnet.locking import output_lock

    threads = args.threads or (1 if args.workers > 1 else 0)
    with output_lock(args.out, what="--out"):  # one ablation per folder
        run_ablation(args.out, settings=settings, workers=args.workers, threads=threads,
                     progress=not args.no_progress)
    return 0


def run_relation_grid(args: argparse.Namespace) -> int:
    """``--task relations*``: the grid of :func:`lgdnet.apps.relations.run_relations`."""
    import dataclasses
    import sys

    from lgdnet.apps.relations import RELATION_MODES, run_relations
    from lgdnet.locking import output_lock

    mode = "quick" if args.quick else {"relations": "full", "relations-authors-init": "authors-init",
                                       "relations-preliminary": "preliminary"}[args.task]
    changes = {name: getattr(args, name) for name in ("seeds", "epochs", "lr", "clips_per_class",
                                                      "networks", "memory_format")
               if getattr(args, name) is not None}
    try:
        settings = dataclasses.replace(RELATION_MODES[mode], **changes)
    except ValueError as error:
        print(f"lgdnet ablate: {error}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("lgdnet ablate: --workers must be at least 1", file=sys.stderr)
        return 2
    out = args.out if args.out != "lgdnet-ablation" else "lgdnet-relations"
    with output_lock(out, what="--out"):
        run_relations(out, settings=settings, workers=args.workers, threads=args.threads or 1,
                      progress=not args.no_progress)
    return 0
