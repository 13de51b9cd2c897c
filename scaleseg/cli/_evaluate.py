"""``scaleseg evaluate``: score predictions against a reference and the expert range."""

from __future__ import annotations

import argparse

from ._common import add_cluster_args, add_config_arg, client_from_args, progress_bar, say

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


def run(args: argparse.Namespace, cfg, record) -> int:
    from ..evaluation import (
        ALL_EXPERTS,
        check_output_dir,
        evaluate,
        resolve_source,
        write_evaluation,
    )

    check_output_dir(args.output, overwrite=args.overwrite)
    if args.experts and args.no_experts:
        raise ValueError("--experts and --no-experts exclude each other")
    n_classes = args.n_classes if args.n_classes is not None else cfg.gt.n_classes
    min_size = args.min_size if args.min_size is not None else cfg.gt.min_size
    given = args.instances_given or ""
    pred = resolve_source(
        args.pred,
        label=args.pred_label,
        suffix=args.pred_suffix,
        instances=given in ("pred", "both"),
    )
    ref = resolve_source(
        args.ref, label=args.ref_label, suffix=args.ref_suffix, instances=given in ("ref", "both")
    )
    experts = None
    if args.no_experts:
        experts = False
    elif args.experts:
        experts = resolve_source(args.experts, label=ALL_EXPERTS, suffix=args.experts_suffix)
    for name, loc in (("pred", args.pred), ("ref", args.ref), ("experts", args.experts)):
        if loc and record is not None:
            record.add_input(loc, name=name)
    n_images = len(set(pred.items) & set(ref.items))
    with client_from_args(args) as client, progress_bar(n_images, "evaluate") as bar:
        result = evaluate(
            pred,
            ref,
            kind=args.kind,
            n_classes=n_classes,
            min_size=min_size,
            experts=experts,
            client=client,
            progress=bar.update,
        )
    written = write_evaluation(result, args.output, args.formats, overwrite=args.overwrite)
    for w in result["warnings"]:
        say(f"warning: {w}")
    per_image, summary = result["per_image"], result["summary"]
    scored = per_image[per_image["missing"].isna()]
    headline = result["headline"]
    relative = {}
    if "relative_performance" in per_image:
        relative = scored["relative_performance"].dropna().value_counts().to_dict()
    if record is not None:
        for name, paths in written.items():
            for path in paths:
                record.add_output(path, name=f"{name}{path.suffix}")
        means = summary[summary["metric"] == headline].set_index("reference")["mean"]
        record.set_summary(
            images=int(scored["image"].nunique()),
            missing=int(per_image["missing"].notna().sum()),
            kind=args.kind,
            n_classes=n_classes,
            min_size=min_size,
            headline=headline,
            mean=means.to_dict(),
            relative_performance=relative,
            warnings=result["warnings"],
        )
    for ref_name, grp in scored.groupby("reference", sort=False):
        v = grp[headline]
        say(f"{ref_name}: mean {headline} {v.mean():.4f} (median {v.median():.4f}, n={len(v)})")
    if relative:
        say("prediction vs experts: " + "; ".join(f"{n} {k}" for k, n in relative.items()))
    say(f"Wrote {', '.join(sorted(written))} to {args.output}")
    return 0
