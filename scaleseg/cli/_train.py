"""``scaleseg train``: a deep ensemble, one Dask task per fold."""

from __future__ import annotations

import argparse

from ._common import add_cluster_args, add_config_arg, client_from_args, say


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train an ensemble of U-Nets (k-fold, one Dask task per fold)",
        description="Train a k-fold ensemble (deepflash2 defaults: Unet + ConvNeXt-Tiny, 5 folds, "
        "one frozen-encoder one-cycle epoch then 25 unfrozen, AdamW 1e-3, tiles 512, batch 4). "
        "Labels come from --gt (a `scaleseg gt` output), --label, the image's est_gt, or its "
        "only expert; images with several experts and no GT get a majority vote first. "
        "Finished folds in OUTPUT are kept: re-running resumes.",
    )
    p.add_argument("input", help="OME-Zarr collection with the training images")
    p.add_argument("output", help="ensemble folder to create (or resume)")
    p.add_argument("--gt", help="output folder of `scaleseg gt` holding the labels")
    p.add_argument("--label", help="label group of the input images to train on")
    p.add_argument(
        "--images-file", help="train only these images (text: a name per line; CSV: 'name' column)"
    )
    p.add_argument("--where", help="filter rows of a CSV --images-file, e.g. split=train")
    g = p.add_argument_group("model and schedule (defaults from the config)")
    g.add_argument("--arch", help="smp architecture (Unet, UnetPlusPlus, FPN, DeepLabV3Plus, ...)")
    g.add_argument("--encoder", help="encoder (tu-convnext_tiny, resnet18, tu-<any timm model>)")
    g.add_argument("--encoder-weights", help="'imagenet' (local cache only), a file, or 'none'")
    g.add_argument(
        "--encoder-depth", type=int, help="encoder stages (3-5; default 5, deepflash2's: 4)"
    )
    g.add_argument(
        "--decoder-channels",
        type=int,
        nargs="+",
        metavar="C",
        help="decoder widths, one per stage (deepflash2's ConvNeXt U-Net: 256 128 64 16)",
    )
    g.add_argument("--n-classes", type=int, help="classes including background")
    g.add_argument("--epochs", type=int, help="unfrozen epochs (one one-cycle schedule)")
    g.add_argument("--frozen-epochs", type=int, help="epochs with the encoder frozen")
    g.add_argument("--folds", type=int, dest="n_folds", help="k of the k-fold split")
    g.add_argument("--models", type=int, dest="n_models", help="models to train (<= folds)")
    g.add_argument("--tile", type=int, nargs=2, metavar=("Y", "X"), help="tile shape")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--tiles-per-epoch", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--loss", choices=["ce_dice", "focal", "tversky", "lovasz", "ce"])
    g.add_argument(
        "--augment", nargs="+", help="augmentations (flip rotate90 rotate gamma clahe ...)"
    )
    g.add_argument("--scale", type=float, help="zoom-out factor for large structures")
    g.add_argument(
        "--early-stopping", type=int, metavar="N", help="stop after N epochs without improvement"
    )
    g.add_argument(
        "--intensity",
        choices=["data", "dtype", "percentile"],
        help="pixel scale: by the largest training value per channel (data), the dtype range, "
        "or each image's 1st-99.8th percentile (percentile)",
    )
    g.add_argument(
        "--threshold",
        choices=["calibrate", "argmax"],
        help="decision rule of binary ensembles: calibrate the foreground threshold on the "
        "folds' validation images, or argmax (default)",
    )
    g.add_argument(
        "--ema", type=float, metavar="DECAY", help="weight moving-average decay (0 = off)"
    )
    g.add_argument("--seed", type=int)
    p.add_argument(
        "--flows",
        action="store_true",
        help="two extra outputs trained on cellpose flows (for `--instances flows`)",
    )
    p.add_argument(
        "--instance-label",
        help="label group with instance ids for the flow targets "
        "(default: connected components of the labels)",
    )
    p.add_argument(
        "--export",
        nargs="+",
        choices=["torchscript", "onnx"],
        default=[],
        help="also export every fold for use elsewhere",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing ensemble")
    add_config_arg(p)
    add_cluster_args(p, default_local=True)
    p.set_defaults(func=run)


def _train_config(cfg, args):
    values = dict(
        arch=args.arch,
        encoder=args.encoder,
        encoder_weights=args.encoder_weights,
        encoder_depth=args.encoder_depth,
        decoder_channels=tuple(args.decoder_channels) if args.decoder_channels else None,
        n_classes=args.n_classes,
        epochs=args.epochs,
        frozen_epochs=args.frozen_epochs,
        n_folds=args.n_folds,
        n_models=args.n_models,
        tile_shape=args.tile,
        batch_size=args.batch_size,
        tiles_per_epoch=args.tiles_per_epoch,
        lr=args.lr,
        loss=args.loss,
        augmentations=tuple(args.augment) if args.augment else None,
        scale=args.scale,
        early_stopping_patience=args.early_stopping,
        intensity=args.intensity,
        threshold=args.threshold,
        seed=args.seed,
    )
    cfg = cfg.updated("train", **values)
    if args.ema is not None:  # 0 switches the average off (updated() skips None values)
        from ..config import from_dict

        data = cfg.model_dump()
        data["train"]["ema"] = args.ema or None
        cfg = from_dict(data)
    return cfg


def run(args: argparse.Namespace, cfg) -> int:
    from .. import train

    with client_from_args(args) as client:
        result = train(
            args.input,
            args.output,
            config=_train_config(cfg, args).train,
            gt=args.gt,
            label=args.label,
            images_file=args.images_file,
            where=args.where,
            instance_label=args.instance_label,
            flows=args.flows,
            export=args.export,
            client=client,
            overwrite=args.overwrite,
            argv=args.argv,
        )
    for line in result.summary():
        say(line)
    return 0
