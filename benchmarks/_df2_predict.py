"""deepflash2 side of bench_deepflash2.py; runs INSIDE the deepflash2 environment.

    .venv-deepflash2/bin/python benchmarks/_df2_predict.py SPEC.json

SPEC.json (written by bench_deepflash2.py)::

    {"images": [png, ...], "models": [pth, ...], "out": dir, "threads": 2, "n_classes": 2,
     "in_channels": 1, "cases": [{"name", "tile", "border_padding_factor", "max_tile_shift"}]}

The fold files are in the layout ``deepflash2.models.save_smp_model`` writes. For every case an
``InferenceEnsemble`` is built exactly as ``EnsembleLearner.get_inference_ensemble`` does
(jit-scripted, saved as ``ensemble_*.pt``) and run over the images by ``EnsemblePredictor.
get_ensemble_results`` -- deepflash2's own prediction path. Results go to
``out/<case>/<image>_{pred,smx,std}.npy`` and ``out/result.json``. Nothing here patches
deepflash2, smp or torch.

Server mode (the ``--large`` case of bench_deepflash2.py: rounds alternating with scaleseg)::

    .venv-deepflash2/bin/python benchmarks/_df2_predict.py --serve SPEC.json

SPEC.json: ``{"models": [pth, ...], "threads", "n_classes", "in_channels", "channel_means",
"channel_stds"}``. The fold files are loaded once (``load_smp_model``: a fold file carries the smp
kwargs of its model, ``decoder_channels`` included, as ``save_smp_model`` writes them), then
requests are read from stdin, one JSON object per line, and answered on stdout, one JSON line each
(everything else the process prints goes to stderr):

* ``{"op": "predict", "name", "files", "settings", "save"}``: on first use of ``name``, an
  ``InferenceEnsemble`` exactly as ``EnsembleLearner.get_inference_ensemble`` builds it from a
  default ``deepflash2.config.Config()`` (tile shape, ``inference_kwargs``), with ``settings``
  (``tile``, ``border_padding_factor``, ``max_tile_shift``) overriding those defaults, jit-scripted,
  saved and loaded by an ``EnsemblePredictor``; then one timed
  ``get_ensemble_results(file_list=files)`` (so one predictor, warmed up on a small image, then
  predicts the mosaics). With ``save`` (a folder) ``<stem>_{pred,smx}.npy`` are written
  there afterwards (not timed). Answer: ``{"seconds", "windows", "input_dtype", "U"}``.
* ``{"op": "quit"}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path


def _versions() -> dict:
    import importlib.metadata as md

    names = ("deepflash2", "fastai", "torch", "segmentation_models_pytorch", "timm", "zarr")
    return {n: md.version(n) for n in names}


def _load_models(paths: list[str]) -> tuple[list, dict, str]:
    """Fold models from deepflash2-layout files, read by deepflash2's own loader
    (``deepflash2.models.load_smp_model``, strict state-dict load)."""
    from deepflash2.models import load_smp_model

    models, stats = [], None
    for p in paths:
        model, stats = load_smp_model(p)
        models.append(model.eval())
    return models, stats, "deepflash2.models.load_smp_model loaded scaleseg's fold files (strict)"


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    threads = int(spec.get("threads", 2))
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    from deepflash2.inference import InferenceEnsemble
    from deepflash2.learner import EnsemblePredictor

    out = Path(spec["out"])
    t0 = time.perf_counter()
    models, stats, load_note = _load_models(spec["models"])
    load_s = time.perf_counter() - t0
    files = [Path(p) for p in spec["images"]]
    result = {
        "versions": _versions(),
        "torch_threads": torch.get_num_threads(),
        "load_note": load_note,
        "load_s": round(load_s, 2),
        "cases": {},
    }
    for case in spec["cases"]:
        cdir = out / case["name"]
        cdir.mkdir(parents=True, exist_ok=True)
        tile = int(case["tile"])
        t1 = time.perf_counter()
        # as EnsembleLearner.get_inference_ensemble (Config inference_kwargs, scale 1)
        ens = InferenceEnsemble(
            models,
            num_classes=int(spec["n_classes"]),
            in_channels=int(spec["in_channels"]),
            channel_means=np.asarray(stats["channel_means"]).tolist(),
            channel_stds=np.asarray(stats["channel_stds"]).tolist(),
            tile_shape=(tile, tile),
            use_tta=True,
            max_tile_shift=float(case["max_tile_shift"]),
            use_gaussian=True,
            scale=1.0,
            gaussian_kernel_sigma_scale=0.125,
            border_padding_factor=float(case["border_padding_factor"]),
        )
        pt = cdir / "ensemble_Unet_tu-convnext-tiny_2classes.pt"
        torch.jit.script(ens).save(str(pt))
        pred = EnsemblePredictor(files=files, ensemble_path=pt)
        build_s = time.perf_counter() - t1
        # warm-up: the traced members' first calls run the JIT profiling passes
        with torch.inference_mode():
            x = torch.zeros(1, int(spec["in_channels"]), tile, tile)
            for m in pred.inference_ensemble.models.children():
                m(x)
                m(x)
        n_windows = len(
            pred.inference_ensemble.tiler.get_slices_and_centers(
                list(np.asarray(pred.ds.read_img(files[0])).shape[:2])
            )[2]
        )
        t2 = time.perf_counter()
        g_pred, g_smx, g_std = pred.get_ensemble_results()
        pred_s = time.perf_counter() - t2
        per_image = {}
        for f in files:
            p, s, u = (np.asarray(g[f.name][:]) for g in (g_pred, g_smx, g_std))
            np.save(cdir / f"{f.stem}_pred.npy", p)
            np.save(cdir / f"{f.stem}_smx.npy", s)
            np.save(cdir / f"{f.stem}_std.npy", u)
            row = pred.df_ens[pred.df_ens.file == f.name].iloc[0]
            per_image[f.stem] = {"U": float(row.uncertainty_score)}
        result["cases"][case["name"]] = {
            "build_s": round(build_s, 2),
            "predict_s": round(pred_s, 3),
            "seconds_per_image": round(pred_s / len(files), 3),
            "windows_per_image": int(n_windows),
            "images": per_image,
        }
        print(f"[df2] {case['name']}: {pred_s:.1f} s for {len(files)} images", flush=True)
    (out / "result.json").write_text(json.dumps(result, indent=2))


def _predictor(models: list, spec: dict, req: dict, workdir: Path):
    """An EnsemblePredictor over ``req["files"]`` whose InferenceEnsemble is built as
    ``EnsembleLearner.get_inference_ensemble`` does, from deepflash2's default Config."""
    import numpy as np
    import torch
    from deepflash2.config import Config
    from deepflash2.inference import InferenceEnsemble
    from deepflash2.learner import EnsemblePredictor

    cfg = Config()
    kwargs = dict(cfg.inference_kwargs)
    tile = int(cfg.tile_shape)
    settings = req.get("settings") or {}
    if settings.get("tile") is not None:
        tile = int(settings["tile"])
    for key in ("border_padding_factor", "max_tile_shift"):
        if settings.get(key) is not None:
            kwargs[key] = float(settings[key])
    ens = InferenceEnsemble(
        models,
        num_classes=int(spec["n_classes"]),
        in_channels=int(spec["in_channels"]),
        channel_means=np.asarray(spec["channel_means"], dtype=np.float64).tolist(),
        channel_stds=np.asarray(spec["channel_stds"], dtype=np.float64).tolist(),
        tile_shape=(tile, tile),
        **kwargs,
    )
    workdir.mkdir(parents=True, exist_ok=True)
    pt = workdir / f"ensemble_{req['name']}.pt"
    torch.jit.script(ens).save(str(pt))
    pred = EnsemblePredictor(files=[Path(f) for f in req["files"]], ensemble_path=pt)
    used = {"tile": tile, **{k: kwargs[k] for k in sorted(kwargs)}}
    return pred, used


def serve() -> None:
    """Answer predict requests from stdin (see the module notes)."""
    spec = json.loads(Path(sys.argv[2]).read_text())
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # deepflash2's own output (progress bars, notes) goes to stderr
    import numpy as np
    import torch

    torch.set_num_threads(int(spec.get("threads", 2)))
    warnings.simplefilter("ignore")
    workdir = Path(spec.get("workdir", "."))
    t0 = time.perf_counter()
    models, _, load_note = _load_models(spec["models"])
    ready = {
        "ready": True,
        "versions": _versions(),
        "torch_threads": torch.get_num_threads(),
        "load_note": load_note,
        "load_s": round(time.perf_counter() - t0, 2),
    }
    reply.write(json.dumps(ready) + "\n")
    predictors: dict = {}
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("op") == "quit":
            break
        if req["name"] not in predictors:
            predictors[req["name"]] = _predictor(models, spec, req, workdir)
        pred, used = predictors[req["name"]]
        files = [Path(f) for f in req["files"]]
        img = np.asarray(pred.ds.read_img(files[0]))
        n_windows = len(
            pred.inference_ensemble.tiler.get_slices_and_centers(list(img.shape[:2]))[2]
        )
        t1 = time.perf_counter()
        g_pred, g_smx, _ = pred.get_ensemble_results(file_list=files)
        secs = time.perf_counter() - t1
        if req.get("save"):
            dest = Path(req["save"])
            dest.mkdir(parents=True, exist_ok=True)
            for f in files:
                np.save(dest / f"{f.stem}_pred.npy", np.asarray(g_pred[f.name][:]))
                np.save(dest / f"{f.stem}_smx.npy", np.asarray(g_smx[f.name][:]))
        u = {Path(r.file).stem: float(r.uncertainty_score) for r in pred.df_ens.itertuples()}
        answer = {
            "seconds": round(secs, 4),
            "windows": int(n_windows),
            "input_dtype": str(img.dtype),
            "settings": used,
            "U": u,
        }
        reply.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve()
    else:
        main()
