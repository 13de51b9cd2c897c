"""``scaleseg convert``: image folders (+ expert masks) -> OME-Zarr collection."""

from __future__ import annotations

import argparse

from ._common import add_cluster_args, add_config_arg, client_from_args, say


def register(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert TIFF/PNG images and expert masks into an OME-Zarr collection",
        description="Convert a folder of TIFF/PNG images (gray, multichannel or RGB; 8/16-bit or "
        "float) plus optional expert mask folders (<masks>/<expert>/<image>.<ext>) into an "
        "OME-Zarr collection with one label image per expert (labels/expert_<name>).",
    )
    p.add_argument("images", help="folder of image files")
    p.add_argument("output", help="collection to create (local folder or fsspec URL)")
    p.add_argument("--masks", help="folder with one sub-folder of masks per expert")
    p.add_argument("--mask-suffix", default="", help="suffix of mask file stems, e.g. _Parv")
    p.add_argument("--chunks", type=int, nargs=2, metavar=("Y", "X"), help="chunk shape")
    p.add_argument("--levels", type=int, help="multiscale levels (including full resolution)")
    p.add_argument("--ngff", choices=["0.4", "0.5"], help="NGFF version (0.5 = zarr v3)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_config_arg(p)
    add_cluster_args(p, default_local=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg) -> int:
    from .. import convert

    cfg = cfg.updated("convert", chunks=args.chunks, n_levels=args.levels, ngff_version=args.ngff)
    with client_from_args(args) as client:
        result = convert(
            args.images, args.output, masks=args.masks, mask_suffix=args.mask_suffix,
            config=cfg.convert, client=client, overwrite=args.overwrite, argv=args.argv,
        )  # fmt: skip
    for line in result.summary():
        say(line)
    return 0
