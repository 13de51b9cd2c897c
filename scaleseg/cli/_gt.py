"""``scaleseg gt``: estimated ground truth and expert scores from several experts' masks."""

from __future__ import annotations

import argparse

from ._common import CLIError, add_cluster_args, add_config_arg, client_from_args, say


def register(sub) -> None:
    p = sub.add_parser(
        "gt",
        help="estimate the ground truth (STAPLE / majority vote) and score every expert",
        description="Estimate a ground truth from several experts' masks -- label groups "
        "labels/expert_* of an OME-Zarr collection, or mask folders <masks>/<expert>/<image>.<ext> "
        "-- and score each expert against it (Dice, mAP, AP50), with the inter-expert agreement "
        "matrix and the Cellpose-SAM human-consensus bound. One Dask task per image. Images with "
        "fewer than 2 experts are skipped and listed with the reason.",
    )
    p.add_argument("input", nargs="?", help="OME-Zarr collection with labels/expert_* groups")
    p.add_argument("output", help="folder to create")
    p.add_argument("--masks", help="mask folder (<masks>/<expert>/<image>.<ext>) instead of INPUT")
    p.add_argument("--mask-suffix", default="", help="suffix of mask file stems, e.g. _Parv")
    p.add_argument("--method", choices=["staple", "majority_vote"])
    p.add_argument(
        "--undecided",
        choices=["best_expert", "background"],
        help="label for undecided pixels (default: the best-scoring expert's)",
    )
    p.add_argument("--n-classes", type=int, help="foreground classes (default: from the masks)")
    p.add_argument("--min-size", type=int, help="ignore instances smaller than this (pixels)")
    p.add_argument(
        "--no-instance-scores",
        dest="instance_scores",
        action="store_false",
        default=None,
        help="score experts by Dice only (as deepflash2): no mAP / AP50, no consensus bound; "
        "about 3x faster",
    )
    p.add_argument(
        "--formats",
        nargs="+",
        default=["parquet", "csv"],
        choices=["parquet", "csv", "xlsx"],
        help="table formats",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_config_arg(p)
    add_cluster_args(p, default_local=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg) -> int:
    from .. import estimate_gt

    if bool(args.input) == bool(args.masks):
        raise CLIError("give either an INPUT collection or --masks FOLDER (not both)")
    cfg = cfg.updated(
        "gt", method=args.method, undecided=args.undecided, n_classes=args.n_classes,
        min_size=args.min_size, instance_scores=args.instance_scores,
    )  # fmt: skip
    with client_from_args(args) as client:
        result = estimate_gt(
            args.input, args.output, masks=args.masks, mask_suffix=args.mask_suffix,
            config=cfg.gt, formats=args.formats, client=client, overwrite=args.overwrite,
            argv=args.argv,
        )  # fmt: skip
    for line in result.summary():
        say(line)
    return 0
