"""``scaleseg config``: print, validate or export the run configuration."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("config", help="print / validate / export the run configuration")
    csub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = csub.add_parser("show", help="print the defaults (or FILE merged over them) as JSON")
    show.add_argument("file", nargs="?", help="a configuration file to merge over the defaults")
    show.add_argument("--stage", help="print one stage only (gt, train, predict, ...)")
    val = csub.add_parser("validate", help="check a configuration file; exit 1 when invalid")
    val.add_argument("file")
    exp = csub.add_parser("export", help="write the defaults to FILE as JSON")
    exp.add_argument("file")
    exp.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg) -> int:
    from ..config import STAGES, load_config, save_config
    from ._common import CLIError

    if args.action == "show":
        c = load_config(args.file)
        if args.stage:
            if args.stage not in STAGES:
                raise CLIError(f"unknown stage {args.stage!r}; expected one of {', '.join(STAGES)}")
            print(getattr(c, args.stage).model_dump_json(indent=2))
        else:
            print(c.to_json())
    elif args.action == "validate":
        load_config(args.file)
        print(f"{args.file}: valid")
    else:
        path = Path(args.file)
        if path.exists() and not args.overwrite:
            raise CLIError(f"{path} already exists (use --overwrite to replace it)")
        save_config(load_config(None), path)
        print(f"wrote defaults to {path}")
    return 0
