"""``scaleseg select``: active learning -- export the most uncertain unannotated images."""

from __future__ import annotations

import argparse

from ._common import CLIError, add_cluster_args, add_config_arg, client_from_args, say


def register(sub) -> None:
    p = sub.add_parser(
        "select",
        help="pick the N most uncertain / OOD images not yet annotated and export them",
        description="Active learning: rank the images of a `scaleseg predict` (or `scaleseg qa`) "
        "output by --by (undefined first), skip images that already have expert label groups "
        "in the input archive or are listed in --annotated, and export the first N to --output: "
        "images/<name>.tif, masks/<expert>/<name>.tif (the current prediction to correct), "
        "rois/<name>.zip (Fiji ROI set), selected.csv and README.md. `scaleseg convert "
        "OUT/images NEW --masks OUT/masks` brings corrected masks back as labels/expert_<expert>.",
    )
    p.add_argument("prediction", help="output folder of `scaleseg predict` or `scaleseg qa`")
    p.add_argument("-o", "--output", required=True, help="annotation folder to create")
    p.add_argument("--n", type=int, required=True, help="images to select")
    p.add_argument(
        "--by",
        choices=("U", "U_novel", "U_epistemic", "ood_distance"),
        default="U",
        help="ranking score (default U)",
    )
    p.add_argument("--annotated", metavar="FILE", help="images already annotated (list or CSV)")
    p.add_argument(
        "--expert", default="prediction", help="mask sub-folder name (-> labels/expert_<name>)"
    )
    p.add_argument("--no-rois", action="store_true", help="do not write ImageJ ROI sets")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    add_config_arg(p)
    add_cluster_args(p, default_local=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg) -> int:
    from .. import select_for_annotation

    if args.n < 1:
        raise CLIError(f"--n must be at least 1, got {args.n}")
    with client_from_args(args) as client:
        result = select_for_annotation(
            args.prediction, args.output, n=args.n, by=args.by, annotated=args.annotated,
            expert=args.expert, rois=not args.no_rois, client=client, overwrite=args.overwrite,
            argv=args.argv,
        )  # fmt: skip
    for line in result.summary():
        say(line)
    return 0
