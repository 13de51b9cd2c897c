"""``scaleseg train``: a deep ensemble, one Dask task per fold."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import CLIError, add_cluster_args, add_config_arg, client_from_args, progress_bar, say


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
        choices=["data", "dtype"],
        help="pixel scale: by the largest training value per channel (data) or the dtype range",
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
        seed=args.seed,
    )
    cfg = cfg.updated("train", **values)
    if args.ema is not None:  # 0 switches the average off (updated() skips None values)
        from ..config import from_dict

        data = cfg.model_dump()
        data["train"]["ema"] = args.ema or None
        cfg = from_dict(data)
    return cfg


def run(args: argparse.Namespace, cfg, record) -> int:
    from ..cluster import get_setting
    from ..gt._outputs import run_gt
    from ..training import (
        ENSEMBLE_FILE,
        export_ensemble,
        finished_folds,
        train_ensemble,
        training_items,
    )

    cfg = _train_config(cfg, args)
    record.set_config(cfg)
    t = cfg.train
    out = Path(args.output)
    state = out / "train_config.json"
    if out.exists():
        if args.overwrite:
            import shutil

            shutil.rmtree(out)
        elif state.exists() and _stored_config(state) != t.model_dump(mode="json"):
            what = "an ensemble" if (out / ENSEMBLE_FILE).exists() else "folds"
            stored, now = _stored_config(state), t.model_dump(mode="json")
            diff = ", ".join(
                f"{k} {stored.get(k)!r} -> {now.get(k)!r}"
                for k in sorted(set(stored) | set(now))
                if stored.get(k) != now.get(k)
            )
            raise CLIError(
                f"{out} holds {what} trained with another configuration ({diff}); pass the "
                "stored values to resume, or --overwrite to retrain"
            )
        elif not state.exists() and any(out.iterdir()):
            raise CLIError(f"{out} exists and is not a scaleseg ensemble (use --overwrite)")
        elif _complete(out):
            say(f"{out}: the ensemble is complete (same configuration): nothing to do")
            record.nothing_done()
            return 0

    items, needs_vote, warnings = training_items(
        args.input,
        gt=args.gt,
        label=args.label,
        names_file=args.images_file,
        where=args.where,
        instance_label=args.instance_label,
    )
    for w in warnings:
        say(f"warning: {w}")
    record.add_input(args.input, name="collection")
    if args.gt:
        record.add_input(args.gt, name="gt")
    with client_from_args(args) as client:
        if needs_vote:
            from ..training import items_from_gt

            say(f"{len(needs_vote)} images have several experts and no GT: majority vote first")
            run_gt(needs_vote, out / "gt", method="majority_vote", client=client, overwrite=True)
            items += items_from_gt(needs_vote, out / "gt")
        if len(items) < t.n_folds:
            raise CLIError(
                f"{len(items)} labelled images cannot make {t.n_folds} folds (use --folds)"
            )
        out.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps(t.model_dump(mode="json"), indent=2) + "\n")
        done = finished_folds(out)
        if done:
            say(f"resuming: folds {done} are finished and kept")
        in_ch = _channels(items[0])
        model_spec = {
            "arch": t.arch,
            "encoder": t.encoder,
            "in_channels": in_ch,
            "n_classes": t.n_classes,
            "n_extra": 2 if args.flows else 0,
            "encoder_weights": t.encoder_weights,
        }
        if t.encoder_depth is not None:
            model_spec["encoder_depth"] = t.encoder_depth
        if t.decoder_channels is not None:
            model_spec["decoder_channels"] = list(t.decoder_channels)
        n_models = t.n_models or t.n_folds
        say(
            f"training {n_models} models ({t.arch} + {t.encoder}) on {len(items)} images, "
            f"{t.frozen_epochs}+{t.epochs} epochs of {t.tiles_per_epoch} tiles {t.tile_shape[0]}x{t.tile_shape[1]}"
        )
        with progress_bar(n_models, "folds") as bar:
            manifest = train_ensemble(
                items,
                out,
                model_spec=model_spec,
                train_cfg=t.model_dump(mode="json"),
                client=client,
                torch_threads=get_setting("cluster.torch-threads", 1),
                progress=bar.update,
                data_description=f"Images from {args.input}; labels from "
                f"{args.gt or args.label or 'est_gt / single expert / majority vote'}.",
            )
    if args.export:
        for path in export_ensemble(out, formats=args.export):
            say(f"exported {path}")
    record.add_output(out, name="ensemble")
    for f in manifest["folds"]:
        record.add_model(f"fold_{f['fold']}", f["sha256"])
    dice = [f["valid_dice"] for f in manifest["folds"]]
    record.set_summary(folds=len(dice), valid_dice=dice, mean_valid_dice=sum(dice) / len(dice))
    say(
        f"Ensemble written to {out}: validation Dice per fold "
        + ", ".join(f"{d:.3f}" for d in dice)
        + f" (mean {sum(dice) / len(dice):.3f})"
    )
    thr = manifest.get("ood_threshold")
    if thr:
        say(
            f"feature-distance threshold for qa's review rule: {thr['value']:.4g} (the largest "
            f"of {thr['n_images']} held-out training images; median {thr['median']:.4g})"
        )
    return 0


def _stored_config(path: Path) -> dict:
    """The training configuration an ensemble folder was made with, completed with today's
    defaults (settings added since then do not make an older folder look different)."""
    from ..config import TrainConfig

    try:
        stored = {**_BEFORE_SETTINGS, **json.loads(path.read_text())}
        return TrainConfig.model_validate(stored).model_dump(mode="json")
    except ValueError:
        return {}


#: What folders written before a setting existed did (not today's default).
_BEFORE_SETTINGS = {"intensity": "dtype", "ema": None}


def _complete(out: Path) -> bool:
    """A finished ensemble whose folds all carry feature statistics and their calibration
    (re-running an older one adds them: every fold is kept, only the statistics are
    computed)."""
    from ..training import ENSEMBLE_FILE

    path = out / ENSEMBLE_FILE
    if not path.is_file():
        return False
    folds = json.loads(path.read_text()).get("folds", [])
    return bool(folds) and all((f.get("features") or {}).get("calibration") for f in folds)


def _channels(item) -> int:
    from ..io import open_image, to_cyx

    return int(to_cyx(open_image(item.image_url)).sizes["c"])
