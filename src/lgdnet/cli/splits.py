"""``lgdnet splits``: fine-tune on the three splits of UCF101 or HMDB51, then Table 6."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "splits",
        help="train on the splits of UCF101 or HMDB51 and write the Table 6 summary",
        description=(
            "Train one run per split (and per stream with --flow-config) with the given "
            "configuration, each in OUT/<stream>/split<N>: finished runs are skipped and an "
            "interrupted one is resumed, so the command can be started again after a kill. "
            "Then write OUT/table6.md and OUT/table6.json: the multi-view top-1 of each split "
            "and the mean, per stream and fused. '{split}' in data.train_list, data.val_list, "
            "data.root, data.classes and model.init_checkpoint is replaced by the split "
            "number; data.split is set to it. See docs/finetuning.md."
        ),
    )
    parser.add_argument("--config", required=True, metavar="CONFIG.yaml",
                        help="the RGB (or single-stream) training configuration")
    parser.add_argument("--dataset", required=True, choices=["ucf101", "hmdb51"])
    parser.add_argument("--splits", nargs="+", type=int, default=[1, 2, 3], metavar="N",
                        help="split numbers (default: 1 2 3)")
    parser.add_argument("--flow-config", default=None, metavar="F.yaml",
                        help="the flow stream's configuration: adds the Flow and fused columns")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a setting of both configurations")
    parser.add_argument("--fusion-weights", nargs=2, type=float, default=[1.0, 1.5],
                        metavar=("RGB", "FLOW"), help="late-fusion weights (default 1 1.5)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where the runs and the table go (default: run.out_dir)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lgdnet.apps.splits import run_splits
    from lgdnet.engine.config import apply_overrides, load_config

    config = apply_overrides(load_config(args.config), args.overrides)
    flow = (apply_overrides(load_config(args.flow_config), args.overrides)
            if args.flow_config else None)
    table = run_splits(config, args.dataset, tuple(args.splits), flow_config=flow,
                       out_dir=args.out, fusion_weights=tuple(args.fusion_weights))
    out = args.out or config.run.out_dir
    from lgdnet.apps.splits import format_table

    print(format_table(table), end="")
    print(f"table: {out}/table6.md, {out}/table6.json")
    return 0
