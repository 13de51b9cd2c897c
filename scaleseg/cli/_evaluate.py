"""``scaleseg evaluate``: score predictions against a reference and the expert range."""

from __future__ import annotations

import argparse

from ._common import CLIError, add_cluster_args, add_config_arg, client_from_args, say

_INSTANCES_GIVEN = ("pred", "ref", "both")


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score predictions against a reference (estimated GT or experts)",
        description="Score each image of PRED against REF: Dice/IoU (semantic) and/or AP at IoU "
        "0.50..0.95, mAP, precision/recall/F1, error rate, PQ and AJI (instance). PRED and REF "
        "are OME-Zarr collections (a label group per image) or folders of mask files matched "
        "by file stem. When expert masks exist (labels/expert_* in REF or in --experts), each "
        "expert is scored against the same reference and the prediction is placed in the "
        "expert range. Writes per_image, summary (and experts) tables, scores.png, "
        "expert_range.png and run.json into --output.",
    )
    p.add_argument("pred", help="predictions: OME-Zarr collection or folder of masks")
    p.add_argument("ref", help="reference: OME-Zarr collection or folder of masks")
    p.add_argument("-o", "--output", required=True, help="folder for tables, plots and run.json")
    p.add_argument("--pred-label", default="semantic", help="label group of PRED (semantic)")
    p.add_argument(
        "--ref-label",
        default="est_gt",
        help="label group of REF: est_gt (default), expert_<name>, or 'experts' for a row per "
        "image and expert",
    )
    p.add_argument("--pred-suffix", default="", help="mask file stem suffix in a PRED folder")
    p.add_argument("--ref-suffix", default="", help="mask file stem suffix in a REF folder")
    p.add_argument(
        "--experts",
        metavar="EXPERTS",
        help="collection with labels/expert_*, or folder with one mask sub-folder per expert "
        "(default: REF's experts, when it has any)",
    )
    p.add_argument("--experts-suffix", default="", help="mask file stem suffix in EXPERTS")
    p.add_argument("--no-experts", action="store_true", help="skip the expert comparison")
    p.add_argument("--kind", choices=("semantic", "instance", "both"), default="semantic")
    p.add_argument(
        "--instances-given",
        choices=_INSTANCES_GIVEN,
        help="these maps already hold instance labels (automatic for label groups named "
        "'instances' or '*_instances'); others are split into connected components",
    )
    p.add_argument("--n-classes", type=int, metavar="K", help="foreground classes (default: infer)")
    p.add_argument("--min-size", type=int, metavar="N", help="minimum instance size in pixels")
    p.add_argument(
        "--formats",
        nargs="+",
        choices=("parquet", "csv", "xlsx"),
        default=["parquet", "csv"],
        help="table formats (default: parquet csv)",
    )
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --output")
    add_config_arg(p)
    add_cluster_args(p, default_local=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg) -> int:
    from .. import evaluate

    if args.experts and args.no_experts:
        raise CLIError("--experts and --no-experts exclude each other")
    with client_from_args(args) as client:
        result = evaluate(
            args.pred, args.ref, args.output, pred_label=args.pred_label,
            ref_label=args.ref_label, pred_suffix=args.pred_suffix, ref_suffix=args.ref_suffix,
            kind=args.kind, instances_given=args.instances_given,
            experts=False if args.no_experts else args.experts,
            experts_suffix=args.experts_suffix,
            n_classes=args.n_classes if args.n_classes is not None else cfg.gt.n_classes,
            min_size=args.min_size if args.min_size is not None else cfg.gt.min_size,
            formats=args.formats, client=client, overwrite=args.overwrite, argv=args.argv,
        )  # fmt: skip
    for line in result.summary():
        say(line)
    return 0
