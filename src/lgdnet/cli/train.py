"""``lgdnet train``: train an LGD network in the two stages of Sec. 4.3.

Examples::

    lgdnet train --config run.yaml
    lgdnet train --config run.yaml --set optim.lr=0.001 --set run.stages=1 --out runs/exp1
    lgdnet train --model lgd3d_tiny --train-list data/train.txt --val-list data/val.txt
    lgdnet train --resume --out runs/exp1            # continue a killed run
    torchrun --nproc_per_node=4 -m lgdnet.cli train --config run.yaml   # 4 processes
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model (stage 1, then stage 2)",
        description="Train an LGD network: stage 1 with the loss of Eq. (6), then stage 2 "
        "with the local and global combination classifier and Eq. (7) (Sec. 4.3). "
        "Defaults follow Sec. 5.2. Settings come from --config, then --set overrides, then "
        "the shortcut options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON configuration file")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                        help="override one setting, e.g. optim.lr=0.001 (repeatable)")
    parser.add_argument("--out", metavar="DIR", help="run directory (run.out_dir)")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                        help="continue the run in the run directory from its latest "
                        "stage{N}_last checkpoint, or from CKPT; without --config the "
                        "checkpoint's own configuration is used")
    parser.add_argument("--model", metavar="NAME", help="model name (model.name)")
    parser.add_argument("--train-list", metavar="FILE", help="training annotations (data.train_list)")
    parser.add_argument("--val-list", metavar="FILE", help="validation annotations (data.val_list)")
    parser.add_argument("--root", metavar="DIR", help="folder the video paths are relative to (data.root)")
    parser.add_argument("--device", metavar="DEVICE",
                        help="run.device: auto, cpu, cuda or cuda:N (checked before anything "
                             "is written)")
    parser.set_defaults(func=run)


def build_config(args: argparse.Namespace):  # -> lgdnet.engine.config.Config
    """The configuration from the file (or a resumed checkpoint), overrides and shortcuts."""
    from pathlib import Path

    from lgdnet.engine.checkpoint import read_metadata
    from lgdnet.engine.config import Config, apply_overrides, config_from_dict, load_config
    from lgdnet.engine.training import find_resume_checkpoint

    out_dir = args.out
    if args.config:
        config = load_config(args.config)
    elif args.resume:
        run_dir = Path(args.out or Config().run.out_dir)
        checkpoint = find_resume_checkpoint(run_dir, args.resume)
        config = config_from_dict(read_metadata(checkpoint)["config"], source=str(checkpoint))
        # continue in the folder the checkpoint is in (the run may have been moved)
        out_dir = out_dir or str(checkpoint.parent)
    else:
        config = Config()
    shortcuts = {"model.name": args.model, "data.train_list": args.train_list,
                 "data.val_list": args.val_list, "data.root": args.root,
                 "run.out_dir": out_dir, "run.device": args.device}
    overrides = list(args.overrides) + [f"{k}={v}" for k, v in shortcuts.items() if v is not None]
    return apply_overrides(config, overrides)


def run(args: argparse.Namespace) -> int:
    import os

    from lgdnet.engine.training import train
    from lgdnet.errors import ConfigError

    config = build_config(args)
    if not config.data.train_list:
        raise ConfigError("no training list: give --train-list or data.train_list in --config")
    summary = train(config, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # torchrun's rank; the group is gone by now
        if summary.get("best_checkpoint"):
            print(f"best model: {summary['best_checkpoint']} ({summary['best_reason']})")
        else:
            print(f"no model saved: {summary.get('best_reason')}")
        if summary.get("training_curves"):
            print(f"training curves: {summary['training_curves']}")
    return 0
