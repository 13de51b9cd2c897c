"""Training of one ensemble member (one fold): the deepflash2 fine-tune policy.

One one-cycle epoch with the encoder frozen, then ``epochs`` unfrozen epochs in a single
one-cycle schedule (fastai's ``fine_tune``), AdamW, validation Dice every epoch, the best
checkpoint kept, ``history.csv`` and a loss / Dice curve per fold, optional early stopping.
With ``ema`` an exponential moving average of the weights (and batch-norm statistics) is what
is validated and saved: on small CPU batches it removes most of the epoch-to-epoch swing of
the validation Dice.

The fold's folder is written under a temporary name (``.fold_<k>.partial-<id>``, where
``history.csv`` and ``history.png`` are rewritten after every epoch, so training can be
watched) and renamed when complete. Every epoch is also reported as one line: logged on the
``scaleseg.train`` logger in-process, or published as a worker event (topic
``scaleseg-epoch``) that the driver logs (:func:`scaleseg.cluster.watch_epochs`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..executor import current_worker
from ..files import atomic_write_json

if TYPE_CHECKING:
    from ..config import TrainConfig
    from ..models import ModelSpec, Normalization

__all__ = [
    "FoldSpec",
    "WeightAverage",
    "fit_fold",
    "FOLD_FILE",
    "WEIGHTS_FILE",
    "fold_dir_name",
    "format_epoch",
]

FOLD_FILE = "fold.json"
WEIGHTS_FILE = "weights.safetensors"


def fold_dir_name(fold: int) -> str:
    return f"fold_{fold}"


@dataclass(frozen=True)
class FoldSpec:
    """What one fold trains on.

    Attributes
    ----------
    fold : int
        Fold index (0-based).
    train, valid : list of TrainItem
        Training and validation images of this fold.
    seed : int
        Seed of this fold (model init, sampling, augmentation).
    """

    fold: int
    train: list = field(default_factory=list)
    valid: list = field(default_factory=list)
    seed: int = 0


def _dice_from_counts(inter: np.ndarray, total: np.ndarray) -> float:
    """Macro Dice over foreground classes from per-class intersections and size sums."""
    scores = np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)
    return float(scores.mean()) if scores.size else float("nan")


def _improves(dice: float, loss: float, best: dict[str, Any]) -> bool:
    """Whether an epoch's validation result beats the best so far: a higher Dice, or the same
    Dice with a lower loss (a fold whose Dice is still 0 keeps its latest, better-fitted
    weights instead of the first epoch's)."""
    if dice != best["valid_dice"]:
        return dice > best["valid_dice"]
    return loss < best["valid_loss"]


def _evaluate(
    model, tiles, loss_fn, n_classes: int, device, batch_size: int
) -> tuple[float, float]:
    import torch

    model.eval()
    inter = np.zeros(n_classes - 1)
    total = np.zeros(n_classes - 1)
    losses = []
    with torch.inference_mode():
        for b0 in range(0, len(tiles), batch_size):
            batch = tiles[b0 : b0 + batch_size]
            x = torch.stack([t[0] for t in batch]).to(device)
            y = torch.stack([t[1] for t in batch]).to(device)
            logits = model(x).float()
            losses.append(float(loss_fn.segmentation(logits, y)) * len(batch))
            pred = logits[:, :n_classes].argmax(1)
            known = y >= 0  # padded pixels carry an ignore index
            for k in range(1, n_classes):
                p, r = (pred == k) & known, y == k
                inter[k - 1] += float((p & r).sum())
                total[k - 1] += float(p.sum() + r.sum())
    return sum(losses) / max(1, len(tiles)), _dice_from_counts(inter, total)


def _validation_pass(
    model, tiles, device, batch_size: int, n_classes: int
) -> tuple[dict[str, list[float]] | None, dict[str, Any]]:
    """One pass of the kept weights over the validation tiles.

    Returns the foreground intersections and size sums at each of
    :data:`~scaleseg.training._threshold.THRESHOLDS` (binary models; None otherwise) and each
    foreground class's reach (:mod:`scaleseg.training._reach`), both pooled over the tiles.
    """
    import torch

    from ._reach import BINS, QUANTILE, class_reach, reach_histogram
    from ._threshold import THRESHOLDS, threshold_counts

    model.eval()
    inter = np.zeros(len(THRESHOLDS))
    total = np.zeros(len(THRESHOLDS))
    hist = np.zeros((n_classes - 1, BINS), dtype=np.int64)
    with torch.inference_mode():
        for b0 in range(0, len(tiles), batch_size):
            batch = tiles[b0 : b0 + batch_size]
            x = torch.stack([t[0] for t in batch]).to(device)
            y = torch.stack([t[1] for t in batch]).numpy()
            prob = torch.softmax(model(x).float()[:, :n_classes], dim=1).cpu().numpy()
            hist += reach_histogram(prob, y)
            if n_classes == 2:
                i, t = threshold_counts(prob[:, 1], y, THRESHOLDS)
                inter += i
                total += t
    counts = (
        {"thresholds": list(THRESHOLDS), "inter": inter.tolist(), "total": total.tolist()}
        if n_classes == 2
        else None
    )
    return counts, {"quantile": QUANTILE, "values": class_reach(hist)}


def _plot_history(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(ep, [h["train_loss"] for h in history], "o-", label="train loss")
    ax.plot(ep, [h["valid_loss"] for h in history], "o-", label="valid loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(ep, [h["valid_dice"] for h in history], "s--", color="tab:green", label="valid Dice")
    ax2.set_ylabel("valid Dice")
    ax2.set_ylim(0, 1)
    frozen = [h["epoch"] for h in history if h["phase"] == "frozen"]
    if frozen:
        ax.axvspan(min(frozen) - 0.5, max(frozen) + 0.5, color="0.9", label="encoder frozen")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="center right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class WeightAverage:
    """Exponential moving average of a model's parameters and floating-point buffers.

    After update ``t`` (1-based) the average moves towards the model by ``1 - d_t`` with
    ``d_t = min(decay, (1 + t) / (10 + t))``: early, poor weights are forgotten quickly.
    Integer buffers (batch-norm step counters) are copied.

    Parameters
    ----------
    model : torch.nn.Module
    decay : float
        In ``[0, 1)``.
    """

    def __init__(self, model, decay: float):
        import copy

        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def update(self, model) -> None:
        import torch

        self.updates += 1
        t = self.updates
        w = 1.0 - min(self.decay, (1.0 + t) / (10.0 + t))
        with torch.no_grad():
            for avg, cur in zip(self.model.parameters(), model.parameters(), strict=True):
                avg.lerp_(cur.detach(), w)
            for avg, cur in zip(self.model.buffers(), model.buffers(), strict=True):
                if avg.dtype.is_floating_point:
                    avg.lerp_(cur, w)
                else:
                    avg.copy_(cur)


def format_epoch(event: dict[str, Any]) -> str:
    """One human-readable line of a per-epoch record."""
    return (
        f"fold {event['fold']} epoch {event['epoch'] + 1}/{event['epochs_total']} "
        f"({event['phase']}): train loss {event['train_loss']:.4f}, valid Dice "
        f"{event['valid_dice']:.4f}, {event['seconds']:.1f} s"
    )


def _report_epoch(event: dict[str, Any]) -> None:
    """Publish an epoch record to the driver (a worker event) or log it here."""
    worker = current_worker()
    if worker is not None:
        from ..cluster._observe import EPOCH_TOPIC

        worker.log_event(EPOCH_TOPIC, event)
    else:
        import logging

        logging.getLogger("scaleseg.train").info(format_epoch(event))


def _write_history(history: list[dict], folder: Path, fold: int) -> None:
    import pandas as pd

    pd.DataFrame(history).to_csv(folder / "history.csv", index=False)
    _plot_history(history, folder / "history.png", f"fold {fold}")


def _set_encoder_trainable(model, trainable: bool) -> None:
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        return
    for p in encoder.parameters():
        p.requires_grad_(trainable)


def fit_fold(
    spec: FoldSpec,
    out_dir: str | Path,
    *,
    model: ModelSpec,
    config: TrainConfig,
    normalization: Normalization,
    torch_threads: int | None = 1,
    device: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train one fold and write ``out_dir/fold_<k>/`` atomically; returns its ``fold.json``.

    A fold whose folder already holds ``fold.json`` is not trained again (resume).

    Parameters
    ----------
    model : ModelSpec
        The members' architecture.
    config : TrainConfig
        The training schedule and recipe.
    normalization : Normalization
        Per-channel intensity scale, mean and std of the ensemble.
    torch_threads : int, optional
        ``torch.set_num_threads`` for this fold (set deliberately: dask workers run with
        ``OMP_NUM_THREADS=1``). ``None`` leaves torch's setting.
    device : str, optional
        ``"cuda"`` when available, else ``"cpu"``; mixed precision is used on CUDA when
        ``config.mixed_precision``.
    """
    import torch
    from tqdm.auto import tqdm

    from ..models import (
        build_loss,
        build_model,
        load_weights,
        pick_device,
        resolve_encoder_weights,
        save_weights,
    )
    from ._data import TileDataset, validation_tiles

    out_dir = Path(out_dir)
    final = out_dir / fold_dir_name(spec.fold)
    if (final / FOLD_FILE).is_file():
        return json.loads((final / FOLD_FILE).read_text()) | {"skipped": True}
    if torch_threads:  # a worker task: torch threads and the allocator (scaleseg.cluster)
        from ..worker import prepare_worker_process

        prepare_worker_process(torch_threads)
    dev = pick_device(device)
    use_amp = dev.type == "cuda" and config.mixed_precision
    torch.manual_seed(spec.seed)

    mspec = model
    weights_used, _ = resolve_encoder_weights(mspec, warn=False)
    model = build_model(mspec, seed=spec.seed).to(dev)
    norm = normalization
    n_classes = mspec.n_classes
    loss_fn = build_loss(config.loss, n_classes=n_classes, n_extra=mspec.n_extra)
    tile = tuple(config.tile_shape)
    flows = mspec.n_extra > 0
    dataset = TileDataset(
        spec.train,
        tile_shape=tile,
        n_classes=n_classes,
        tiles_per_epoch=config.tiles_per_epoch,
        normalization=norm,
        augment=list(config.augmentations),
        seed=spec.seed,
        scale=config.scale,
        flows=flows,
    )
    valid = validation_tiles(spec.valid, tile_shape=tile, normalization=norm, scale=config.scale)
    bs = config.batch_size
    steps_per_epoch = max(1, -(-len(dataset) // bs))
    frozen_epochs = config.frozen_epochs
    epochs = config.epochs
    patience = config.early_stopping_patience
    lr, wd = config.lr, config.weight_decay

    for stale in out_dir.glob(f".{fold_dir_name(spec.fold)}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)  # an attempt whose worker died (one at a time)
    tmp = out_dir / f".{fold_dir_name(spec.fold)}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    history: list[dict[str, Any]] = []
    best = {"valid_dice": -1.0, "valid_loss": math.inf, "epoch": -1}
    ema_decay = config.ema
    average = WeightAverage(model, float(ema_decay)) if ema_decay is not None else None
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    t_start = time.perf_counter()
    total_epochs = frozen_epochs + epochs
    bar = tqdm(
        total=total_epochs * steps_per_epoch,
        desc=f"fold {spec.fold}",
        unit="step",
        disable=not show_progress,
        leave=False,
    )
    try:
        epoch = 0
        stop = False
        for phase, n_ep in (("frozen", frozen_epochs), ("unfrozen", epochs)):
            if n_ep == 0 or stop:
                continue
            _set_encoder_trainable(model, phase == "unfrozen")
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
            sched = _one_cycle(opt, lr, n_ep * steps_per_epoch)
            for _ in range(n_ep):
                t0 = time.perf_counter()
                dataset.set_epoch(epoch)
                loader = torch.utils.data.DataLoader(
                    dataset, batch_size=bs, shuffle=False, num_workers=0
                )
                model.train()
                run_loss, n_seen = 0.0, 0
                for batch in loader:
                    x = batch["image"].to(dev)
                    y = batch["target"].to(dev)
                    opt.zero_grad(set_to_none=True)
                    with torch.autocast(dev.type, enabled=use_amp):
                        out = model(x)
                        loss = (
                            loss_fn(out.float(), y, batch["flows"].to(dev))
                            if flows
                            else loss_fn(out.float(), y)
                        )
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()
                    else:
                        loss.backward()
                        opt.step()
                    sched.step()
                    if average is not None:
                        average.update(model)
                    run_loss += float(loss.detach()) * len(x)
                    n_seen += len(x)
                    bar.update(1)
                scored = average.model if average is not None else model
                v_loss, v_dice = _evaluate(scored, valid, loss_fn, n_classes, dev, bs)
                row = {
                    "epoch": epoch,
                    "phase": phase,
                    "lr": float(sched.get_last_lr()[0]),
                    "train_loss": run_loss / max(1, n_seen),
                    "valid_loss": v_loss,
                    "valid_dice": v_dice,
                    "seconds": round(time.perf_counter() - t0, 3),
                }
                history.append(row)
                if _improves(v_dice, v_loss, best):
                    best = {"valid_dice": v_dice, "valid_loss": v_loss, "epoch": epoch}
                    sha = save_weights(scored, tmp / WEIGHTS_FILE)
                _write_history(history, tmp, spec.fold)
                _report_epoch(
                    {
                        "run": str(out_dir),
                        "fold": spec.fold,
                        "epochs_total": total_epochs,
                        "torch_threads": torch.get_num_threads(),
                        **row,
                    }
                )
                epoch += 1
                if patience and phase == "unfrozen" and epoch - 1 - best["epoch"] >= patience:
                    stop = True
                    break
        bar.close()
        # the kept weights' Dice per decision threshold (the ensemble's choice) and class reach
        kept = average.model if average is not None else model
        load_weights(kept, tmp / WEIGHTS_FILE, expected_sha256=sha)
        counts, reach = _validation_pass(kept, valid, dev, bs, n_classes)
        info = {
            "fold": spec.fold,
            "seed": spec.seed,
            "train_images": [_item_name(i) for i in spec.train],
            "valid_images": [_item_name(i) for i in spec.valid],
            "best_epoch": best["epoch"],
            "valid_dice": best["valid_dice"],
            "epochs_run": len(history),
            "early_stopped": stop,
            "weights": WEIGHTS_FILE,
            "sha256": sha,
            "seconds": round(time.perf_counter() - t_start, 2),
            "device": dev.type,
            "mixed_precision": use_amp,
            "torch_threads": torch.get_num_threads(),
            "ema": ema_decay,
            "encoder_weights": weights_used.model_dump(mode="json"),
            "threshold_counts": counts,
            "class_reach": reach,
        }
        atomic_write_json(tmp / FOLD_FILE, info)
        if final.exists():  # an incomplete earlier attempt (no fold.json): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        return info
    except BaseException:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _one_cycle(opt, lr: float, total_steps: int):
    """fastai-style one-cycle schedule (warm-up over a quarter, cosine annealing); a constant
    rate when there are too few steps for the two phases."""
    import torch

    if total_steps < 4:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=total_steps, pct_start=max(0.25, 2.0 / total_steps)
    )


def _item_name(item) -> str:
    return getattr(item, "name", None) or str(item)
