"""``scaleseg demo-data``: write the small synthetic demo archive."""

from __future__ import annotations

import argparse

from ._common import add_cluster_args, client_from_args, say


def register(sub) -> None:
    p = sub.add_parser(
        "demo-data",
        help="write a synthetic demo archive (images, expert masks, an OOD subset)",
        description="Write a deterministic synthetic fluorescence archive: an OME-Zarr collection "
        "with simulated expert masks (labels/expert_*), the true masks (labels/truth, "
        "labels/truth_instances) and out-of-distribution images, plus demo.csv describing "
        "every image (split train / test / ood).",
    )
    p.add_argument("output", help="folder to create")
    p.add_argument("--images", type=int, default=12, help="in-distribution images (default 12)")
    p.add_argument("--ood", type=int, default=4, help="out-of-distribution images (default 4)")
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("Y", "X"))
    p.add_argument("--experts", type=int, default=3, help="simulated experts per image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--snr",
        type=float,
        nargs=2,
        default=(8.0, 8.0),
        metavar=("LOW", "HIGH"),
        help="signal-to-noise range; each image draws its SNR log-uniformly from it (8 8)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=1 / 3,
        help="share of the in-distribution images in the test split (1/3)",
    )
    p.add_argument("--ngff", choices=["0.4", "0.5"], default="0.5")
    p.add_argument("--overwrite", action="store_true")
    add_cluster_args(p, default_local=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg) -> int:
    from .. import demo_data

    with client_from_args(args) as client:
        result = demo_data(
            args.output, n_images=args.images, n_ood=args.ood, shape=tuple(args.size),
            n_experts=args.experts, seed=args.seed, snr=tuple(args.snr),
            test_fraction=args.test_fraction, ngff_version=args.ngff, client=client,
            overwrite=args.overwrite, argv=args.argv,
        )  # fmt: skip
    for line in result.summary():
        say(line)
    return 0
