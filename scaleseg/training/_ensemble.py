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

import contextlib
import datetime as _dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..files import atomic_write_json, atomic_write_text
from ..models._manifest import ENSEMBLE_FILE, EnsembleManifest, FoldEntry
from ..models._normalize import Normalization
from ._features import distance_threshold
from ._fit import FOLD_FILE, FoldSpec, fit_fold, fold_dir_name
from ._reach import saturated
from ._threshold import decision_threshold

if TYPE_CHECKING:
    from ..config import TrainConfig
    from ..models import ModelSpec

__all__ = [
    "kfold_splits",
    "train_ensemble",
    "ENSEMBLE_FILE",
    "saturation_warnings",
    "write_model_card",
]


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
    model: ModelSpec,
    config: TrainConfig,
    client: Any = None,
    torch_threads: int | None = 1,
    progress: Callable[[int], Any] | None = None,
    data_description: str = "",
    spec: dict[str, Any] | None = None,
) -> EnsembleManifest:
    """Train ``n_models`` folds (one Dask task each when ``client`` is given) and write the
    ensemble directory.

    Folds already finished in ``out_dir`` are kept (resume). With a client whose workers
    advertise a ``GPU`` resource, each fold task requests ``GPU=1``.

    Parameters
    ----------
    items : list of TrainItem
    out_dir : path
    model : ModelSpec
        Every member's architecture (``in_channels`` must match the images).
    config : TrainConfig
    client : distributed.Client, optional
    torch_threads : int, optional
        Torch threads per fold task (a fold running alone may get more, see
        :func:`fold_threads`).
    progress : callable, optional
        Called with 1 per finished fold.
    data_description : str
        One line for the model card.
    spec : dict, optional
        The run spec, stored in the manifest.

    Returns
    -------
    EnsembleManifest
        What was written to ``ensemble.json``.
    """
    from ..executor import map_units
    from ..models import resolve_encoder_weights
    from ..runrecord import package_versions
    from ._data import normalization_from_items

    out_dir = Path(out_dir)
    n_folds = config.n_folds
    n_models = config.n_models or n_folds
    if n_models > n_folds:
        raise ValueError(f"n_models ({n_models}) cannot exceed n_folds ({n_folds})")
    specs = _fold_specs(items, n_folds, n_models, config.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    norm_path = out_dir / "normalization.json"
    if norm_path.is_file():  # resume: keep the statistics the finished folds were trained with
        normalization = Normalization.from_dict(json.loads(norm_path.read_text()))
    else:
        normalization = normalization_from_items(
            items, seed=config.seed, intensity=config.intensity
        )
        atomic_write_json(norm_path, normalization.to_dict())

    t0 = time.perf_counter()
    done = set(finished_folds(out_dir))
    todo = [s for s in specs if s.fold not in done]
    threads = [torch_threads] * len(todo)
    watch = contextlib.nullcontext()
    if client is not None:
        from ..cluster import client_has_gpus, watch_epochs

        threads = fold_threads(
            len(todo), _workers_per_host(client), torch_threads=torch_threads,
            gpus=client_has_gpus(client),
        )  # fmt: skip
        watch = watch_epochs(client, str(out_dir))
    units = [FoldTask(s, t) for s, t in zip(todo, threads)]
    if progress and done:
        progress(len([s for s in specs if s.fold in done]))
    with watch:
        res = map_units(
            _fit_task,
            units,
            stage="train",
            names=[fold_dir_name(u.spec.fold) for u in units],
            client=client,
            resources="gpu",
            retries=1,
            on_error="stop",
            progress=progress,
            out_dir=str(out_dir),
            model=model,
            config=config,
            normalization=normalization,
            show_progress=client is None,
        )
    results = [json.loads((out_dir / fold_dir_name(s.fold) / FOLD_FILE).read_text()) for s in specs]
    del res
    features = _fold_feature_stats(results, specs, out_dir, model, config, normalization, client,
                                   torch_threads)  # fmt: skip
    requested, _ = resolve_encoder_weights(model, warn=False)
    used = [r.get("encoder_weights") for r in results]
    manifest = EnsembleManifest(
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        model=model.to_dict(),
        architecture=model.arch,
        encoder=model.encoder,
        in_channels=model.in_channels,
        n_classes=model.n_classes,
        n_extra=model.n_extra,
        classes=[f"class_{k}" for k in range(model.n_classes)],
        normalization=normalization.to_dict(),
        tile_shape=tuple(config.tile_shape),
        scale=config.scale,
        ood_threshold=distance_threshold(list(features.values())),
        decision_threshold=decision_threshold(results) if config.threshold == "calibrate" else None,
        encoder_weights=used[0]
        if used and all(u == used[0] for u in used) and used[0]
        else requested,
        train=config.model_dump(mode="json"),
        folds=[
            FoldEntry(
                fold=r["fold"],
                path=f"{fold_dir_name(r['fold'])}/{r['weights']}",
                sha256=r["sha256"],
                valid_dice=r["valid_dice"],
                best_epoch=r["best_epoch"],
                train_images=r["train_images"],
                valid_images=r["valid_images"],
                seconds=r["seconds"],
                features=features.get(r["fold"]),
                encoder_weights=r.get("encoder_weights"),
                class_reach=(r.get("class_reach") or {}).get("values"),
            )
            for r in results
        ],
        versions=package_versions(),
        seconds=round(time.perf_counter() - t0, 2),
        data=data_description,
        spec=spec,
    )
    manifest.write(out_dir)
    write_model_card(manifest, out_dir / "MODEL_CARD.md")
    return manifest


@dataclass(frozen=True)
class FoldTask:
    """The work unit of one fold: what it trains on and its torch threads."""

    spec: FoldSpec
    torch_threads: int | None


def _fit_task(unit: FoldTask, **kwargs: Any) -> dict[str, Any]:
    return fit_fold(unit.spec, torch_threads=unit.torch_threads, **kwargs)


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
    results, specs, out_dir, model, config, normalization, client, torch_threads
) -> dict[int, dict[str, Any]]:
    """Encoder-feature statistics per fold (one task per fold on a client; folds that have
    them keep them). Zoomed ensembles (scale != 1) get none: predict refuses them anyway."""
    from ..executor import map_units
    from ._features import FeatureUnit, ensure_fold_features

    if config.scale != 1.0:
        return {}
    by_fold = {s.fold: s for s in specs}
    units = [
        FeatureUnit(
            str(out_dir),
            r["fold"],
            r["weights"],
            tuple(by_fold[r["fold"]].train),
            tuple(by_fold[r["fold"]].valid),
        )  # fmt: skip
        for r in results
    ]
    res = map_units(
        ensure_fold_features,
        units,
        stage="features",
        names=[fold_dir_name(u.fold) for u in units],
        client=client,
        resources="gpu",
        retries=1,
        model=model,
        normalization=normalization,
        tile_shape=tuple(config.tile_shape),
        torch_threads=torch_threads,
    )
    entries = {u.fold: e for u, e in zip(units, res.results)}
    missing = sorted(k for k, e in entries.items() if e is None)
    if missing:  # all folds or none: the score averages over the members
        logging.getLogger("scaleseg.train").warning(
            "no encoder-feature statistics (fold(s) %s have fewer than 2 training windows): "
            "predict will report ood_distance as NaN",
            ", ".join(map(str, missing)),
        )
        return {}
    return entries


def write_model_card(manifest: EnsembleManifest, path: Path) -> Path:
    """A human-readable MODEL_CARD.md from an ensemble manifest."""
    t = manifest.train
    dice = [f.valid_dice for f in manifest.folds]
    n_imgs = len({i for f in manifest.folds for i in f.train_images + f.valid_images})
    weights = manifest.encoder_weights
    lines = [
        f"# Model card: scaleseg ensemble ({manifest.architecture} + {manifest.encoder})",
        "",
        f"Created {manifest.created} with scaleseg {manifest.versions.get('scaleseg')}.",
        "",
        "## Intended use",
        "Semantic segmentation of images like the training data below, with the deepflash2",
        "method: ensemble mixture, uncertainty maps and image scores U for quality assurance.",
        "Images unlike the training data (other stains, structures, modalities) should be",
        "flagged by their uncertainty / OOD scores and reviewed.",
        "",
        "## Training data",
        f"{n_imgs} images; {manifest.in_channels} input channel(s); "
        f"{manifest.n_classes} classes ({', '.join(manifest.classes)}).",
        manifest.data,
        "",
        "Normalisation (per channel): mean "
        f"{[round(m, 4) for m in manifest.normalization['mean']]}, std "
        f"{[round(s, 4) for s in manifest.normalization['std']]}.",
        "",
        "## Encoder weights",
        "",
        f"Loaded: {weights.describe() if weights else 'not recorded'}.",
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
        "threshold",
        "mixed_precision",
        "early_stopping_patience",
        "seed",
    ):
        value = t.get(key, manifest.model.get(key))
        if key == "encoder_weights":
            value = f"{value} (requested)"
        lines.append(f"| {key} | {value} |")
    lines += [
        "",
        "## Validation (k-fold; each fold validated on images it did not train on)",
        "",
        "| fold | valid Dice | best epoch | class reach | validation images | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for f in manifest.folds:
        reach = ", ".join(f"{r:.2f}" for r in f.class_reach) if f.class_reach else "-"
        lines.append(
            f"| {f.fold} | {f.valid_dice:.4f} | {f.best_epoch} | {reach} | "
            f"{', '.join(f.valid_images)} | {f.seconds} |"
        )
    lines += [
        "",
        f"Mean validation Dice {np.mean(dice):.4f} (range {min(dice):.4f}-{max(dice):.4f}).",
        "Class reach: the 99th percentile of a class's probability on the fold's own "
        "validation pixels of that class.",
        "",
        *[line for w in saturation_warnings(manifest) for line in (f"**Warning**: {w}", "")],
        *_decision_lines(manifest.decision_threshold),
        *_threshold_lines(manifest.ood_threshold, manifest.has_cell_novelty),
        "## Library versions",
        "",
        *[f"- {k}: {v}" for k, v in manifest.versions.items() if v],
        "",
        f"Weights: one safetensors file per fold, SHA-256 checksums in `{ENSEMBLE_FILE}`.",
        "",
    ]
    return atomic_write_text(path, "\n".join(lines))


def saturation_warnings(manifest: EnsembleManifest) -> list[str]:
    """One sentence per member whose probability for a class never becomes confident on its own
    validation pixels (:data:`~scaleseg.training._reach.SATURATED_BELOW`)."""
    out = []
    for f in manifest.folds:
        for k in saturated(f.class_reach):
            out.append(
                f"fold {f.fold} never predicts {manifest.classes[k]} with confidence: its "
                f"probability on its own validation pixels of that class reaches only "
                f"{f.class_reach[k - 1]:.2f} (99th percentile). Such a member reads as "
                "maximally uncertain there, which inflates u and can flatten the ranking of "
                "U; retrain with another --seed (README, 'Capped members')."
            )
    return out


def _decision_lines(thr) -> list[str]:
    if thr is None:
        return []
    return [
        "## Decision threshold",
        "",
        f"A pixel is foreground when its ensemble probability is at least {thr.value:.2f} "
        f"({thr.rule}: Dice {max(thr.dice):.4f}, against {thr.dice_argmax:.4f} at 0.5).",
        "",
    ]


def _threshold_lines(thr, novelty: bool) -> list[str]:
    if thr is None:
        return []
    lines = [
        "## Out-of-distribution review threshold",
        "",
        f"`qa` flags images whose feature distance `ood_distance` reaches {thr.value:.4g}: "
        f"the {thr.rule}; {thr.n_images} held-out images, median {thr.median:.4g}.",
        "",
    ]
    if not novelty:
        return lines
    return lines + [
        "`U_novel` (a column of predict's table, `qa --score U_novel`) raises u on "
        "foreground pixels to the share of members and flips that find the pixel's encoder "
        "cell beyond every cell of the fold's held-out images (1 where all do): confident "
        "errors on structures the training never showed count as uncertain.",
        "",
    ]


def finished_folds(out_dir: str | Path) -> list[int]:
    """Folds of ``out_dir`` that finished (their ``fold.json`` exists)."""
    out_dir = Path(out_dir)
    return sorted(int(p.parent.name.split("_")[1]) for p in out_dir.glob(f"fold_*/{FOLD_FILE}"))


__all__ += ["finished_folds"]
