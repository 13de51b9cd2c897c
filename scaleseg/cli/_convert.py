"""``scaleseg convert``: image folders (+ expert masks) -> OME-Zarr collection."""

from __future__ import annotations

import argparse

from ._common import add_cluster_args, add_config_arg, client_from_args, progress_bar, say


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


def run(args: argparse.Namespace, cfg, record) -> int:
    from ..io import convert_folder, plan_conversion

    cfg = cfg.updated("convert", chunks=args.chunks, n_levels=args.levels, ngff_version=args.ngff)
    record.set_config(cfg)
    c = cfg.convert
    items, _ = plan_conversion(args.images, masks=args.masks, mask_suffix=args.mask_suffix)
    record.add_input(args.images, name="images")
    if args.masks:
        record.add_input(args.masks, name="masks")
    with client_from_args(args) as client, progress_bar(len(items), "convert") as bar:
        result = convert_folder(
            args.images,
            args.output,
            masks=args.masks,
            mask_suffix=args.mask_suffix,
            chunks=c.chunks,
            n_levels=c.n_levels,
            ngff_version=c.ngff_version,
            overwrite=args.overwrite,
            client=client,
            progress=bar.update,
        )
    for w in result["warnings"]:
        say(f"warning: {w}")
    experts = sorted({e for r in result["images"] for e in r["experts"].split(";") if e})
    record.add_output(result["out"], name="collection")
    record.set_summary(images=len(result["images"]), experts=experts, warnings=result["warnings"])
    say(
        f"Wrote {len(result['images'])} images to {result['out']} (experts: {', '.join(experts) or 'none'})"
    )
    return 0
