"""``scaleseg rois export|import``: ImageJ / Fiji ROI sets for review and correction."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import CLIError, say


def register(sub) -> None:
    p = sub.add_parser("rois", help="export instances as ImageJ ROI sets, or import edited ones")
    rsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ex = rsub.add_parser(
        "export",
        help="one ROI zip per image, most uncertain instances first",
        description="Write <prediction>/rois/<image>.zip (or --output): one polygon ROI per "
        "instance, sorted by decreasing instance uncertainty, named <rank>-u<score>-id<label>.",
    )
    ex.add_argument("prediction", help="output folder of `scaleseg predict` with instances")
    ex.add_argument("--output", help="folder for the zips (default: <prediction>/rois)")
    ex.add_argument("--overwrite", action="store_true")
    ex.set_defaults(func=run_export, output_attr="prediction", record_name="run_rois.json")
    im = rsub.add_parser(
        "import",
        help="rasterise an edited ROI zip into a label image",
        description="Turn an (edited) ROI zip back into instance labels: written as a label group "
        "of an OME-Zarr image (--image URL --label NAME, e.g. expert_<you> for `scaleseg gt`) or "
        "as a TIFF (--tiff FILE). The image's (y, x) shape sets the raster size.",
    )
    im.add_argument("zip", help="ROI zip (ImageJ / Fiji RoiSet)")
    im.add_argument("--image", required=True, help="OME-Zarr image the ROIs belong to")
    im.add_argument("--label", help="write labels/<LABEL> into --image")
    im.add_argument("--tiff", help="write a uint32 TIFF label image instead")
    im.add_argument("--semantic", action="store_true", help="write 0/1 foreground instead of ids")
    im.add_argument("--overwrite", action="store_true")
    im.set_defaults(func=run_import, record=False)


def run_export(args: argparse.Namespace, cfg, record) -> int:
    import pandas as pd

    from ..instances import export_rois
    from ..io import open_labels, safe_name

    pred = Path(args.prediction)
    table = pred / "instances.parquet"
    if not table.is_file():
        raise CLIError(
            f"{pred}: no instances.parquet (run `scaleseg instances` or predict --instances)"
        )
    inst = pd.read_parquet(table)
    images = pd.read_parquet(pred / "images.parquet")
    out = Path(args.output) if args.output else pred / "rois"
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for _, row in images[images["status"] == "ok"].iterrows():
        labels = open_labels(row["output"], "instances").values
        sub = inst[inst["image"] == row["image"]]
        scores = dict(zip(sub["label"].astype(int), sub["mean_uncertainty"].astype(float)))
        export_rois(
            labels, out / f"{safe_name(row['image'])}.zip", scores=scores, overwrite=args.overwrite
        )
        n += 1
    record.set_summary(images=n)
    say(f"wrote {n} ROI sets to {out}")
    return 0


def run_import(args: argparse.Namespace, cfg, record) -> int:
    import numpy as np

    from ..instances import import_rois
    from ..io import open_image, to_cyx, write_labels

    if bool(args.label) == bool(args.tiff):
        raise CLIError("give exactly one of --label NAME or --tiff FILE")
    shape = tuple(int(s) for s in to_cyx(open_image(args.image)).shape[1:])
    labels, table = import_rois(args.zip, shape)
    if args.semantic:
        labels = (labels > 0).astype(np.uint8)
    if args.label:
        write_labels(args.image, args.label, labels, overwrite=args.overwrite)
        where = f"{args.image}/labels/{args.label}"
    else:
        import tifffile

        path = Path(args.tiff)
        if path.exists() and not args.overwrite:
            raise CLIError(f"{path} already exists (use --overwrite to replace it)")
        tifffile.imwrite(path, labels, compression="zlib")
        where = str(path)
    skipped = int(table["skipped"].sum()) if "skipped" in table else 0
    say(f"imported {len(table) - skipped} ROIs ({skipped} skipped) -> {where}")
    return 0
