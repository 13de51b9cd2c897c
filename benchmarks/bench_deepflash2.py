"""deepflash2 side by side (issue 9, item 2): the same fold weights, images, tiles, TTA and ensemble.

An ensemble of M Unet + ConvNeXt-Tiny (``tu-convnext_tiny``) models is built with scaleseg
(random initialisation with seeds 0..M-1, no pretrained encoder; each model's segmentation head is
then rescaled so its logits spread like a trained model's: see ``_calibrate_head``), saved as a
scaleseg ensemble (safetensors + ensemble.json) and, from the same state dicts, as deepflash2 fold
files (the dict ``deepflash2.models.save_smp_model`` writes). deepflash2 0.3.0 runs in its own
environment (``benchmarks/deepflash2_env.sh``) through ``benchmarks/_df2_predict.py``:
``InferenceEnsemble`` + ``EnsemblePredictor.get_ensemble_results``, torch with all cores. scaleseg
runs ``predict_collection`` on OME-Zarr copies of the same images on a LocalCluster of 2
single-threaded workers. Both are warmed up (models loaded, two forward passes) before timing.

Images: centre 512x512 crops of the first N PV-in-HC images (../shared/data), uint8.
Normalisation: scaleseg's per-channel mean/std on the [0, 1] scale; deepflash2 gets the same
values x 255 (it normalises raw pixel values).

Cases (each a different tiling; T = 4 flips, M models, Gaussian sigma = tile/8 in all):

* ``single``   tile 512: one window per image in both systems (deepflash2
               ``border_padding_factor=0, max_tile_shift=1.5``). Same algorithm: expect 1e-4.
* ``matched``  tile 256, the same 3x3 windows at offsets 0/128/256 in both (scaleseg overlap 0.5;
               deepflash2 ``border_padding_factor=0, max_tile_shift=1.0``). Probabilities the same
               algorithm; the uncertainty map is not (deepflash2 blends per-window uncertainties).
* ``defaults`` tile 256 with each system's defaults: scaleseg overlap 0.5, numpy-"reflect" padding
               of the last window; deepflash2 Config ``border_padding_factor=0.25,
               max_tile_shift=0.5`` (6x6 windows reaching 64 px past every border, "symmetric"
               padding through ``grid_sample(padding_mode="reflection")``).

    bash benchmarks/deepflash2_env.sh        # once: .venv-deepflash2 (~2.5 min, ~7 GB)
    python benchmarks/bench_deepflash2.py [--images 2] [--models 2] [--cases single matched defaults]
                                          [--json results/deepflash2.json] [--keep DIR]

Without the deepflash2 environment it prints ``deepflash2.skipped = ...`` and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CASES = {
    "single": {"tile": 512, "overlap": 0.5, "border_padding_factor": 0.0, "max_tile_shift": 1.5},
    "matched": {"tile": 256, "overlap": 0.5, "border_padding_factor": 0.0, "max_tile_shift": 1.0},
    "defaults": {
        "tile": 256,
        "overlap": 0.5,
        "border_padding_factor": 0.25,
        "max_tile_shift": 0.5,
    },
}
CROP = 512
ENCODER = "tu-convnext_tiny"


def df2_python() -> tuple[Path | None, str]:
    """The deepflash2 environment's interpreter, or None and the reason."""
    venv = Path(os.environ.get("SCALESEG_DF2_VENV", ROOT / ".venv-deepflash2"))
    if not venv.is_absolute():
        venv = ROOT / venv
    py = venv / "bin" / "python"
    if not py.is_file():
        return (
            None,
            f"no deepflash2 environment at {venv} (create it: bash benchmarks/deepflash2_env.sh)",
        )
    probe = subprocess.run(
        [str(py), "-c", "import deepflash2.inference, deepflash2.learner, deepflash2.gt"],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
        check=False,
    )
    if probe.returncode:
        tail = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"deepflash2 does not import in {venv}: {tail}"
    return py, ""


def df2_env(threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        NO_ALBUMENTATIONS_UPDATE="1",
        HF_HUB_OFFLINE="1",
    )
    return env


def _images(tmp: Path, n: int) -> list[tuple[str, object]]:
    """Centre crops (uint8, (Y, X)) of the first n PV-in-HC images, as PNG and OME-Zarr."""
    import numpy as np
    from PIL import Image

    from scaleseg.datasets import shared_data_dir
    from scaleseg.io import write_image

    src = sorted((shared_data_dir() / "pv_hc_multiexpert_deepflash_temp" / "images").glob("*.png"))
    if len(src) < n:
        raise SystemExit(f"need {n} PV-in-HC images, found {len(src)}")
    out = []
    (tmp / "png").mkdir(parents=True, exist_ok=True)
    for f in src[:n]:
        img = np.asarray(Image.open(f))
        y0, x0 = (img.shape[0] - CROP) // 2, (img.shape[1] - CROP) // 2
        crop = np.ascontiguousarray(img[y0 : y0 + CROP, x0 : x0 + CROP])
        name = f"pv_{f.stem}"
        Image.fromarray(crop).save(tmp / "png" / f"{name}.png")
        write_image(tmp / "zarr" / f"{name}.zarr", crop[None], chunks=(512, 512), n_levels=1)
        out.append((name, crop))
    return out


def _calibrate_head(model, ref, *, spread: float = 6.0, foreground: float = 0.2) -> None:
    """Rescale the segmentation head of a freshly initialised 2-class model, in place.

    At initialisation (truncated normal, std 0.02) the logits differ by ~1e-4, so every
    probability is 0.5 and labels are noise. Head weights and biases are multiplied by one factor
    so that the logit difference has std ``spread`` on the reference tile, and the class-1 bias is
    shifted so that a ``foreground`` fraction of it is foreground. Deterministic given the seed.
    """
    import torch

    head = model.segmentation_head[0]
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(ref)[None])
        d = (logits[0, 1] - logits[0, 0]).double()
        a = spread / float(d.std())
        head.weight.mul_(a)
        head.bias.mul_(a)
        head.bias[1] -= float(torch.quantile((a * d).flatten(), 1.0 - foreground))


def _df2_fold_file(path: Path, model, spec: dict, norm) -> None:
    """One fold in deepflash2's layout (deepflash2.models.save_smp_model): the smp kwargs, the
    raw-pixel normalisation stats, legacy (non-zip) torch serialisation, pickle protocol 2."""
    import numpy as np
    import torch

    stats = {
        "channel_means": np.asarray(norm.mean) * 255.0,
        "channel_stds": np.asarray(norm.std) * 255.0,
        "max_tiles_per_image": 1,
    }
    save = {
        "model": model.state_dict(),
        "arch": spec["arch"],
        "stats": stats,
        "encoder_name": spec["encoder"],
        "encoder_weights": None,
        "in_channels": spec["in_channels"],
        "classes": spec["n_classes"],
    }
    torch.save(save, path, pickle_protocol=2, _use_new_zipfile_serialization=False)


def _trained_ensemble(tmp: Path, src: Path, n_models: int) -> tuple[Path, list[str], dict, str]:
    """The first ``n_models`` folds of a trained scaleseg ensemble, also as deepflash2 files."""
    import shutil

    import torch

    from scaleseg.inference import get_models, read_ensemble
    from scaleseg.models import Normalization

    info = read_ensemble(src)
    spec = info.model
    # the shape deepflash2's create_smp_model builds for this encoder
    if spec["encoder"].startswith("tu-convnext"):
        shape = (4, [256, 128, 64, 16])
    else:
        shape = (None, None)
    if (spec.get("encoder_depth"), spec.get("decoder_channels")) != shape:
        raise SystemExit(
            f"{src}: deepflash2 builds {spec['encoder']} U-Nets with encoder depth / decoder "
            f"channels {shape} (None = smp's default); this ensemble has "
            f"{spec.get('encoder_depth')} / {spec.get('decoder_channels')}"
        )
    folds = list(info.folds[:n_models])
    ens = tmp / "ensemble"
    df2 = tmp / "df2_models"
    df2.mkdir(parents=True)
    for f in folds:
        (ens / Path(f.path).parent).mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / f.path, ens / f.path)
    folds = [f.model_copy(update={"features": None}) for f in folds]
    info.manifest.model_copy(update={"folds": folds}).write(ens)
    norm = Normalization.from_dict(info.normalization)
    torch.set_num_threads(2)
    pths = []
    for k, model in enumerate(get_models(read_ensemble(ens), torch.device("cpu"))):
        pth = df2 / f"{spec['arch']}_{spec['encoder'].replace('_', '-')}_2classes-fold{k + 1}.pth"
        _df2_fold_file(pth, model, spec, norm)
        pths.append(str(pth))
    desc = (
        f"trained scaleseg ensemble {src} ({spec['arch']} + {spec['encoder']}, folds "
        f"{[f.fold for f in folds]})"
    )
    return ens, pths, norm.to_dict(), desc


def _ensemble(tmp: Path, crops, n_models: int) -> tuple[Path, list[str], dict, str]:
    """scaleseg ensemble + deepflash2 fold files holding the same weights."""
    import torch

    from scaleseg.models import EnsembleManifest, ModelSpec, build_model, save_weights
    from scaleseg.training import channel_stats

    norm = channel_stats([c[None] for _, c in crops])
    ref = norm.apply(crops[0][1][None, :256, :256])
    spec = {
        "arch": "Unet",
        "encoder": ENCODER,
        "in_channels": 1,
        "n_classes": 2,
        "n_extra": 0,
        "encoder_weights": None,
        # deepflash2's ConvNeXt U-Net (create_smp_model): 4 stages, decoder (256, 128, 64, 16),
        # so deepflash2's own load_smp_model reads the fold files scaleseg writes
        "encoder_depth": 4,
        "decoder_channels": [256, 128, 64, 16],
    }
    ens = tmp / "ensemble"
    df2 = tmp / "df2_models"
    df2.mkdir(parents=True)
    folds, pths = [], []
    torch.set_num_threads(2)
    for k in range(n_models):
        model = build_model(ModelSpec.from_dict(spec), seed=k)
        _calibrate_head(model, ref)
        (ens / f"fold_{k}").mkdir(parents=True)
        sha = save_weights(model, ens / f"fold_{k}" / "weights.safetensors")
        folds.append(
            {
                "fold": k,
                "path": f"fold_{k}/weights.safetensors",
                "sha256": sha,
                "valid_dice": 0.0,
                "best_epoch": 0,
                "train_images": [],
                "valid_images": [],
                "seconds": 0.0,
            }
        )
        pth = df2 / f"Unet_{ENCODER.replace('_', '-')}_2classes-fold{k + 1}.pth"
        _df2_fold_file(pth, model, spec, norm)
        pths.append(str(pth))
    EnsembleManifest(
        created=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        model=spec,
        architecture=spec["arch"],
        encoder=spec["encoder"],
        in_channels=1,
        n_classes=2,
        n_extra=0,
        tile_shape=(512, 512),
        scale=1.0,
        normalization=norm.to_dict(),
        folds=folds,
        classes=["background", "pv"],
        train={},
    ).write(ens)
    desc = (
        f"Unet + {ENCODER} (deepflash2's shape: depth 4, decoder 256-128-64-16), M={n_models}, "
        "random init seeds 0.., head rescaled (logit-difference std 6, 20% foreground)"
    )
    return ens, pths, norm.to_dict(), desc


def _warm(info, tile: int) -> bool:
    """On a worker: load the models into the per-process cache and run two forward passes."""
    import torch

    from scaleseg.inference import get_models
    from scaleseg.worker import prepare_worker_process

    prepare_worker_process(1)  # as predict_unit does in every worker
    x = torch.zeros(1, info.in_channels, tile, tile)
    with torch.inference_mode():
        for m in get_models(info, torch.device("cpu")):
            m(x)
            m(x)
    return True


def _run_scaleseg(tmp: Path, ens: Path, names: list[str], cases: list[str], workers: int) -> dict:
    import numpy as np
    import zarr
    from distributed import Client, LocalCluster

    from scaleseg.config import PredictConfig
    from scaleseg.inference import predict_collection, read_ensemble
    from scaleseg.io import open_collection

    info = read_ensemble(ens)
    refs = open_collection(tmp / "zarr")
    out: dict = {}
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, dashboard_address=":0", memory_limit="10GiB"
        ) as cluster,
        Client(cluster) as client,
    ):
        for case in cases:
            c = CASES[case]
            client.run(_warm, info, c["tile"])
            # scaleseg's defaults (batch 1 on CPU, like deepflash2's per-window passes);
            # float32 probabilities for the comparison
            config = PredictConfig(
                tile_shape=(c["tile"], c["tile"]),
                overlap=c["overlap"],
                tta="flips",
                probabilities_dtype="float32",
            )
            dest = tmp / "scaleseg" / case
            t0 = time.perf_counter()
            res = predict_collection(refs, info, dest, config=config, client=client)
            secs = time.perf_counter() - t0
            table = res["images"].set_index("image")
            if (table["status"] != "ok").any():
                raise RuntimeError(f"scaleseg predict failed: {table['error'].to_dict()}")
            images = {}
            for name in names:
                g = zarr.open_group(str(dest / "images" / f"{name}.zarr"), mode="r")
                images[name] = {
                    "smx": np.asarray(g["probabilities"]["s0"][:]),
                    "u": np.asarray(g["s0"][0]),
                    "epistemic": np.asarray(g["s0"][1]),
                    "pred": np.asarray(g["labels"]["semantic"]["s0"][:]),
                    "U": float(table.loc[name, "U"]),
                    "n_forward": int(table.loc[name, "n_forward"]),
                }
            out[case] = {"seconds": secs, "images": images}
            print(f"[scaleseg] {case}: {secs:.1f} s for {len(names)} images", flush=True)
    return out


def _coverage(shape, tile: int, overlap: float):
    """Number of scaleseg windows covering each pixel."""
    import numpy as np

    from scaleseg.inference._tiling import plan_tiles

    plan = plan_tiles(shape, tile_shape=(tile, tile), overlap=overlap)
    cov = np.zeros(shape, dtype=np.int32)
    for y, x in plan.windows():
        cov[y : y + tile, x : x + tile] += 1
    return cov, plan.n_windows


def _dice(a, b) -> float:
    a, b = a != 0, b != 0
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


def _compare(
    case: str, df2_dir: Path, df2_res: dict, ss: dict, names: list[str], n_models: int
) -> dict:
    import numpy as np

    c = CASES[case]
    dp, du, du1, du2, dice, ndiff, dU = [], [], [], [], [], [], []
    for name in names:
        smx = np.load(df2_dir / case / f"{name}_smx.npy")
        std = np.load(df2_dir / case / f"{name}_std.npy")
        pred = np.load(df2_dir / case / f"{name}_pred.npy")
        s = ss["images"][name]
        cov, n_win = _coverage(pred.shape, c["tile"], c["overlap"])
        dp.append(float(np.abs(smx - s["smx"]).max()))
        d = np.abs(std - s["u"])
        du.append(float(d.max()))
        du1.append(float(d[cov == 1].max()) if (cov == 1).any() else float("nan"))
        du2.append(float(d[cov > 1].max()) if (cov > 1).any() else float("nan"))
        dice.append(_dice(pred, s["pred"]))
        ndiff.append(int((pred != s["pred"]).sum()))
        a, b = df2_res["images"][name]["U"], s["U"]
        # U is undefined (NaN) without predicted foreground: both undefined counts as equal
        dU.append(
            0.0 if np.isnan(a) and np.isnan(b) else abs(a - b) if a == a and b == b else np.inf
        )
    ss_s = ss["seconds"] / len(names)
    df_s = df2_res["seconds_per_image"]
    f = {
        f"{case}_settings": (
            f"tile {c['tile']}; scaleseg overlap {c['overlap']} "
            f"({ss['images'][names[0]]['n_forward'] // (4 * n_models)} windows x 4 flips per image); "
            f"deepflash2 border_padding_factor {c['border_padding_factor']}, max_tile_shift "
            f"{c['max_tile_shift']} ({df2_res['windows_per_image']} windows x 4 flips)"
        ),
        f"{case}_max_abs_diff_probability": float(f"{max(dp):.3g}"),
        f"{case}_max_abs_diff_uncertainty": float(f"{max(du):.3g}"),
        f"{case}_label_dice_min": round(min(dice), 6),
        f"{case}_label_pixels_differing": int(sum(ndiff)),
        f"{case}_max_abs_diff_U": float(f"{max(dU):.3g}"),
        f"{case}_U_scaleseg": [round(ss["images"][n]["U"], 6) for n in names],
        f"{case}_U_deepflash2": [round(df2_res["images"][n]["U"], 6) for n in names],
        f"{case}_seconds_per_image_scaleseg": round(ss_s, 2),
        f"{case}_seconds_per_image_deepflash2": round(df_s, 2),
        f"{case}_time_ratio_scaleseg_vs_deepflash2": round(ss_s / df_s, 3),
    }
    if case != "single":
        f[f"{case}_max_abs_diff_uncertainty_1_window_pixels"] = float(f"{max(du1):.3g}")
        f[f"{case}_max_abs_diff_uncertainty_overlap_pixels"] = float(f"{max(du2):.3g}")
    return f


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--models", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="deepflash2's torch threads")
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--keep", help="keep the work folder here (default: a temporary folder)")
    ap.add_argument(
        "--ensemble",
        help="a trained scaleseg ensemble (its first --models folds and its normalisation) "
        "instead of random ConvNeXt-Tiny models",
    )
    args = ap.parse_args()

    py, why = df2_python()
    if py is None:
        emit("deepflash2", {"skipped": why}, args.json)
        return

    t_all = time.perf_counter()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.keep) if args.keep else Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        crops = _images(tmp, args.images)
        names = [n for n, _ in crops]
        if args.ensemble:
            ens, pths, norm, desc = _trained_ensemble(tmp, Path(args.ensemble), args.models)
        else:
            ens, pths, norm, desc = _ensemble(tmp, crops, args.models)

        spec = {
            "images": [str(tmp / "png" / f"{n}.png") for n in names],
            "models": pths,
            "out": str(tmp / "df2_out"),
            "threads": args.threads,
            "n_classes": 2,
            "in_channels": 1,
            "cases": [{"name": k, **CASES[k]} for k in args.cases],
        }
        (tmp / "df2_spec.json").write_text(json.dumps(spec, indent=1))
        proc = subprocess.run(
            [str(py), str(HERE / "_df2_predict.py"), str(tmp / "df2_spec.json")],
            env=df2_env(args.threads),
            cwd=tmp,
            check=False,
        )
        if proc.returncode:
            emit("deepflash2", {"failed": f"deepflash2 run exited {proc.returncode}"}, args.json)
            sys.exit(1)
        df2 = json.loads((tmp / "df2_out" / "result.json").read_text())
        ss = _run_scaleseg(tmp, ens, names, args.cases, args.workers)

        figures = {
            "images": f"{len(names)} x {CROP}x{CROP} centre crops of PV-in-HC ({', '.join(names)})",
            "ensemble": f"{desc}; T=4 flips",
            "normalization": f"mean {norm['mean'][0]:.5f}, std {norm['std'][0]:.5f} "
            "on [0, 1] (deepflash2: x 255)",
            "scaleseg_run": f"predict_collection, LocalCluster {args.workers} workers x 1 thread",
            "deepflash2_run": f"InferenceEnsemble + EnsemblePredictor, torch threads "
            f"{df2['torch_threads']}",
            "deepflash2_versions": ", ".join(f"{k} {v}" for k, v in df2["versions"].items()),
            "deepflash2_weight_loading": df2["load_note"],
        }
        for case in args.cases:
            figures.update(
                _compare(case, tmp / "df2_out", df2["cases"][case], ss[case], names, args.models)
            )
        figures["wall_s"] = round(time.perf_counter() - t_all, 1)
        figures["load_average_start_end"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    emit("deepflash2", figures, args.json)


if __name__ == "__main__":
    main()
