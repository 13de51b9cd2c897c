"""``scaleseg predict``: ensemble inference with uncertainty over an OME-Zarr archive."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ._common import CLIError, add_cluster_args, add_config_arg, client_from_args, progress_bar, say


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
        "--tile", type=int, nargs=2, metavar=("Y", "X"), help="window (default: the ensemble's)"
    )
    p.add_argument("--overlap", type=float, help="window overlap fraction (default 0.5)")
    p.add_argument(
        "--block", type=int, nargs=2, metavar=("Y", "X"), help="block size (default 2048)"
    )
    p.add_argument(
        "--chunks",
        type=int,
        nargs=2,
        metavar=("Y", "X"),
        default=(512, 512),
        help="output chunks (default 512)",
    )
    p.add_argument("--tta", choices=["none", "flips", "dihedral"], help="test-time augmentation")
    p.add_argument("--batch-size", type=int, help="windows per forward pass")
    p.add_argument("--no-probabilities", action="store_true", help="do not write probabilities")
    p.add_argument(
        "--instances",
        choices=["none", "components", "watershed", "flows", "cellpose"],
        help="instance method run after prediction (default none)",
    )
    from ._instances import add_method_args

    add_method_args(p)
    p.add_argument("--ngff", choices=["0.4", "0.5"], default="0.5")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_config_arg(p)
    add_cluster_args(p, default_local=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg, record) -> int:
    from ..cluster import get_setting
    from ..inference import (
        predict_options,
        predict_output_state,
        read_ensemble,
        same_output_state,
        verify_ensemble,
    )
    from ..inference._run import predict_collection
    from ..io import open_collection
    from ..tables import write_table
    from ..training._items import select_images
    from ._instances import instances_config

    cfg = cfg.updated(
        "predict",
        tile_shape=args.tile,
        overlap=args.overlap,
        block_shape=args.block,
        tta=args.tta,
        batch_size=args.batch_size,
        write_probabilities=False if args.no_probabilities else None,
    )
    record.set_config(cfg)
    pc = cfg.predict
    info = read_ensemble(args.ensemble)
    verify_ensemble(info)
    if info.scale != 1.0:
        raise CLIError(
            f"{args.ensemble}: ensembles trained with --scale {info.scale} cannot be "
            "applied by predict yet (only scale 1)"
        )
    refs = select_images(open_collection(args.input), args.images_file, args.where)
    opts = predict_options(info, pc, chunks=tuple(args.chunks), ngff_version=args.ngff)
    out = Path(args.output)
    state = predict_output_state(info, opts, [r.url for r in refs])
    state_file = out / "predict_state.json"
    if out.exists():
        if args.overwrite:
            shutil.rmtree(out)
        elif not state_file.exists():
            raise CLIError(f"{out} exists and is not a scaleseg prediction (use --overwrite)")
        elif not same_output_state(json.loads(state_file.read_text()), state):
            raise CLIError(
                f"{out} holds a prediction with other settings or models (use --overwrite)"
            )
    if (out / "images.parquet").exists() and (out / "complete").exists():
        say(f"{out}: prediction already complete; nothing to do (use --overwrite to redo it)")
        record.nothing_done()
        return 0
    out.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps(state, indent=2) + "\n")
    record.add_input(args.input, name="input")
    for f in info.folds:
        record.add_model(f"fold_{f['fold']}", f["sha256"])
    say(
        f"predicting {len(refs)} image(s) with {len(info.folds)} models x "
        f"{ {'none': 1, 'flips': 4, 'dihedral': 8}[pc.tta] } augmentations, tile "
        f"{opts['tile_shape'][0]}x{opts['tile_shape'][1]}"
    )
    icfg = instances_config(cfg, args, args.instances).instances
    record.set_config(cfg.updated("instances", method=icfg.method))
    with client_from_args(args) as client:
        with progress_bar(0, "blocks") as bar:
            res = predict_collection(
                refs,
                info,
                out,
                opts=opts,
                client=client,
                torch_threads=get_setting("cluster.torch-threads", 1),
                retries=pc.retries,
                progress=bar.update,
                set_total=lambda n: (setattr(bar, "total", n), bar.refresh()),
            )
        table = res["images"]
        write_table(table, out / "images", ["parquet", "csv"])
        failed = table[table["status"] != "ok"]
        record.add_output(out, name="prediction")
        record.set_summary(
            images=len(table),
            failed=len(failed),
            units_run=res["units_run"],
            units_resumed=res["units_resumed"],
            mean_U=float(table["U"].mean()),
        )
        say(
            f"Predicted {len(table) - len(failed)} / {len(table)} images -> {out} "
            f"({res['units_run']} units run, {res['units_resumed']} resumed)"
        )
        for _, r in failed.iterrows():
            say(f"  failed {r['image']}: {r['error']}")
        cols = [
            c
            for c in ("rank", "image", "U", "U_epistemic", "foreground_fraction", "seconds")
            if c in table
        ]
        say(table[cols].head(10).to_string(index=False))
        if icfg.method != "none":
            from ..instances import method_params, run_instances
            from ._instances import report

            say(f"instances: method {icfg.method}")
            with progress_bar(None, "instances") as bar:
                res_i = run_instances(
                    out,
                    params=method_params(icfg),
                    block_shape=tuple(pc.block_shape),
                    overwrite=True,
                    client=client,
                    progress=bar.update,
                )
            report(res_i, out, record)
    if failed.empty:
        (out / "complete").write_text("")
    return 0 if failed.empty else 3
