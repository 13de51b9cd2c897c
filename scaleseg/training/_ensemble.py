"""Ensemble training: k-fold splits, one Dask task per fold, the ensemble directory.

Layout written (DESIGN.md, "Ensemble artifact")::

    ENSEMBLE/
      ensemble.json         architecture, encoder, classes, channels, normalisation, tile shape,
                            folds with their image splits, validation scores and checksums, versions
      MODEL_CARD.md         training data, hyperparameters, versions, per-fold scores, date
      fold_<k>/             weights.safetensors, history.csv, history.png, fold.json
      export/               TorchScript (and ONNX) exports on request

Each fold is written atomically; re-running skips finished folds.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._features import distance_threshold
from ._fit import FOLD_FILE, FoldSpec, fit_fold, fold_dir_name

__all__ = ["kfold_splits", "train_ensemble", "ENSEMBLE_FILE", "write_model_card"]

ENSEMBLE_FILE = "ensemble.json"


def kfold_splits(
    n_images: int, n_folds: int, *, seed: int = 0
) -> list[tuple[list[int], list[int]]]:
    """Deterministic k-fold split of image indices: ``[(train_idx, valid_idx), ...]``.

    Images are shuffled with ``seed`` and dealt into ``n_folds`` validation groups of
    near-equal size; every image is validated exactly once.
    """
    if n_folds < 2:
        raise ValueError(f"need at least 2 folds, got {n_folds}")
    if n_images < n_folds:
        raise ValueError(f"{n_images} training images cannot make {n_folds} folds")
    order = np.random.default_rng(seed).permutation(n_images)
    groups = np.array_split(order, n_folds)
    splits = []
    for k in range(n_folds):
        valid = sorted(int(i) for i in groups[k])
        train = sorted(int(i) for j, g in enumerate(groups) if j != k for i in g)
        splits.append((train, valid))
    return splits


def _fold_specs(items: list, n_folds: int, n_models: int, seed: int) -> list[FoldSpec]:
    splits = kfold_splits(len(items), n_folds, seed=seed)
    return [
        FoldSpec(k, [items[i] for i in tr], [items[i] for i in va], seed=seed * 1000 + k)
        for k, (tr, va) in enumerate(splits[:n_models])
    ]


def train_ensemble(
    items: list,
    out_dir: str | Path,
    *,
    model_spec: dict[str, Any],
    train_cfg: dict[str, Any],
    client: Any = None,
    torch_threads: int | None = 1,
    progress: Callable[[int], Any] | None = None,
    data_description: str = "",
) -> dict[str, Any]:
    """Train ``n_models`` folds (one Dask task each when ``client`` is given) and write the
    ensemble directory.

    Folds already finished in ``out_dir`` are kept (resume). With a client whose workers
    advertise a ``GPU`` resource, each fold task requests ``GPU=1``.

    Returns
    -------
    dict
        The content of ``ensemble.json``.
    """
    from ..cluster import client_has_gpus
    from ..runrecord import package_versions
    from ._data import normalization_from_items

    out_dir = Path(out_dir)
    n_folds = int(train_cfg["n_folds"])
    n_models = int(train_cfg.get("n_models") or n_folds)
    if n_models > n_folds:
        raise ValueError(f"n_models ({n_models}) cannot exceed n_folds ({n_folds})")
    seed = int(train_cfg["seed"])
    specs = _fold_specs(items, n_folds, n_models, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    norm_path = out_dir / "normalization.json"
    if norm_path.is_file():  # resume: keep the statistics the finished folds were trained with
        normalization = json.loads(norm_path.read_text())
    else:
        normalization = normalization_from_items(
            items, seed=seed, intensity=str(train_cfg.get("intensity", "dtype"))
        ).to_dict()
        norm_path.write_text(json.dumps(normalization, indent=2) + "\n")

    t0 = time.perf_counter()
    kwargs = dict(
        model_spec=model_spec,
        train_cfg=train_cfg,
        normalization=normalization,
        torch_threads=torch_threads,
    )
    results: list[dict[str, Any]] = []
    if client is not None:
        from distributed import as_completed

        from ..cluster import watch_epochs

        gpus = client_has_gpus(client)
        resources = {"GPU": 1} if gpus else None
        todo = [s for s in specs if s.fold not in set(finished_folds(out_dir))]
        threads = fold_threads(
            len(todo), _workers_per_host(client), torch_threads=torch_threads, gpus=gpus
        )
        by_fold = dict(zip((s.fold for s in todo), threads))
        futures = [
            client.submit(
                fit_fold,
                spec,
                str(out_dir),
                **{**kwargs, "torch_threads": by_fold.get(spec.fold, torch_threads)},
                show_progress=False,
                resources=resources,
                pure=False,
                key=f"train-{fold_dir_name(spec.fold)}-{out_dir.name}-{time.time_ns()}",
                retries=1,
            )
            for spec in specs
        ]
        with watch_epochs(client, str(out_dir)):
            for fut in as_completed(futures):
                results.append(fut.result())
                if progress:
                    progress(1)
    else:
        for spec in specs:
            results.append(fit_fold(spec, str(out_dir), **kwargs))
            if progress:
                progress(1)
    results.sort(key=lambda r: r["fold"])
    for r in results:
        r.pop("skipped", None)
    features = _fold_feature_stats(
        results, specs, out_dir, model_spec, train_cfg, normalization, client, torch_threads
    )
    manifest = {
        "format": "scaleseg-ensemble/1",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": model_spec,
        "architecture": model_spec["arch"],
        "encoder": model_spec["encoder"],
        "in_channels": model_spec["in_channels"],
        "n_classes": model_spec["n_classes"],
        "n_extra": model_spec.get("n_extra", 0),
        "classes": train_cfg.get("class_names")
        or [f"class_{k}" for k in range(model_spec["n_classes"])],
        "normalization": normalization,
        "tile_shape": list(train_cfg["tile_shape"]),
        "scale": float(train_cfg.get("scale", 1.0)),
        "ood_threshold": distance_threshold(list(features.values())),
        "train": {k: v for k, v in train_cfg.items() if k != "class_names"},
        "folds": [
            {
                "fold": r["fold"],
                "path": f"{fold_dir_name(r['fold'])}/{r['weights']}",
                "sha256": r["sha256"],
                "valid_dice": r["valid_dice"],
                "best_epoch": r["best_epoch"],
                "train_images": r["train_images"],
                "valid_images": r["valid_images"],
                "seconds": r["seconds"],
                **({"features": features[r["fold"]]} if r["fold"] in features else {}),
            }
            for r in results
        ],
        "versions": package_versions(),
        "seconds": round(time.perf_counter() - t0, 2),
        "data": data_description,
    }
    (out_dir / ENSEMBLE_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    write_model_card(manifest, out_dir / "MODEL_CARD.md")
    return manifest


def fold_threads(
    n_folds: int, workers_per_host: list[int], *, torch_threads: int | None, gpus: bool = False
) -> list[int | None]:
    """Torch threads of each fold task, in submission order (pure).

    Folds run one per worker, in waves. When the last wave holds fewer folds than there are
    workers, the idle workers' cores go to the folds of that wave: each of them gets
    ``torch_threads * (workers per host // folds in the wave)`` threads (capped by the
    largest host, since threads cannot cross machines). GPU folds and ``torch_threads=None``
    (leave torch alone) are unchanged.

    Parameters
    ----------
    n_folds : int
        Folds still to train.
    workers_per_host : list of int
        Worker processes on each host of the cluster.
    """
    base = [torch_threads] * n_folds
    n_workers = sum(workers_per_host)
    if gpus or not torch_threads or n_workers < 2 or n_folds == 0:
        return base
    tail = n_folds % n_workers or (n_folds if n_folds < n_workers else 0)
    if not tail:
        return base
    widen = max(1, min(max(workers_per_host), n_workers // tail))
    return base[: n_folds - tail] + [torch_threads * widen] * tail


def _workers_per_host(client) -> list[int]:
    from collections import Counter

    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return list(Counter(w.get("host", addr) for addr, w in workers.items()).values())


def _fold_feature_stats(
    results, specs, out_dir, model_spec, train_cfg, normalization, client, torch_threads
) -> dict[int, dict[str, Any]]:
    """Encoder-feature statistics per fold (one task per fold on a client; folds that have
    them keep them). Zoomed ensembles (scale != 1) get none: predict refuses them anyway."""
    from ..cluster import client_has_gpus
    from ._features import ensure_fold_features

    if float(train_cfg.get("scale", 1.0)) != 1.0:
        return {}
    train_items = {s.fold: s.train for s in specs}
    valid_items = {s.fold: s.valid for s in specs}
    kw = dict(
        model_spec=model_spec,
        normalization=normalization,
        tile_shape=tuple(train_cfg["tile_shape"]),
        torch_threads=torch_threads,
    )
    args = [(str(out_dir), r["fold"], r["weights"], train_items[r["fold"]]) for r in results]
    if client is None:
        entries = {
            a[1]: ensure_fold_features(*a, **kw, valid_items=valid_items[a[1]]) for a in args
        }
    else:
        resources = {"GPU": 1} if client_has_gpus(client) else None
        futures = [
            client.submit(
                ensure_fold_features,
                *a,
                **kw,
                valid_items=valid_items[a[1]],
                resources=resources,
                pure=False,
                key=f"features-{fold_dir_name(a[1])}-{out_dir.name}-{time.time_ns()}",
                retries=1,
            )
            for a in args
        ]
        entries = {a[1]: f.result() for a, f in zip(args, futures)}
    missing = sorted(k for k, e in entries.items() if e is None)
    if missing:  # all folds or none: the score averages over the members
        logging.getLogger("scaleseg.train").warning(
            "no encoder-feature statistics (fold(s) %s have fewer than 2 training windows): "
            "predict will report ood_distance as NaN",
            ", ".join(map(str, missing)),
        )
        return {}
    return entries


def write_model_card(manifest: dict[str, Any], path: Path) -> Path:
    """A human-readable MODEL_CARD.md from an ensemble manifest."""
    t = manifest["train"]
    dice = [f["valid_dice"] for f in manifest["folds"]]
    n_imgs = len({i for f in manifest["folds"] for i in f["train_images"] + f["valid_images"]})
    lines = [
        f"# Model card: scaleseg ensemble ({manifest['architecture']} + {manifest['encoder']})",
        "",
        f"Created {manifest['created']} with scaleseg {manifest['versions'].get('scaleseg')}.",
        "",
        "## Intended use",
        "Semantic segmentation of images like the training data below, with the deepflash2",
        "method: ensemble mixture, uncertainty maps and image scores U for quality assurance.",
        "Images unlike the training data (other stains, structures, modalities) should be",
        "flagged by their uncertainty / OOD scores and reviewed.",
        "",
        "## Training data",
        f"{n_imgs} images; {manifest['in_channels']} input channel(s); "
        f"{manifest['n_classes']} classes ({', '.join(manifest['classes'])}).",
        manifest.get("data") or "",
        "",
        "Normalisation (per channel): mean "
        f"{[round(m, 4) for m in manifest['normalization']['mean']]}, std "
        f"{[round(s, 4) for s in manifest['normalization']['std']]}.",
        "",
        "## Hyperparameters",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    for key in (
        "arch",
        "encoder",
        "encoder_weights",
        "loss",
        "lr",
        "weight_decay",
        "batch_size",
        "tile_shape",
        "frozen_epochs",
        "epochs",
        "n_folds",
        "n_models",
        "tiles_per_epoch",
        "scale",
        "augmentations",
        "intensity",
        "ema",
        "mixed_precision",
        "early_stopping_patience",
        "seed",
    ):
        lines.append(f"| {key} | {t.get(key, manifest['model'].get(key))} |")
    lines += [
        "",
        "## Validation (k-fold; each fold validated on images it did not train on)",
        "",
        "| fold | valid Dice | best epoch | validation images | seconds |",
        "|---|---|---|---|---|",
    ]
    for f in manifest["folds"]:
        lines.append(
            f"| {f['fold']} | {f['valid_dice']:.4f} | {f['best_epoch']} | "
            f"{', '.join(f['valid_images'])} | {f['seconds']} |"
        )
    lines += [
        "",
        f"Mean validation Dice {np.mean(dice):.4f} (range {min(dice):.4f}-{max(dice):.4f}).",
        "",
        *_threshold_lines(manifest.get("ood_threshold")),
        "## Library versions",
        "",
        *[f"- {k}: {v}" for k, v in manifest["versions"].items() if v],
        "",
        f"Weights: one safetensors file per fold, SHA-256 checksums in `{ENSEMBLE_FILE}`.",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


def _threshold_lines(thr: dict[str, Any] | None) -> list[str]:
    if not thr:
        return []
    return [
        "## Out-of-distribution review threshold",
        "",
        f"`qa` flags images whose feature distance `ood_distance` reaches {thr['value']:.4g}: "
        f"the {thr['rule']}; {thr['n_images']} held-out images, median {thr['median']:.4g}.",
        "",
    ]


def finished_folds(out_dir: str | Path) -> list[int]:
    """Folds of ``out_dir`` that finished (their ``fold.json`` exists)."""
    out_dir = Path(out_dir)
    return sorted(int(p.parent.name.split("_")[1]) for p in out_dir.glob(f"fold_*/{FOLD_FILE}"))


__all__ += ["finished_folds"]
