"""``scaleseg instances``: instance segmentation of a prediction output."""

from __future__ import annotations

import argparse

from ._common import add_cluster_args, add_config_arg, client_from_args, say


def add_method_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-size", type=int, help="remove instances smaller than this (pixels)")
    p.add_argument("--flow-threshold", type=float, help="cellpose flow-error threshold (0.4)")
    p.add_argument("--cellpose-model", help="cellpose model file or cache name (method cellpose)")
    p.add_argument("--diameter", type=float, help="object diameter for the cellpose model")
    p.add_argument("--halo", type=int, help="context around each block in pixels (32)")


def instances_config(cfg, args, method):
    return cfg.updated(
        "instances",
        method=method,
        min_size=args.min_size,
        flow_threshold=args.flow_threshold,
        cellpose_model=args.cellpose_model,
        diameter=args.diameter,
        halo=args.halo,
    )


def register(sub) -> None:
    p = sub.add_parser(
        "instances",
        help="separate touching objects in a prediction output (flows, cellpose, watershed)",
        description="Instance segmentation of every image of a `scaleseg predict` output: "
        "components (connected components), watershed (distance transform, no model), flows "
        "(cellpose mask construction from the ensemble's own flow outputs, `train --flows`) or "
        "cellpose (deepflash2's method with a local pretrained cellpose model). Blocks are "
        "stitched across faces. Writes labels/instances, the table instances/ (a Parquet part per "
        "image) and instance counts.",
    )
    p.add_argument("prediction", help="output folder of `scaleseg predict`")
    p.add_argument(
        "--method", required=True, choices=["components", "watershed", "flows", "cellpose"]
    )
    add_method_args(p)
    p.add_argument(
        "--formats",
        nargs="+",
        choices=["parquet", "csv"],
        help="table formats: the Parquet parts in instances/ always; csv also writes "
        "instances.csv, leaving it out never does (default: instances.csv only while the table "
        "has at most 10^6 rows)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace instances made with other settings"
    )
    add_config_arg(p)
    add_cluster_args(p, default_local=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg) -> int:
    from .. import segment_instances

    cfg = instances_config(cfg, args, args.method)
    with client_from_args(args) as client:
        result = segment_instances(
            args.prediction, config=cfg.instances, formats=args.formats, client=client,
            overwrite=args.overwrite, argv=args.argv,
        )  # fmt: skip
    for line in result.summary():
        say(line)
    return 0
