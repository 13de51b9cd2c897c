"""``scaleseg predict``: ensemble inference with uncertainty over an OME-Zarr archive."""

from __future__ import annotations

import argparse

from ..config import PREDICT_PRESETS
from ._common import add_cluster_args, add_config_arg, client_from_args, say


def register(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="ensemble inference with uncertainty over an OME-Zarr image, collection or plate",
        description="Predict every image with the ensemble: Gaussian-weighted sliding windows, "
        "test-time flips and the ensemble mixture, the uncertainty map u (and its epistemic / "
        "aleatoric parts) and the image score U. Work units are (image, block) pairs on the Dask "
        "cluster; an interrupted run resumes from OUTPUT/manifest.",
    )
    p.add_argument("--ensemble", required=True, help="ensemble folder (from `scaleseg train`)")
    p.add_argument("--input", required=True, help="OME-Zarr image, HCS plate or collection")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument(
        "--images-file",
        help="predict only these images (text: a name per line; CSV: 'name' column)",
    )
    p.add_argument("--where", help="filter rows of a CSV --images-file, e.g. split=test")
    p.add_argument(
        "--preset",
        choices=list(PREDICT_PRESETS),
        help="a named point of the speed-quality frontier (README: Speed and quality); the "
        "other flags change it further",
    )
    window = p.add_mutually_exclusive_group()
    window.add_argument(
        "--tile",
        type=int,
        nargs=2,
        metavar=("Y", "X"),
        help="window (default: the ensemble's tile times --tile-scale, fitted to the image)",
    )
    window.add_argument(
        "--tile-scale",
        type=int,
        metavar="N",
        help="without --tile: windows N times the ensemble's training tile (default 4)",
    )
    p.add_argument("--overlap", type=float, help="window overlap fraction (default 0.5)")
    p.add_argument(
        "--block", type=int, nargs=2, metavar=("Y", "X"), help="block size (default 2048)"
    )
    p.add_argument(
        "--chunks", type=int, nargs=2, metavar=("Y", "X"), help="output chunks (default 512)"
    )
    p.add_argument("--tta", choices=["none", "flips", "dihedral"], help="test-time augmentation")
    p.add_argument("--batch-size", type=int, help="windows per forward pass")
    p.add_argument(
        "--engine",
        choices=["auto", "torch", "onnxruntime", "openvino"],
        help="what runs the members (default auto: ONNX Runtime on CPU workers, torch on GPUs; "
        "graphs are exported once per user into ~/.cache/scaleseg, never into the ensemble)",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "float32", "float16", "bfloat16"],
        help="the members' arithmetic (default auto: float16 autocast on GPUs, float32 on CPUs; "
        "bfloat16 on CPUs with native support)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        metavar="P",
        help="foreground-probability threshold of a binary ensemble (default: the ensemble's "
        "calibrated threshold, or the argmax)",
    )
    p.add_argument("--no-probabilities", action="store_true", help="do not write probabilities")
    p.add_argument(
        "--instances",
        choices=["none", "components", "watershed", "flows", "cellpose"],
        help="instance method (default none): in the prediction pass for images of one block, "
        "after prediction for larger ones",
    )
    from ._instances import add_method_args

    add_method_args(p)
    p.add_argument("--ngff", choices=["0.4", "0.5"], help="NGFF version of the outputs (0.5)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_config_arg(p)
    add_cluster_args(p, default_local=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg) -> int:
    from .. import predict
    from ._instances import instances_config

    if args.preset:  # on top of the settings file, under the explicit flags
        cfg = cfg.updated("predict", **PREDICT_PRESETS[args.preset])
    cfg = cfg.updated(
        "predict", tile_shape=args.tile, tile_scale=args.tile_scale, overlap=args.overlap, block_shape=args.block,
        chunks=args.chunks, ngff_version=args.ngff, tta=args.tta, batch_size=args.batch_size,
        engine=args.engine, precision=args.precision,
        threshold=args.threshold, write_probabilities=False if args.no_probabilities else None,
    )  # fmt: skip
    method = args.instances or cfg.instances.method
    with client_from_args(args) as client:
        result = predict(
            args.input, args.ensemble, args.output, config=cfg.predict,
            images_file=args.images_file, where=args.where,
            instances=instances_config(cfg, args, method).instances, client=client,
            overwrite=args.overwrite, argv=args.argv,
        )  # fmt: skip
    for line in result.summary():
        say(line)
    return 0 if result.failed.empty else 3
