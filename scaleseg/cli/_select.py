"""``scaleseg select``: active learning -- export the most uncertain unannotated images."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..tables import read_image_list
from ._common import CLIError, add_cluster_args, add_config_arg, client_from_args, progress_bar, say


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
        choices=("U", "U_epistemic", "ood_distance"),
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


def run(args: argparse.Namespace, cfg, record) -> int:
    from ..io import EXPERT_PREFIX, list_labels
    from ..qa import (
        annotation_candidates,
        check_qa_output,
        export_for_annotation,
            read_prediction_table,
    )

    if args.n < 1:
        raise CLIError(f"--n must be at least 1, got {args.n}")
    table = read_prediction_table(args.prediction)
    for col in ("path", "output"):
        if col not in table:
            raise CLIError(f"{args.prediction}: images table has no {col!r} column")
    out = Path(args.output)
    check_qa_output(out, args.prediction, overwrite=args.overwrite)
    annotated = read_image_list(args.annotated) if args.annotated else []

    def has_experts(row) -> bool:
        try:
            return any(n.startswith(EXPERT_PREFIX) for n in list_labels(row["path"]))
        except (FileNotFoundError, ValueError) as exc:
            raise CLIError(
                f"image {row['image']}: cannot read its input {row['path']}: {exc}"
            ) from None

    selected, skipped = annotation_candidates(
        table, n=args.n, by=args.by, annotated=annotated, has_annotation=has_experts
    )
    if selected.empty:
        raise CLIError(f"{args.prediction}: no unannotated image left to select")
    if args.overwrite:
        for name in ("images", "masks", "rois", "selected.csv", "README.md"):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    record.add_input(args.prediction, name="prediction")
    if args.annotated:
        record.add_input(args.annotated, name="annotated")
    with client_from_args(args) as client, progress_bar(len(selected), "export") as bar:
        result = export_for_annotation(
            selected,
            out,
            expert=args.expert,
            rois=not args.no_rois,
            source=str(args.prediction),
            skipped=skipped,
            client=client,
            progress=bar.update,
        )
    record.add_output(out / "selected.csv", name="selected.csv")
    record.set_summary(
        selected=len(result), skipped=len(skipped), by=args.by, images=result["image"].tolist()
    )
    if len(result) < args.n:
        say(f"only {len(result)} unannotated image(s) left (asked for {args.n})")
    say(result[["selection_rank", "image", "score", "reason"]].to_string(index=False))
    say(
        f"Exported {len(result)} image(s) to {out} ({len(skipped)} annotated skipped); "
        f"after correcting: scaleseg convert {out}/images NEW --masks {out}/masks"
    )
    return 0
