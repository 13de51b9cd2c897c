"""``scaleseg qa``: rank by U, Umin flags, OOD detection scores and the HTML report."""

from __future__ import annotations

import argparse

from ._common import CLIError, add_cluster_args, add_config_arg, client_from_args, progress_bar, say


def register(sub) -> None:
    p = sub.add_parser(
        "qa",
        help="rank images by uncertainty, flag them for review, OOD scores and an HTML report",
        description="Quality assurance of a `scaleseg predict` output (read only): rank images by "
        "U (undefined U first, with the reason), estimate Umin from an evaluated test set (the "
        "smallest U among test images scoring below tau), flag images for review when U >= Umin "
        "or when their encoder-feature distance reaches the ensemble's calibrated threshold "
        "(foreign images on which the members agree and are confidently wrong), "
        "score the OOD signals (U, U_epistemic, ood_distance) by AUROC / AUPRC when OOD labels "
        "are known, and write images.parquet/.csv, ood.csv, classes.csv, qa.json, report.html "
        "and run.json into --output.",
    )
    p.add_argument("prediction", help="output folder of `scaleseg predict`")
    p.add_argument("-o", "--output", required=True, help="QA folder to create")
    p.add_argument(
        "--evaluation", help="output of `scaleseg evaluate` (or its per_image table): for Umin"
    )
    p.add_argument("--metric", choices=("dice", "map", "ap50"), help="score for tau (dice)")
    p.add_argument("--tau", type=float, help="test images scoring below tau failed (0.75)")
    p.add_argument("--umin", type=float, help="fixed Umin instead of the estimate")
    p.add_argument(
        "--ood-threshold",
        type=float,
        metavar="D",
        help="fixed feature-distance threshold (default: the ensemble's calibrated one)",
    )
    p.add_argument(
        "--score",
        choices=("U", "U_border"),
        help="image score to rank, flag and correlate by (U; U_border = mean u over object "
        "borders, read back from the stored maps)",
    )
    p.add_argument("--reference", help="the evaluation's reference when it holds several")
    p.add_argument(
        "--test-images",
        metavar="FILE",
        help="only these evaluated images form the test set (name list or CSV)",
    )
    p.add_argument("--test-where", help="filter rows of a CSV --test-images, e.g. split=test")
    p.add_argument(
        "--ood-labels",
        metavar="FILE",
        help="known OOD images: a CSV with an 'ood' or 'split' column (demo.csv) or a list",
    )
    p.add_argument("--top", type=int, metavar="N", help="thumbnails in the report (24)")
    p.add_argument(
        "--formats",
        nargs="+",
        choices=("parquet", "csv", "xlsx"),
        default=["parquet", "csv"],
        help="formats of the images table (default: parquet csv)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing QA folder")
    add_config_arg(p)
    add_cluster_args(p, default_local=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg, record) -> int:
    from ..qa import check_qa_output, run_qa

    if args.test_where and not args.test_images:
        raise CLIError("--test-where needs --test-images")
    if args.test_images and not args.evaluation:
        raise CLIError("--test-images needs --evaluation (the scores of the test images)")
    cfg = cfg.updated(
        "qa",
        metric=args.metric,
        tau=args.tau,
        umin=args.umin,
        ood_threshold=args.ood_threshold,
        score=args.score,
        top_n=args.top,
    )
    record.set_config(cfg)
    q = cfg.qa
    check_qa_output(args.output, args.prediction, overwrite=args.overwrite)
    for name in ("prediction", "evaluation", "ood_labels", "test_images"):
        loc = getattr(args, name)
        if loc:
            record.add_input(loc, name=name)
    with client_from_args(args) as client, progress_bar(q.top_n, "thumbnails") as bar:
        res = run_qa(
            args.prediction,
            args.output,
            evaluation=args.evaluation,
            metric=q.metric,
            tau=q.tau,
            umin=q.umin,
            ood_threshold=q.ood_threshold,
            score=q.score,
            reference=args.reference,
            test_images=args.test_images,
            test_where=args.test_where,
            ood_labels=args.ood_labels,
            top_n=q.top_n,
            overwrite=args.overwrite,
            formats=args.formats,
            client=client,
            progress=bar.update,
        )
    info, ood = res["info"], res["ood"]
    for name, path in res["written"].items():
        record.add_output(path, name=name)
    best = {}
    overall = ood[ood["ood_kind"] == "all"] if len(ood) else ood
    for _, r in overall.iterrows():
        best[r["score"]] = {"auroc": r["auroc"], "auprc": r["auprc"]}
    record.set_summary(
        images=info["n_images"],
        review=info["n_review"],
        unknown=info["n_unknown"],
        umin=info["umin"],
        umin_source=info["umin_source"],
        pearson_r=info["pearson_r"],
        ood=best,
    )
    if info["umin_source"] == "none":
        say(f"Umin unknown: {info['umin_reason']}; the U rule cannot flag")
    else:
        say(
            f"Umin {info['umin']:.4f} ({info['umin_source']}; {info['n_below']} of "
            f"{info['n_test']} test images with {q.metric} < {q.tau:g}; Pearson r of {q.score} "
            f"{info['pearson_r']:.3f})"
        )
    thr = info["distance_threshold"]
    say(
        "distance rule: "
        + (
            f"ood_distance >= {thr:.4g} ({info['distance_threshold_source']})"
            if thr == thr
            else "off (the ensemble has no calibrated threshold)"
        )
    )
    say(
        f"{info['n_review']} of {info['n_images']} images flagged for review "
        f"({q.score} rule {info['n_review_u']}, distance rule {info['n_review_distance']})"
    )
    for score, v in best.items():
        say(f"  OOD by {score}: AUROC {v['auroc']:.3f}, AUPRC {v['auprc']:.3f}")
    table = res["images"]
    cols = [c for c in ("qa_rank", "image", "U", q.score, "review", "review_rule") if c in table]
    cols = list(dict.fromkeys(cols))
    say(table[cols].head(10).to_string(index=False))
    say(f"Report: {res['report']}")
    return 0
