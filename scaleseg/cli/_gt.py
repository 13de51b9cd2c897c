"""``scaleseg gt``: estimated ground truth and expert scores from several experts' masks."""

from __future__ import annotations

import argparse

from ._common import CLIError, add_cluster_args, add_config_arg, client_from_args, progress_bar, say


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


def run(args: argparse.Namespace, cfg, record) -> int:
    from ..gt._collection import mask_sets
    from ..gt._outputs import run_gt
    from ..io import open_collection

    if bool(args.input) == bool(args.masks):
        raise CLIError("give either an INPUT collection or --masks FOLDER (not both)")
    cfg = cfg.updated(
        "gt",
        method=args.method,
        undecided=args.undecided,
        n_classes=args.n_classes,
        min_size=args.min_size,
        instance_scores=args.instance_scores,
    )
    record.set_config(cfg)
    g = cfg.gt
    if args.masks:
        sources = mask_sets(args.masks, suffix=args.mask_suffix)
        record.add_input(args.masks, name="masks")
    else:
        sources = open_collection(args.input)
        record.add_input(args.input, name="collection")
    with client_from_args(args) as client, progress_bar(len(sources), "gt") as bar:
        res = run_gt(
            sources,
            args.output,
            formats=args.formats,
            overwrite=args.overwrite,
            client=client,
            progress=bar.update,
            method=g.method,
            undecided=g.undecided,
            staple_threshold=g.staple_threshold,
            n_classes=g.n_classes,
            min_size=g.min_size,
            instance_scores=g.instance_scores,
        )
    ds = res["dataset"]
    record.add_output(res["out"], name="gt")
    record.set_summary(
        **{k: v for k, v in ds.items() if k != "skipped"}, skipped=len(ds["skipped"])
    )
    say(
        f"Estimated the GT ({g.method}) of {ds['estimated']} / {ds['images']} images -> {res['out']}"
    )
    for s in ds["skipped"]:
        say(f"  skipped {s['image']}: {s['reason']}")
    cb = ds["consensus_bound"]
    mrange = ds["expert_map_range"]
    say(
        f"  mean pairwise expert Dice {ds['mean_pairwise_expert_dice']:.3f}; expert Dice range "
        f"{ds['expert_dice_range'][0]:.3f}-{ds['expert_dice_range'][1]:.3f}; "
        + (f"mAP range {mrange[0]:.3f}-{mrange[1]:.3f}" if mrange else "no instance scores")
    )
    if cb is not None:
        say(
            f"  consensus bound: mean pairwise error rate {cb['mean_pairwise_error_rate']:.3f} -> "
            f"consensus error ~ {cb['consensus_error_rate']:.3f}"
        )
    say(res["expert_summary"].to_string(index=False))
    return 0
