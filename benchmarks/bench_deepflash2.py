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

Large fields (``--large``, issue 16 item 3): each tool at its DEFAULT inference settings, on the
same trained ensemble, over 2048x2048 mosaics (2x2 of the 1024x1024 held-out PV-in-HC images of a
``scripts/verify_pv_hc`` output folder ``--run``, sorted by name, 4 per mosaic; ``--mosaics``
of them) with their estimated ground truth (``est_gt``) tiled the same way.

* Ensemble: ``<run>/ensemble`` as trained (all folds, feature statistics included; ``--folds N``
  keeps the first N). deepflash2 gets the very same weights as fold files in
  ``save_smp_model``'s layout that also carry the model's smp kwargs (``decoder_channels``, as
  ``save_smp_model`` stores ``model.kwargs``), so its own ``load_smp_model`` -> ``create_smp_model``
  builds the same U-Net (strict state-dict load; ConvNeXt encoders, whose shape
  ``create_smp_model`` forces, must have deepflash2's shape).
* Normalisation: the ensemble's per-image percentiles (1 / 99.8) are measured on the mosaic (it is
  the image). deepflash2, which only subtracts / divides fixed per-channel values, reads the mosaic
  already on scaleseg's unit scale: a float32 TIFF of ``Normalization.for_image(mosaic).unit``
  (``(x - p_low) / (p_high - p_low)``, clipped at 0), with ``channel_means`` / ``channel_stds`` the
  ensemble's mean / std, so its ``Normalize`` gives the very input of scaleseg's ``standardize``.
  Checked first on one tile-sized crop predicted as one window by both
  (``large_check_max_abs_diff_probability``).
* scaleseg: ``scaleseg.predict(mosaics, ensemble, out, client=...)`` with ``PredictConfig()``
  (engine auto = ONNX Runtime on CPU, windows 4x the ensemble's tile fitted to the image,
  overlap 0.25, flips, its calibrated
  decision threshold), LocalCluster ``--workers`` x 1 thread, all mosaics in one call.
  deepflash2: ``InferenceEnsemble`` from its default ``Config()`` (tile 512,
  ``border_padding_factor`` 0.25, ``max_tile_shift`` 0.5, flips, Gaussian 1/8), as
  ``EnsembleLearner.get_inference_ensemble`` builds it, run by ``EnsemblePredictor.
  get_ensemble_results`` over all mosaics in a long-lived process (``_df2_predict.py --serve``),
  torch ``--threads`` threads, argmax labels.
* Timing: models loaded in both, one untimed warm-up call of each on the check crop, then
  ``--repeats`` rounds scaleseg, deepflash2, scaleseg, ...; seconds per mosaic (call / mosaics),
  medians and the median of the per-round ratios scaleseg / deepflash2.
* Quality: Dice of each tool's labels against the tiled est_gt per mosaic (and scaleseg's argmax
  labels), the two tools' label agreement and mean probability difference.
* Spot check: mosaic 0 with ``--spot-models`` random ConvNeXt-Tiny members in deepflash2's shape
  (depth 4, decoder 256-128-64-16, calibrated heads, tile 512; see ``_ensemble``), both tools'
  defaults, warm-up on a 256x256 crop, ``--spot-repeats`` rounds: time ratio only.

    python benchmarks/bench_deepflash2.py --large --run /tmp/pv/d16s0 [--mosaics 2] [--repeats 3]
        [--spot-models 4] [--spot-repeats 1] [--workers 2] [--threads 2] [--json FILE]
    # smoke test: --mosaics 1 --repeats 1 --mosaic-tile 64 --folds 1 --spot-models 1
    #             --workers 1 --threads 1

Without the deepflash2 environment it prints ``deepflash2.skipped = ...`` and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_feature_stats, emit  # noqa: E402

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


def _smp_kwargs(spec: dict) -> dict:
    """The smp.create_model kwargs of a scaleseg model spec beyond the defaults (encoder depth,
    decoder channels), as scaleseg's build_model passes them."""
    from scaleseg.models import ModelSpec

    return ModelSpec.from_dict({**spec, "encoder_weights": None}).smp_kwargs()


def _check_df2_shape(spec: dict, src) -> None:
    """Refuse models deepflash2's create_smp_model cannot rebuild: for ConvNeXt encoders it
    forces encoder depth 4 and decoder channels (256, 128, 64, 16); any other encoder gets the
    fold file's own kwargs (decoder channels included)."""
    if not spec["encoder"].startswith("tu-convnext"):
        return
    shape = (4, [256, 128, 64, 16])
    have = (spec.get("encoder_depth"), spec.get("decoder_channels"))
    if have != shape:
        raise SystemExit(
            f"{src}: deepflash2 builds {spec['encoder']} U-Nets with encoder depth / decoder "
            f"channels {shape}; this ensemble has {have[0]} / {have[1]}"
        )


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
        # the model's other smp kwargs, as save_smp_model stores model.kwargs: load_smp_model
        # hands them to create_smp_model (which overrides them only for ConvNeXt encoders)
        **_smp_kwargs(spec),
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
    _check_df2_shape(spec, src)
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


def _warm(info, config, image_shape) -> bool:
    """On a worker: load the models into the per-process cache (the run's engine, precision
    and the window of an image of ``image_shape``) and run two forward passes."""
    import torch

    from scaleseg.inference import get_models
    from scaleseg.worker import prepare_worker_process

    prepare_worker_process(1)  # as predict_unit does in every worker
    window = config.window_for(image_shape, info.tile_shape)
    x = torch.zeros(1, info.in_channels, *window)
    cpu = torch.device("cpu")
    with torch.inference_mode():
        for m in get_models(info, cpu, config.engine, window, config.precision):
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
            # scaleseg's defaults (batch 1 on CPU, like deepflash2's per-window passes; the
            # default engine); float32 probabilities for the comparison
            config = PredictConfig(
                tile_shape=(c["tile"], c["tile"]),
                overlap=c["overlap"],
                tta="flips",
                probabilities_dtype="float32",
            )
            client.run(_warm, info, config, config.tile_shape)
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


# ---------------------------------------------------------------------------------------------
# --large: 2x2 mosaics of held-out PV-in-HC images, both tools at their default settings


class _Df2Server:
    """A long-lived deepflash2 process (``_df2_predict.py --serve``): fold models loaded once,
    one JSON request / answer per prediction, so its rounds can alternate with scaleseg's."""

    def __init__(self, py: Path, tmp: Path, pths: list[str], norm, threads: int, in_ch: int):
        import numpy as np

        spec = {
            "models": pths,
            "threads": threads,
            "n_classes": 2,
            "in_channels": in_ch,
            # deepflash2 gets images already on scaleseg's unit scale (see _df2_input)
            "channel_means": np.asarray(norm.mean).tolist(),
            "channel_stds": np.asarray(norm.std).tolist(),
            "workdir": str(tmp),
        }
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "serve.json").write_text(json.dumps(spec, indent=1))
        self.proc = subprocess.Popen(
            [str(py), str(HERE / "_df2_predict.py"), "--serve", str(tmp / "serve.json")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=df2_env(threads),
            cwd=tmp,
            text=True,
        )
        self.info = self._answer()

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the deepflash2 server exited ({self.proc.wait()})")
        return json.loads(line)

    def predict(self, name: str, files, settings=None, save=None) -> dict:
        req = {"op": "predict", "name": name, "files": [str(f) for f in files]}
        req.update(settings=settings or {}, save=None if save is None else str(save))
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=120)


def _df2_input(path: Path, image, norm) -> None:
    """deepflash2's copy of a (1, Y, X) image: float32 TIFF on scaleseg's unit scale, i.e.
    exactly ``norm.for_image(image).unit(image)`` (per-image percentiles measured on this
    image, (x - p_low) / (p_high - p_low), clipped at 0). deepflash2 then applies
    ``Normalize(mean, std)`` with the ensemble's mean / std, as scaleseg's ``standardize``."""
    from PIL import Image

    unit = norm.for_image(image).unit(image)
    Image.fromarray(unit[0]).save(path)


def _heldout(run: Path) -> list[str]:
    import pandas as pd

    table = pd.read_csv(run / "split.csv", dtype=str)
    return sorted(table.loc[table["split"] == "test", "name"])


def _centre(a, size: int | None):
    if not size:
        return a
    h, w = a.shape[-2:]
    if size > min(h, w):
        raise SystemExit(f"--mosaic-tile {size} exceeds the image shape {h}x{w}")
    y0, x0 = (h - size) // 2, (w - size) // 2
    return a[..., y0 : y0 + size, x0 : x0 + size]


def _mosaics(run: Path, tmp: Path, n: int, tile: int | None, norm) -> list[dict]:
    """``n`` 2x2 mosaics of held-out images (sorted by name: 4 per mosaic, row-major), with
    their est_gt tiled the same way; written as OME-Zarr (scaleseg) and unit-scale TIFF
    (deepflash2)."""
    import numpy as np

    from scaleseg.io import open_image, open_labels, write_image

    names = _heldout(run)
    if len(names) < 4 * n:
        raise SystemExit(f"{run}: {len(names)} held-out images, {n} mosaics need {4 * n}")
    out = []
    (tmp / "df2_in").mkdir(parents=True, exist_ok=True)
    for m in range(n):
        parts = names[4 * m : 4 * m + 4]
        imgs = [
            _centre(np.asarray(open_image(run / "apply.zarr" / f"{p}.zarr")), tile) for p in parts
        ]
        gts = [
            _centre(np.asarray(open_labels(run / "gt" / "images" / f"{p}.zarr", "est_gt")), tile)
            for p in parts
        ]
        if len({a.shape for a in imgs}) != 1 or imgs[0].shape[1:] != gts[0].shape:
            raise SystemExit(f"mosaic {m}: images {[a.shape for a in imgs]} do not tile")
        image = np.block([[imgs[0], imgs[1]], [imgs[2], imgs[3]]])
        gt = np.block([[gts[0], gts[1]], [gts[2], gts[3]]])
        name = f"mosaic{m}_{'_'.join(parts)}"
        write_image(tmp / "mosaics" / f"{name}.zarr", image, chunks=(512, 512), n_levels=1)
        _df2_input(tmp / "df2_in" / f"{name}.tif", image, norm)
        out.append({"name": name, "parts": parts, "image": image, "gt": gt != 0})
    return out


def _ensemble_subset(src: Path, dest: Path, n: int | None) -> Path:
    """``src`` itself, or (``n`` < its folds) a copy with its first ``n`` folds, weights and
    feature statistics as they are."""
    import shutil

    from scaleseg.inference import read_ensemble

    info = read_ensemble(src)
    if not n or n >= len(info.folds):
        return src
    folds = list(info.folds[:n])
    for f in folds:
        for rel in [f.path] + ([f.features.path] if f.features is not None else []):
            (dest / Path(rel).parent).mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dest / rel)
    info.manifest.model_copy(update={"folds": folds}).write(dest)
    return dest


def _df2_folds(ens: Path, dest: Path) -> list[str]:
    """deepflash2 fold files holding the very weights of the ensemble's members (torch)."""
    import torch

    from scaleseg.inference import get_models, read_ensemble
    from scaleseg.models import Normalization

    info = read_ensemble(ens)
    _check_df2_shape(info.model, ens)
    norm = Normalization.from_dict(info.normalization)
    dest.mkdir(parents=True, exist_ok=True)
    pths = []
    for k, model in enumerate(get_models(info, torch.device("cpu"))):
        enc = info.model["encoder"].replace("_", "-")
        pth = dest / f"{info.model['arch']}_{enc}_2classes-fold{k + 1}.pth"
        _df2_fold_file(pth, model, info.model, norm)
        pths.append(str(pth))
    return pths


def _ss_predict(src: Path, ens: Path, out: Path, client, config=None) -> tuple[float, object]:
    """One timed ``scaleseg.predict`` call (a fresh output folder)."""
    import scaleseg

    t0 = time.perf_counter()
    res = scaleseg.predict(src, ens, out, config=config, client=client, progress=False)
    secs = time.perf_counter() - t0
    if len(res.failed):
        raise RuntimeError(f"scaleseg predict failed: {res.failed['error'].to_dict()}")
    return secs, res.images.set_index("image")


def _ss_read(out: Path, name: str) -> tuple:
    import numpy as np
    import zarr

    g = zarr.open_group(str(out / "images" / f"{name}.zarr"), mode="r")
    prob = np.asarray(g["probabilities"]["s0"][:], dtype=np.float32)
    return prob, np.squeeze(np.asarray(g["labels"]["semantic"]["s0"][:]))


def _alternate(name, ss_run, df2_run, repeats: int) -> dict:
    """One warm-up call of each tool (``run(-1)``: a small image, models already loaded), then
    ``repeats`` rounds scaleseg, deepflash2, scaleseg, deepflash2, ... (seconds per call)."""
    import statistics

    warm_ss, warm_df = ss_run(-1), df2_run(-1)
    ss, df = [], []
    for r in range(repeats):
        ss.append(ss_run(r))
        df.append(df2_run(r))
        print(
            f"[{name}] round {r + 1}/{repeats}: scaleseg {ss[-1]:.1f} s, deepflash2 {df[-1]:.1f} s",
            flush=True,
        )
    ratios = [a / b for a, b in zip(ss, df)]
    return {
        "warm": (warm_ss, warm_df),
        "ss": ss,
        "df": df,
        "ratios": ratios,
        "ss_median": statistics.median(ss),
        "df_median": statistics.median(df),
        "ratio_median": statistics.median(ratios),
    }


def _timing_figures(prefix: str, t: dict, n: int) -> dict:
    return {
        f"{prefix}_seconds_per_mosaic_scaleseg": round(t["ss_median"] / n, 2),
        f"{prefix}_seconds_per_mosaic_deepflash2": round(t["df_median"] / n, 2),
        f"{prefix}_time_ratio_median": round(t["ratio_median"], 3),
        f"{prefix}_time_ratio_rounds": [round(r, 3) for r in t["ratios"]],
        f"{prefix}_seconds_per_mosaic_scaleseg_rounds": [round(s / n, 2) for s in t["ss"]],
        f"{prefix}_seconds_per_mosaic_deepflash2_rounds": [round(s / n, 2) for s in t["df"]],
        f"{prefix}_warmup_seconds_scaleseg_deepflash2": [round(s, 2) for s in t["warm"]],
    }


def _check_window(
    tmp: Path, run: Path, part: str, ens: Path, norm, server, client, tile: int
) -> dict:
    """One tile-sized crop, one window in both tools (deepflash2 border_padding_factor 0,
    max_tile_shift 1.5): the probabilities of the same weights on the same normalised pixels."""
    import numpy as np

    from scaleseg.config import PredictConfig
    from scaleseg.io import open_image, write_image

    crop = np.ascontiguousarray(
        _centre(np.asarray(open_image(run / "apply.zarr" / f"{part}.zarr")), tile)
    )
    write_image(tmp / "check" / "in" / "check.zarr", crop, chunks=(512, 512), n_levels=1)
    _df2_input(tmp / "check" / "check.tif", crop, norm)
    # scaleseg's defaults but float32 probabilities for the comparison
    config = PredictConfig(probabilities_dtype="float32")
    _ss_predict(tmp / "check" / "in", ens, tmp / "check" / "ss", client, config)
    p_ss, _ = _ss_read(tmp / "check" / "ss", "check")
    one = {"tile": tile, "border_padding_factor": 0.0, "max_tile_shift": 1.5}
    ans = server.predict("check", [tmp / "check" / "check.tif"], one, tmp / "check" / "df2")
    p_df = np.load(tmp / "check" / "df2" / "check_smx.npy")
    diff = float(np.abs(p_ss - p_df).max())
    if diff > 1e-3:
        print(f"WARNING: one-window probabilities differ by {diff:.3g}", file=sys.stderr)
    return {
        "large_check": f"{tile}x{tile} centre crop of {part}, one window x 4 flips "
        f"x members in both (deepflash2 input {ans['input_dtype']}, {ans['windows']} window)",
        "large_check_max_abs_diff_probability": float(f"{diff:.3g}"),
    }


def _quality(tmp: Path, mosaics: list[dict], ss_out: Path, df2_out: Path) -> dict:
    import numpy as np

    d_ss, d_ss_am, d_df, agree, ndiff, dprob = [], [], [], [], [], []
    for m in mosaics:
        p_ss, l_ss = _ss_read(ss_out, m["name"])
        l_df = np.load(df2_out / f"{m['name']}_pred.npy")
        p_df = np.load(df2_out / f"{m['name']}_smx.npy")
        d_ss.append(_dice(l_ss, m["gt"]))
        d_ss_am.append(_dice(p_ss[1] > p_ss[0], m["gt"]))
        d_df.append(_dice(l_df, m["gt"]))
        agree.append(_dice(l_ss, l_df))
        ndiff.append(float(((l_ss != 0) != (l_df != 0)).mean()))
        dprob.append(float(np.abs(p_ss[1] - p_df[1]).mean()))

    def r(v):
        return [round(x, 4) for x in v]

    return {
        "large_gt_foreground_fraction": r([float(m["gt"].mean()) for m in mosaics]),
        "large_dice_scaleseg": r(d_ss),
        "large_dice_scaleseg_mean": round(float(np.mean(d_ss)), 4),
        "large_dice_deepflash2": r(d_df),
        "large_dice_deepflash2_mean": round(float(np.mean(d_df)), 4),
        "large_dice_scaleseg_argmax": r(d_ss_am),
        "large_dice_scaleseg_argmax_mean": round(float(np.mean(d_ss_am)), 4),
        "large_label_agreement_dice": r(agree),
        "large_label_pixels_differing_fraction": r(ndiff),
        "large_mean_abs_diff_probability": r(dprob),
    }


def _spot(tmp, py, mos, client, args) -> dict:
    """Random-weight ConvNeXt-Tiny ensemble in deepflash2's shape on one mosaic: time only."""
    import numpy as np

    from scaleseg.io import write_image
    from scaleseg.models import Normalization

    tmp.mkdir(parents=True, exist_ok=True)
    ens, pths, norm_d, desc = _ensemble(tmp, [(mos["name"], mos["image"][0])], args.spot_models)
    # feature statistics, so scaleseg runs its feature-distance hook as with a trained ensemble
    add_feature_stats(ens, n_windows=8)
    norm = Normalization.from_dict(norm_d)
    src = tmp.parent / "mosaics" / f"{mos['name']}.zarr"  # a single image is an input too
    tif = tmp / f"{mos['name']}.tif"
    _df2_input(tif, mos["image"], norm)
    # warm-up image of both tools: a 256x256 centre crop (smaller than a tile: cheap)
    warm = np.ascontiguousarray(_centre(mos["image"], min(256, *mos["image"].shape[1:])))
    write_image(tmp / "warm" / "warm.zarr", warm, chunks=(512, 512), n_levels=1)
    _df2_input(tmp / "warm.tif", warm, norm)
    server = _Df2Server(py, tmp / "df2", pths, norm, args.threads, 1)
    try:
        from scaleseg.config import PredictConfig
        from scaleseg.inference import read_ensemble

        info = read_ensemble(ens)
        client.run(_warm, info, PredictConfig(), mos["image"].shape)
        state: dict = {}

        def ss_run(r):
            out = tmp / "ss" / f"r{r + 1}"
            secs, table = _ss_predict(src if r >= 0 else tmp / "warm", ens, out, client)
            state["ss"] = int(table["n_forward"].iloc[0]) if "n_forward" in table else None
            shutil.rmtree(out)
            return secs

        def df2_run(r):
            ans = server.predict("spot", [tif] if r >= 0 else [tmp / "warm.tif"])
            state["df"] = ans
            return ans["seconds"]

        t = _alternate("spot", ss_run, df2_run, args.spot_repeats)
    finally:
        server.close()
    f = {
        "large_spot": f"{mos['name']} ({'x'.join(map(str, mos['image'].shape[1:]))}); {desc}; "
        "time only (random weights)",
        "large_spot_settings": f"scaleseg PredictConfig() (tile 512 = the ensemble's, "
        f"{state.get('ss')} forward passes); deepflash2 Config() {state['df']['settings']} "
        f"({state['df']['windows']} windows x 4 flips x {args.spot_models} members)",
    }
    f.update(_timing_figures("large_spot", t, 1))
    return f


def run_large(args, py: Path) -> dict:
    from distributed import Client, LocalCluster

    from scaleseg.config import PredictConfig
    from scaleseg.inference import read_ensemble
    from scaleseg.models import Normalization

    run = Path(args.run)
    t_all = time.perf_counter()
    load0 = os.getloadavg()[0]
    figures: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.keep) if args.keep else Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        ens = _ensemble_subset(run / "ensemble", tmp / "ensemble", args.folds)
        info = read_ensemble(ens)
        norm = Normalization.from_dict(info.normalization)
        tile = int(info.tile_shape[0])
        mosaics = _mosaics(run, tmp, args.mosaics, args.mosaic_tile, norm)
        names = [m["name"] for m in mosaics]
        pths = _df2_folds(ens, tmp / "df2_models")
        tifs = [tmp / "df2_in" / f"{n}.tif" for n in names]
        figures.update(
            large_mosaics={m["name"]: m["parts"] for m in mosaics},
            large_mosaic_shape=list(mosaics[0]["image"].shape[1:]),
            large_ensemble=f"{ens} ({info.model['arch']} + {info.model['encoder']}, decoder "
            f"{info.model.get('decoder_channels')}, folds {[f.fold for f in info.folds]}, "
            f"tile {tile}); deepflash2: the same weights as fold files read by load_smp_model",
            large_normalization=f"per-mosaic percentiles {norm.percentiles} -> [0, 1] (clip at "
            f"0), then mean {norm.mean[0]:.5f} / std {norm.std[0]:.5f}; deepflash2 reads the "
            "unit-scale mosaic (float32 TIFF, scaleseg's Normalization.unit) and normalises it "
            "with the same mean / std",
            large_scaleseg_run=f"scaleseg.predict, PredictConfig() defaults, LocalCluster "
            f"{args.workers} workers x 1 thread, all mosaics in one call",
            large_deepflash2_run=f"EnsemblePredictor.get_ensemble_results over all mosaics, "
            f"torch threads {args.threads}",
            large_warmup=f"models loaded in both, then one untimed call of each on the {tile}x"
            f"{tile} check crop; {args.repeats} timed rounds scaleseg, deepflash2, ...",
        )
        with (
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                dashboard_address=":0",
                memory_limit="10GiB",
            ) as cluster,
            Client(cluster) as client,
        ):
            server = _Df2Server(py, tmp / "df2", pths, norm, args.threads, info.in_channels)
            try:
                figures["deepflash2_versions"] = ", ".join(
                    f"{k} {v}" for k, v in server.info["versions"].items()
                )
                figures["deepflash2_weight_loading"] = server.info["load_note"]
                config = PredictConfig()
                client.run(_warm, info, config, mosaics[0]["image"].shape)
                part = mosaics[0]["parts"][0]
                figures.update(_check_window(tmp, run, part, ens, norm, server, client, tile))
                state: dict = {}

                def ss_run(r):
                    out = tmp / "ss" / f"r{r + 1}"
                    # warm-up (r = -1): the check crop
                    src = tmp / "mosaics" if r >= 0 else tmp / "check" / "in"
                    secs, table = _ss_predict(src, ens, out, client)
                    state["ss_table"] = table
                    if r < args.repeats - 1:
                        shutil.rmtree(out)  # keep the last round's output for quality
                    return secs

                def df2_run(r):
                    save = tmp / "df2_out" if r == args.repeats - 1 else None
                    files = tifs if r >= 0 else [tmp / "check" / "check.tif"]
                    ans = server.predict("large", files, save=save)
                    state["df"] = ans
                    return ans["seconds"]

                t = _alternate("large", ss_run, df2_run, args.repeats)
            finally:
                server.close()
            table, ans = state["ss_table"], state["df"]
            n_fwd = int(table["n_forward"].iloc[0]) if "n_forward" in table else None
            figures["large_settings"] = (
                f"scaleseg: window {table['window'].iloc[0] if 'window' in table else tile} "
                f"(training tile {tile}), overlap {config.overlap}, tta {config.tta}, engine "
                f"{config.engine}, threshold {table['decision_threshold'].iloc[0]} (the "
                f"ensemble's; NaN = argmax), {n_fwd} forward passes per mosaic; deepflash2 "
                f"Config(): {ans['settings']}, {ans['windows']} windows x 4 flips x "
                f"{len(pths)} members per mosaic, argmax"
            )
            figures.update(_timing_figures("large", t, len(mosaics)))
            figures["large_U_scaleseg"] = [round(float(table.loc[n, "U"]), 5) for n in names]
            figures["large_U_deepflash2"] = [round(ans["U"][n], 5) for n in names]
            figures.update(_quality(tmp, mosaics, tmp / "ss" / f"r{args.repeats}", tmp / "df2_out"))
            if args.spot_repeats > 0:
                try:
                    figures.update(_spot(tmp / "spot", py, mosaics[0], client, args))
                except Exception as exc:  # the large-field figures above still count
                    figures["spot_error"] = f"{type(exc).__name__}: {exc}"
        figures["wall_s"] = round(time.perf_counter() - t_all, 1)
        figures["load_average_start_end"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    return figures


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
    large = ap.add_argument_group("--large: 2x2 mosaics of held-out images, default settings")
    large.add_argument("--large", action="store_true", help="run this case instead of --cases")
    large.add_argument("--run", help="output folder of scripts/verify_pv_hc (split.csv, ...)")
    large.add_argument("--mosaics", type=int, default=2)
    large.add_argument(
        "--mosaic-tile",
        type=int,
        default=0,
        help="build the mosaics from centre crops of this size (0 = whole images)",
    )
    large.add_argument("--repeats", type=int, default=3, help="timed rounds (after a warm-up)")
    large.add_argument("--folds", type=int, default=0, help="first N folds only (0 = all)")
    large.add_argument("--spot-models", type=int, default=4, help="ConvNeXt-Tiny members")
    large.add_argument(
        "--spot-repeats", type=int, default=1, help="timed rounds of the spot check (0 = skip)"
    )
    args = ap.parse_args()
    if args.large and (not args.run or args.mosaics < 1 or args.repeats < 1):
        ap.error("--large needs --run, --mosaics >= 1 and --repeats >= 1")

    py, why = df2_python()
    if py is None:
        emit("deepflash2", {"skipped": why}, args.json)
        return
    if args.large:
        emit("deepflash2", run_large(args, py), args.json)
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
