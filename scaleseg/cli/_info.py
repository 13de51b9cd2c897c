"""``scaleseg info``: what an OME-Zarr image or collection holds (metadata only)."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser(
        "info",
        help="shape, axes, dtype, chunks, levels and label groups of an image or collection",
    )
    p.add_argument("input", help="OME-Zarr image, HCS plate or collection folder / URL")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg) -> int:
    from ..io import image_info, open_collection

    refs = open_collection(args.input)
    infos = [image_info(r) for r in refs]
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    print(f"{args.input}: {len(infos)} image(s)")
    head = (
        f"{'name':<28} {'axes':<6} {'shape':<18} {'dtype':<8} {'chunks':<16} {'levels':>6}  labels"
    )
    print(head)
    for i in infos:
        shape = "x".join(map(str, i["shape"]))
        chunks = "x".join(map(str, i["chunks"]))
        labels = ",".join(i["labels"]) or "-"
        print(
            f"{i['name']:<28} {i['axes']:<6} {shape:<18} {i['dtype']:<8} {chunks:<16} "
            f"{len(i['levels']):>6}  {labels}  (NGFF {i['ngff_version']})"
        )
    return 0
