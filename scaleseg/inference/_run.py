"""``predict`` over a collection: output layout, typed work units, manifest, images table.

Output (``OUT``)::

    images/<name>.zarr                 root image: uncertainty, c = (u, epistemic, aleatoric)
      probabilities/                   multiscale image, c = classes (float16 by default)
      labels/semantic                  ŷ = argmax p̄ (0 = background)
    manifest/units*.jsonl              one line per finished unit (partial sums, timings):
                                       append-only logs, one per process (scaleseg.unitlog)

The stage run (:func:`scaleseg.predict`) adds ``images.parquet`` / ``images.csv``,
``run_spec.json``, ``run.json`` and the ``complete`` marker.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..blocks import output_levels, plan_blocks, write_block
from ..executor import current_worker, map_units
from ..models import resolve_engine, resolve_precision
from ..unitlog import UnitLog
from ._blocks import compute_ensemble_block
from ._models import EnsembleInfo

if TYPE_CHECKING:
    from ..config import PredictConfig
    from ..instances._run import InPass

__all__ = [
    "UNCERTAINTY_CHANNELS",
    "PredictUnit",
    "plan_units",
    "predict_collection",
    "predict_unit",
    "preflight",
]

UNCERTAINTY_CHANNELS = ("u", "epistemic", "aleatoric")


@dataclass(frozen=True)
class PredictUnit:
    """One (image, block) work unit of prediction.

    Attributes
    ----------
    name, image_url : str
        The image and where it is read from.
    out_url : str
        Its output image (``images/<name>.zarr``).
    manifest : str
        The run's unit-log folder; the unit appends its record there last (a unit without a
        record runs again on resume).
    block : (int, int)
        Block index ``(by, bx)``.
    core : ((int, int), (int, int))
        Block core in image coordinates, ``((y0, y1), (x0, x1))``.
    shape : (int, int)
        Image shape.
    chunks : (int, int)
        Output chunks (clipped to the image).
    levels : int
        Output pyramid levels.
    create : bool
        The unit creates the image's outputs itself (single-block images).
    shard_chunks : (int, int)
        Chunks per shard of sharded (NGFF 0.5) outputs: the chunks of one block.
    torch_threads : int or None
    """

    name: str
    image_url: str
    out_url: str
    manifest: str
    block: tuple[int, int]
    core: tuple[tuple[int, int], tuple[int, int]]
    shape: tuple[int, int]
    chunks: tuple[int, int]
    levels: int
    create: bool
    torch_threads: int | None = 1
    shard_chunks: tuple[int, int] | None = None

    @property
    def key_name(self) -> str:
        return f"{self.name}-{self.block[0]}-{self.block[1]}"


def predict_unit(
    unit: PredictUnit,
    *,
    ensemble: EnsembleInfo,
    config: PredictConfig,
    instances: InPass | None = None,
) -> dict[str, Any]:
    """Run one unit: read, predict, write all outputs, record it in the manifest.

    With ``instances``, a unit that holds a whole image (one block) also separates its
    instances from the arrays in memory (the same pass) and records them with the request's
    token.
    """
    from ..io import open_group, open_image, to_cyx
    from ..models import pick_device

    t0 = time.perf_counter()
    worker = current_worker()
    if worker is not None:  # torch threads (workers run with OMP_NUM_THREADS=1), allocator
        from ..worker import prepare_worker_process

        prepare_worker_process(unit.torch_threads)
    info = ensemble
    device = pick_device()
    image = to_cyx(open_image(unit.image_url))
    core = (slice(*unit.core[0]), slice(*unit.core[1]))
    res = compute_ensemble_block(image, core, info, config, device=device, name=unit.name)
    t1 = time.perf_counter()
    out = unit.out_url
    if unit.create:
        _create_outputs(out, shape=unit.shape, chunks=unit.chunks, levels=unit.levels, info=info,
                        shard_chunks=unit.shard_chunks,
                        config=config)  # fmt: skip
    unc = open_group(out, mode="r+")
    write_block([unc[f"s{i}"] for i in range(unit.levels)], res["uncertainty"], core, labels=False)
    sem = open_group(f"{out}/labels/semantic", mode="r+")
    write_block([sem[f"s{i}"] for i in range(unit.levels)], res["labels"], core, labels=True)
    if config.write_probabilities:
        prob = open_group(f"{out}/probabilities", mode="r+")
        write_block(
            [prob[f"s{i}"] for i in range(unit.levels)], res["probabilities"], core, labels=False
        )
    if info.n_extra:
        flows = open_group(f"{out}/flows", mode="r+")
        write_block([flows["s0"]], res["extra"], core, labels=False)
    t2 = time.perf_counter()
    done = None
    if instances is not None and unit.create:
        done = _instances_in_pass(instances, unit, res, sem["s0"].dtype, config)
    t3 = time.perf_counter()
    p = res["partials"]
    record = {
        "image": unit.name,
        "block": list(unit.block),
        "partials": {
            "sum_u": p.sum_u,
            "sum_epistemic": p.sum_epistemic,
            "n_foreground": p.n_foreground,
            "class_counts": list(p.class_counts),
            "n_pixels": p.n_pixels,
            "sum_distance": None if np.isnan(p.sum_distance) else p.sum_distance,
            "sum_u_novel": None if np.isnan(p.sum_u_novel) else p.sum_u_novel,
        },
        "n_forward": res["n_forward"],
        "seconds": round(t3 - t0, 4),
        "seconds_read": round(res["seconds_read"], 4),
        "seconds_model": round(res["seconds_model"], 4),
        "seconds_write": round(t2 - t1, 4),
        "worker": getattr(worker, "address", None) or socket.gethostname(),
        "device": str(device),
        "engine": resolve_engine(config.engine, device, config.precision),
        "precision": resolve_precision(config.precision, device),
        "window": list(config.window_for(image.shape, info.tile_shape)),
    }
    if done is not None:
        record["instances"] = done
        record["seconds_instances"] = round(t3 - t2, 4)
    UnitLog(unit.manifest).append(record)
    return record


def _instances_in_pass(task: InPass, unit: PredictUnit, res: dict, label_dtype, config):
    """The instance stage's single-block work on this unit's arrays, cast to the dtypes they
    are stored with (what the instance stage would read back)."""
    from ..instances import instances_in_pass

    method = task.config.method
    probs = None
    if method == "cellpose":
        probs = res["probabilities"].astype(config.probabilities_dtype)
    flows = res["extra"] if method == "flows" and res["extra"] is not None else None
    return instances_in_pass(
        task,
        name=unit.name,
        url=unit.out_url,
        chunks=unit.chunks,
        levels=unit.levels,
        shard_chunks=unit.shard_chunks,
        semantic=res["labels"].astype(label_dtype, copy=False),
        pixels=np.asarray(res["pixels"]),
        uncertainty=res["uncertainty"][0].astype(np.float32, copy=False),
        flows=None if flows is None else flows.astype(np.float32, copy=False),
        probabilities=probs,
    )


def preflight(ref, info: EnsembleInfo) -> dict[str, Any]:
    """Metadata checks of one input image; raises ValueError naming the image and problem."""
    from ..io import open_image, to_cyx

    image = to_cyx(open_image(ref))
    c, y, x = (int(s) for s in image.shape)
    if c != info.in_channels:
        raise ValueError(f"{ref.url}: {c} channel(s), the ensemble expects {info.in_channels}")
    if y < 2 or x < 2:
        raise ValueError(f"{ref.url}: image {y}x{x} is too small to predict")
    # An image smaller than the tile is one window, filled by mirror reflection beyond its
    # borders (the same padding as at any image border); only its own pixels are written.
    return {"channels": c, "height": y, "width": x, "dtype": str(image.dtype)}


def _create_outputs(
    url: str,
    *,
    shape: tuple[int, int],
    chunks: tuple[int, int],
    levels: int,
    info: EnsembleInfo,
    config: PredictConfig,
    shard_chunks: tuple[int, int] | None = None,
) -> None:
    """Create the output arrays of one image; with NGFF 0.5 each is sharded by the work unit's
    block (``shard_chunks`` chunks per shard), so one unit writes each shard whole."""
    from ..io import create_labels, create_multiscale, join_url

    common = dict(chunks=chunks, n_levels=levels, ngff_version=config.ngff_version,
                  halve_chunks=True, shard_chunks=shard_chunks)  # fmt: skip
    create_multiscale(
        url,
        shape=(3, *shape),
        dtype="float32",
        channel_names=UNCERTAINTY_CHANNELS,
        overwrite=True,
        **common,
    )
    if config.write_probabilities:
        create_multiscale(
            join_url(url, "probabilities"),
            shape=(info.n_classes, *shape),
            dtype=config.probabilities_dtype,
            channel_names=info.classes,
            **common,
        )
    if info.n_extra:
        create_multiscale(
            join_url(url, "flows"),
            shape=(info.n_extra, *shape),
            dtype="float32",
            channel_names=[f"flow_{i}" for i in range(info.n_extra)],
            chunks=chunks,
            n_levels=1,
            ngff_version=config.ngff_version,
            shard_chunks=shard_chunks,
        )
    create_labels(
        url,
        "semantic",
        dtype="uint8" if info.n_classes <= 256 else "uint16",
        chunks=chunks,
        n_levels=levels,
        properties=[{"label-value": k, "class": n} for k, n in enumerate(info.classes)],
        shard_chunks=shard_chunks,
    )


def plan_units(
    refs: list,
    info: EnsembleInfo,
    out: str | Path,
    *,
    config: PredictConfig,
    torch_threads: int | None = 1,
) -> tuple[dict[str, dict[str, Any]], list[PredictUnit], int]:
    """The work units still to run for ``refs`` in ``out`` (metadata only, no pixels).

    Images failing the preflight checks get a failed row and no units; units already in the
    manifest are skipped. Multi-block images get their outputs created here (once); a
    single-block image creates its outputs inside its own unit (no driver I/O per image).

    Returns
    -------
    rows : dict
        One images-table row per image name.
    units : list of PredictUnit
        The units to run.
    n_done : int
        Units found finished in the manifest.
    """
    out = Path(out)
    rows: dict[str, dict[str, Any]] = {}
    units: list[PredictUnit] = []
    n_done = 0
    log = UnitLog(out / "manifest")
    records = log.read()
    for ref in refs:
        row: dict[str, Any] = {"image": ref.name, "path": ref.url, "status": "ok", "error": ""}
        rows[ref.name] = row
        try:
            row.update(preflight(ref, info))
        except (ValueError, FileNotFoundError, KeyError) as exc:
            row.update(status="failed", error=str(exc))
            continue
        shape = (row["height"], row["width"])
        bplan = plan_blocks(shape, block_shape=config.block_shape, chunks=config.chunks)
        levels = output_levels(bplan.chunks, shape)
        url = str(out / "images" / f"{ref.name}.zarr")
        row["output"] = url
        cores = bplan.cores()
        row["n_blocks"] = len(cores)
        create_in_unit = len(cores) == 1
        for by, bx, ys, xs in cores:
            if (ref.name, (by, bx)) in records:
                n_done += 1
                continue
            units.append(
                PredictUnit(
                    name=ref.name,
                    image_url=ref.url,
                    out_url=url,
                    manifest=str(log.folder),
                    block=(by, bx),
                    core=((ys.start, ys.stop), (xs.start, xs.stop)),
                    shape=shape,
                    chunks=bplan.chunks,
                    levels=levels,
                    create=create_in_unit,
                    torch_threads=torch_threads,
                    shard_chunks=bplan.chunks_per_block,
                )  # fmt: skip
            )
        if not create_in_unit and (ref.name, ()) not in records:
            _create_outputs(url, shape=shape, chunks=bplan.chunks, levels=levels, info=info,
                            shard_chunks=bplan.chunks_per_block,
                            config=config)  # fmt: skip
            log.append({"image": ref.name, "created": True})
    return rows, units, n_done


def predict_collection(
    refs: list,
    info: EnsembleInfo,
    out: str | Path,
    *,
    config: PredictConfig,
    client: Any = None,
    torch_threads: int | None = 1,
    progress: Callable[[int], Any] | None = None,
    set_total: Callable[[int], Any] | None = None,
    instances: InPass | None = None,
) -> dict[str, Any]:
    """Predict every image of ``refs`` into ``out`` (resuming from its manifest).

    One unit per (image, block) through :func:`scaleseg.executor.map_units` (``GPU=1`` on GPU
    workers, ``config.retries`` retries, failures collected: a bad image fails alone).
    ``instances``: single-block images also get their instances in their own unit
    (:func:`predict_unit`).

    Returns
    -------
    dict
        ``images`` (the images table), ``units_run``, ``units_resumed``.
    """
    if info.scale != 1.0:
        raise ValueError(
            f"{info.path}: ensembles trained with scale {info.scale} cannot be applied by "
            "predict yet (only scale 1)"
        )
    if config.threshold is not None and info.n_classes != 2:
        raise ValueError(
            f"{info.path}: a decision threshold needs a binary ensemble (2 classes), this one "
            f"has {info.n_classes}"
        )
    out = Path(out)
    rows, units, n_done_before = plan_units(refs, info, out, config=config,
                                            torch_threads=torch_threads)  # fmt: skip
    if set_total:
        set_total(len(units))
    res = map_units(
        predict_unit,
        units,
        stage="predict",
        names=[u.key_name for u in units],
        client=client,
        resources="gpu",
        retries=config.retries,
        on_error="collect",
        progress=progress,
        ensemble=info,
        config=config,
        instances=instances,
    )
    for failure in res.failures:
        rows[units[failure.index].name].setdefault("_errors", []).append(failure.error)
    for row in rows.values():
        errors = row.pop("_errors", None)
        if errors:
            row.update(status="failed", error=errors[0])
    log = UnitLog(out / "manifest")
    records = log.read()
    table = _images_table(rows, records, info, config)
    log.compact()  # one file for the whole run, whatever the number of units
    return {"images": table, "units_run": len(units), "units_resumed": n_done_before}


def _nan_if_none(value) -> float:
    return float("nan") if value is None else float(value)


def _images_table(
    rows: dict[str, dict[str, Any]], records: dict, info: EnsembleInfo, config: PredictConfig
):
    import pandas as pd

    from ..uncertainty import ScorePartials, combine_partials, image_score

    by_image: dict[str, dict[tuple, dict]] = {}
    for (name, block), rec in records.items():
        if block:  # not the "outputs created" marker of a multi-block image
            by_image.setdefault(name, {})[block] = rec
    for name, row in rows.items():
        if row["status"] != "ok":
            continue
        recs = [rec for _, rec in sorted(by_image.get(name, {}).items())]
        if len(recs) != row["n_blocks"]:
            row.update(
                status="failed",
                error=row["error"] or f"{len(recs)} of {row['n_blocks']} blocks finished",
            )
            continue
        parts = [
            ScorePartials(
                r["partials"]["sum_u"],
                r["partials"]["sum_epistemic"],
                r["partials"]["n_foreground"],
                tuple(r["partials"]["class_counts"]),
                r["partials"]["n_pixels"],
                _nan_if_none(r["partials"].get("sum_distance")),
                _nan_if_none(r["partials"].get("sum_u_novel")),
            )
            for r in recs
        ]
        score = image_score(combine_partials(parts))
        row.update({k: v for k, v in score.items() if not k.startswith("class_")})
        for k in range(info.n_classes):
            row[f"fraction_{info.classes[k]}"] = score.get(f"class_{k}_fraction", np.nan)
        row["n_forward"] = sum(r["n_forward"] for r in recs)
        row["engine"] = ",".join(sorted({r.get("engine", "torch") for r in recs}))
        row["precision"] = ",".join(sorted({r.get("precision", "float32") for r in recs}))
        row["window"] = ",".join(sorted({"x".join(map(str, r["window"])) for r in recs
                                         if r.get("window")}))  # fmt: skip
        for key in ("seconds", "seconds_read", "seconds_model", "seconds_write"):
            row[key] = round(sum(r[key] for r in recs), 3)
    table = pd.DataFrame(list(rows.values()))
    for col in ("U", "U_epistemic", "U_novel", "ood_distance", "foreground_fraction"):
        if col not in table:
            table[col] = np.nan
    if "U_reason" not in table:
        table["U_reason"] = ""
    # the ensemble's calibrated threshold of qa's distance rule (NaN for older ensembles)
    table["ood_threshold"] = np.nan if info.ood_threshold is None else info.ood_threshold
    # the foreground-probability threshold the labels were decided with (NaN: argmax)
    used = config.threshold if config.threshold is not None else info.decision_threshold
    table["decision_threshold"] = np.nan if used is None else used
    table.loc[table["status"] != "ok", "U_reason"] = "prediction failed"
    # rank for review: undefined U first (with its reason), then highest U first
    ok = table["status"] == "ok"
    order = (
        table[ok]
        .assign(_nan=table["U"].isna())
        .sort_values(["_nan", "U"], ascending=[False, False])
    )
    table["rank"] = pd.Series(range(1, len(order) + 1), index=order.index, dtype="Int64")
    return table.sort_values(["rank", "image"], na_position="last", ignore_index=True)
