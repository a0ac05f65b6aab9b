"""``lgdnet models``: print the model zoo (parameters, FLOPs, output shapes)."""

from __future__ import annotations

import argparse
import json
from typing import Any

FLOPS_CONVENTION = (
    "FLOPs per view at the default input, counted by torch.utils.flop_counter "
    "(2 FLOPs per multiply-add; convolutions and matrix products)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the registered networks with parameters, FLOPs and output shapes",
        description="List the registered LGD networks. " + FLOPS_CONVENTION + ".",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument(
        "--num-classes", type=int, default=400, help="classes of the stage-1 head (default 400)"
    )
    parser.add_argument("names", nargs="*", help="only these models (default: all)")
    parser.set_defaults(func=run)


def describe(name: str, num_classes: int = 400) -> dict[str, Any]:
    """Parameters, FLOPs and output shapes of one model, built and run on the ``meta`` device
    (no memory, no arithmetic), so even ResNet-101 is instant."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lgdnet.models import count_parameters, create_model

    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes)
    t, h, w = model.default_input_size
    clip = torch.empty(1, model.in_channels, t, h, w, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        local, global_ = model.forward_features(clip)
        model.head(local, global_)
    return {
        "name": name,
        "kind": model.kind,
        "diffusion": model.diffusion,
        "parameters": count_parameters(model),
        "flops": int(counter.get_total_flops()),
        "input": [model.in_channels, t, h, w],
        "local": list(local.shape[1:]),
        "global": list(global_.shape[1:]),
    }


def run(args: argparse.Namespace) -> int:
    from lgdnet.errors import ConfigError
    from lgdnet.models import list_models

    names = args.names or list_models()
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        raise ConfigError(
            f"unknown model(s) {', '.join(unknown)}; known: {', '.join(list_models())}"
        )
    try:  # tqdm is an optional extra; the zoo listing works without it
        from tqdm import tqdm

        progress = tqdm(names, desc="measuring", unit="model", leave=False, disable=None)
    except ImportError:
        progress = names
    rows = [describe(name, args.num_classes) for name in progress]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"# {FLOPS_CONVENTION}; parameters include a {args.num_classes}-way stage-1 head.")
    header = f"{'name':<16} {'kind':<4} {'diffusion':<9} {'parameters':>12} {'GFLOPs':>8}  "
    print(header + f"{'input C,T,H,W':<18} {'local C,T,H,W':<18} global")
    for row in rows:
        shape = ",".join(map(str, row["input"]))
        local = ",".join(map(str, row["local"]))
        print(
            f"{row['name']:<16} {row['kind']:<4} {row['diffusion']:<9} "
            f"{row['parameters']:>12,} {row['flops'] / 1e9:>8.2f}  {shape:<18} {local:<18} "
            f"{row['global'][0]}"
        )
    return 0
