"""``scaleseg rois export|import``: ImageJ / Fiji ROI sets for review and correction."""

from __future__ import annotations

import argparse

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
    ex.set_defaults(func=run_export)
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
    im.set_defaults(func=run_import)


def run_export(args: argparse.Namespace, cfg) -> int:
    from .. import export_roi_sets

    result = export_roi_sets(args.prediction, args.output, overwrite=args.overwrite, argv=args.argv)
    for line in result.summary():
        say(line)
    return 0


def run_import(args: argparse.Namespace, cfg) -> int:
    from .. import import_roi_set

    if bool(args.label) == bool(args.tiff):
        raise CLIError("give exactly one of --label NAME or --tiff FILE")
    result = import_roi_set(args.zip, args.image, label=args.label, tiff=args.tiff,
                            semantic=args.semantic, overwrite=args.overwrite)  # fmt: skip
    for line in result.summary():
        say(line)
    return 0
