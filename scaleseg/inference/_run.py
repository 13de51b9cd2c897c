"""``predict`` over a collection: output layout, work units on a Dask client, manifest, tables.

Output (``OUT``)::

    images/<name>.zarr                 root image: uncertainty, c = (u, epistemic, aleatoric)
      probabilities/                   multiscale image, c = classes (float16 by default)
      labels/semantic                  ŷ = argmax p̄ (0 = background)
    manifest/<name>/<by>_<bx>.json     one file per finished unit (partial sums, timings)
    images.parquet, images.csv         one row per image
    predict_state.json                 ensemble checksums + settings (a resume must match)
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._blocks import compute_ensemble_block, output_levels, plan_blocks, write_block
from ._models import EnsembleInfo

__all__ = [
    "UNCERTAINTY_CHANNELS",
    "plan_units",
    "predict_options",
    "predict_collection",
    "predict_output_state",
    "predict_unit",
    "preflight",
    "same_output_state",
]

log = logging.getLogger("scaleseg.predict")
UNCERTAINTY_CHANNELS = ("u", "epistemic", "aleatoric")


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _in_worker() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def predict_unit(task: dict[str, Any]) -> dict[str, Any]:
    """Run one (image, block) unit: read, predict, write all outputs, record it in the manifest."""
    from ..io import open_group, open_image, to_cyx

    t0 = time.perf_counter()
    worker = _in_worker()
    if worker is not None:  # torch threads (workers run with OMP_NUM_THREADS=1), allocator
        from ..cluster import prepare_worker_process

        prepare_worker_process(task["torch_threads"])
    info: EnsembleInfo = task["ensemble"]
    o = task["opts"]
    device = _device()
    image = to_cyx(open_image(task["image_url"]))
    core = (slice(*task["core"][0]), slice(*task["core"][1]))
    res = compute_ensemble_block(image, core, info, o, device=device, name=task["name"])
    t1 = time.perf_counter()
    out = task["out_url"]
    if task.get("create"):
        _create_outputs(out, tuple(task["shape"]), info, o, o["ngff_version"])
    unc = open_group(out, mode="r+")
    write_block([unc[f"s{i}"] for i in range(o["levels"])], res["uncertainty"], core, labels=False)
    sem = open_group(f"{out}/labels/semantic", mode="r+")
    write_block([sem[f"s{i}"] for i in range(o["levels"])], res["labels"], core, labels=True)
    if o["write_probabilities"]:
        prob = open_group(f"{out}/probabilities", mode="r+")
        write_block(
            [prob[f"s{i}"] for i in range(o["levels"])], res["probabilities"], core, labels=False
        )
    if info.n_extra:
        flows = open_group(f"{out}/flows", mode="r+")
        write_block([flows["s0"]], res["extra"], core, labels=False)
    t2 = time.perf_counter()
    p = res["partials"]
    record = {
        "image": task["name"],
        "block": [task["by"], task["bx"]],
        "partials": {
            "sum_u": p.sum_u,
            "sum_epistemic": p.sum_epistemic,
            "n_foreground": p.n_foreground,
            "class_counts": list(p.class_counts),
            "n_pixels": p.n_pixels,
            "sum_distance": None if np.isnan(p.sum_distance) else p.sum_distance,
        },
        "n_forward": res["n_forward"],
        "seconds": round(t2 - t0, 4),
        "seconds_read": round(res["seconds_read"], 4),
        "seconds_model": round(res["seconds_model"], 4),
        "seconds_write": round(t2 - t1, 4),
        "worker": worker or socket.gethostname(),
        "device": str(device),
    }
    _write_json_atomic(Path(task["manifest"]), record)
    log.info(
        json.dumps(
            {
                "event": "unit",
                "image": task["name"],
                "block": record["block"],
                "seconds": record["seconds"],
                "worker": record["worker"],
            }
        )
    )
    return record


def predict_options(
    info: EnsembleInfo | None = None,
    config=None,
    *,
    chunks: tuple[int, int] = (512, 512),
    ngff_version: str = "0.5",
    **overrides: Any,
) -> dict[str, Any]:
    """The ``opts`` of :func:`predict_collection` from a :class:`~scaleseg.config.PredictConfig`
    (default: the deepflash2 defaults), the ensemble's tile shape and ``overrides``.

    Raises
    ------
    ValueError
        For an override that is not one of the option names.
    """
    from ..config import PredictConfig

    pc = config or PredictConfig()
    tile = pc.tile_shape or (info.tile_shape if info is not None else None)
    opts = {
        "tile_shape": list(tile) if tile is not None else None,
        "overlap": pc.overlap,
        "tta": pc.tta,
        "batch_size": pc.batch_size,
        "zeta": pc.zeta,
        "block_shape": list(pc.block_shape),
        "chunks": list(chunks),
        "write_probabilities": pc.write_probabilities,
        "probabilities_dtype": pc.probabilities_dtype,
        "ngff_version": ngff_version,
    }
    unknown = sorted(set(overrides) - set(opts))
    if unknown:
        raise ValueError(f"unknown predict options {unknown}; known: {sorted(opts)}")
    opts.update({k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()})
    if opts["tile_shape"] is None:
        raise ValueError("predict options need a tile_shape (from the ensemble or given)")
    return opts


#: options that change how units run, not what they compute (a resume may change them)
EXECUTION_OPTIONS = ("batch_size",)


def _result_options(opts: dict[str, Any]) -> dict[str, Any]:
    """``opts`` as JSON values, without the execution options."""
    return {k: v for k, v in json.loads(json.dumps(opts)).items() if k not in EXECUTION_OPTIONS}


def predict_output_state(
    info: EnsembleInfo, opts: dict[str, Any], inputs: list[str]
) -> dict[str, Any]:
    """What an output folder was made with; a resumed run must match it exactly.

    Execution options (:data:`EXECUTION_OPTIONS`, e.g. the batch size) are left out: a run
    may resume with another one (outputs then agree to float rounding, ~1e-7).
    """
    return {
        "ensemble": info.path,
        "checksums": list(info.checksums),
        "opts": _result_options(opts),
        "inputs": list(inputs),
    }


def same_output_state(stored: dict[str, Any], state: dict[str, Any]) -> bool:
    """Whether a stored ``predict_state.json`` (possibly from an older version, which still
    listed execution options) describes the same prediction as ``state``."""
    return {**stored, "opts": _result_options(stored.get("opts", {}))} == state


def preflight(ref, info: EnsembleInfo, tile_shape: tuple[int, int]) -> dict[str, Any]:
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
    url: str, shape: tuple[int, int], info: EnsembleInfo, o: dict, ngff: str
) -> None:
    from ..io import create_labels, create_multiscale, join_url

    common = dict(chunks=o["chunks"], n_levels=o["levels"], ngff_version=ngff, halve_chunks=True)
    create_multiscale(
        url,
        shape=(3, *shape),
        dtype="float32",
        channel_names=UNCERTAINTY_CHANNELS,
        overwrite=True,
        **common,
    )
    if o["write_probabilities"]:
        create_multiscale(
            join_url(url, "probabilities"),
            shape=(info.n_classes, *shape),
            dtype=o["probabilities_dtype"],
            channel_names=info.classes,
            **common,
        )
    if info.n_extra:
        create_multiscale(
            join_url(url, "flows"),
            shape=(info.n_extra, *shape),
            dtype="float32",
            channel_names=[f"flow_{i}" for i in range(info.n_extra)],
            chunks=o["chunks"],
            n_levels=1,
            ngff_version=ngff,
        )
    create_labels(
        url,
        "semantic",
        dtype="uint8" if info.n_classes <= 256 else "uint16",
        chunks=o["chunks"],
        n_levels=o["levels"],
        properties=[{"label-value": k, "class": n} for k, n in enumerate(info.classes)],
    )


def plan_units(
    refs: list,
    info: EnsembleInfo,
    out: str | Path,
    *,
    opts: dict[str, Any],
    torch_threads: int = 1,
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], int]:
    """The work units still to run for ``refs`` in ``out`` (metadata only, no pixels).

    Images failing the preflight checks get a failed row and no units; units already in the
    manifest are skipped. Multi-block images get their outputs created here (once); a
    single-block image creates its outputs inside its own unit (no driver I/O per image).

    Returns
    -------
    rows : dict
        One images-table row per image name.
    tasks : list of dict
        One picklable description per (image, block) unit to run.
    n_done : int
        Units found finished in the manifest.
    """
    out = Path(out)
    tile = tuple(opts["tile_shape"])
    rows: dict[str, dict[str, Any]] = {}
    tasks = []
    n_done = 0
    for ref in refs:
        row: dict[str, Any] = {"image": ref.name, "path": ref.url, "status": "ok", "error": ""}
        rows[ref.name] = row
        try:
            row.update(preflight(ref, info, tile))
        except (ValueError, FileNotFoundError, KeyError) as exc:
            row.update(status="failed", error=str(exc))
            continue
        shape = (row["height"], row["width"])
        bplan = plan_blocks(shape, block_shape=opts["block_shape"], chunks=opts["chunks"])
        o = dict(opts, chunks=bplan.chunks, levels=output_levels(bplan.chunks, shape))
        url = str(out / "images" / f"{ref.name}.zarr")
        row["output"] = url
        cores = bplan.cores()
        row["n_blocks"] = len(cores)
        mdir = out / "manifest" / ref.name
        create_in_unit = len(cores) == 1
        if not create_in_unit and not (mdir / "created").exists():
            _create_outputs(url, shape, info, o, opts["ngff_version"])
            mdir.mkdir(parents=True, exist_ok=True)
            (mdir / "created").write_text("")
        for by, bx, ys, xs in cores:
            mpath = mdir / f"{by}_{bx}.json"
            if mpath.exists():
                n_done += 1
                continue
            tasks.append(
                {
                    "create": create_in_unit,
                    "shape": shape,
                    "image_url": ref.url,
                    "name": ref.name,
                    "by": by,
                    "bx": bx,
                    "core": ((ys.start, ys.stop), (xs.start, xs.stop)),
                    "out_url": url,
                    "manifest": str(mpath),
                    "ensemble": info,
                    "opts": o,
                    "torch_threads": torch_threads,
                }
            )
    return rows, tasks, n_done


def predict_collection(
    refs: list,
    info: EnsembleInfo,
    out: str | Path,
    *,
    opts: dict[str, Any],
    client: Any = None,
    torch_threads: int = 1,
    retries: int = 2,
    progress: Callable[[int], Any] | None = None,
    set_total: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Predict every image of ``refs`` into ``out`` (resuming from its manifest).

    ``opts``: tile_shape, overlap, tta, batch_size, zeta, block_shape, chunks,
    write_probabilities, probabilities_dtype, ngff_version.
    """
    out = Path(out)
    rows, tasks, n_done_before = plan_units(refs, info, out, opts=opts, torch_threads=torch_threads)
    if set_total:
        set_total(len(tasks))
    failures: dict[str, str] = {}
    if client is not None and tasks:
        from distributed import as_completed

        from ..cluster import client_has_gpus

        resources = {"GPU": 1} if client_has_gpus(client) else None
        futures = client.map(
            predict_unit,
            tasks,
            pure=False,
            retries=retries,
            resources=resources,
            key=[f"predict-{t['name']}-{t['by']}-{t['bx']}-{uuid.uuid4().hex[:6]}" for t in tasks],
        )
        names = {f.key: t["name"] for f, t in zip(futures, tasks)}
        for fut in as_completed(futures):
            if fut.status == "error":
                exc = fut.exception()
                failures.setdefault(names[fut.key], f"{type(exc).__name__}: {exc}")
            if progress:
                progress(1)
    else:
        for t in tasks:
            try:
                predict_unit(t)
            except Exception as exc:  # one bad unit fails its image, the rest go on
                failures.setdefault(t["name"], f"{type(exc).__name__}: {exc}")
            if progress:
                progress(1)
    for name, err in failures.items():
        rows[name].update(status="failed", error=err)
    table = _images_table(out, rows, info)
    return {"images": table, "units_run": len(tasks), "units_resumed": n_done_before}


def _nan_if_none(value) -> float:
    return float("nan") if value is None else float(value)


def _images_table(out: Path, rows: dict[str, dict[str, Any]], info: EnsembleInfo):
    import pandas as pd

    from ..uncertainty import ScorePartials, combine_partials, image_score

    for name, row in rows.items():
        if row["status"] != "ok":
            continue
        recs = [
            json.loads(p.read_text()) for p in sorted((out / "manifest" / name).glob("*_*.json"))
        ]
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
            )
            for r in recs
        ]
        score = image_score(combine_partials(parts))
        row.update({k: v for k, v in score.items() if not k.startswith("class_")})
        for k in range(info.n_classes):
            row[f"fraction_{info.classes[k]}"] = score.get(f"class_{k}_fraction", np.nan)
        row["n_forward"] = sum(r["n_forward"] for r in recs)
        for key in ("seconds", "seconds_read", "seconds_model", "seconds_write"):
            row[key] = round(sum(r[key] for r in recs), 3)
    table = pd.DataFrame(list(rows.values()))
    for col in ("U", "U_epistemic", "ood_distance", "foreground_fraction"):
        if col not in table:
            table[col] = np.nan
    if "U_reason" not in table:
        table["U_reason"] = ""
    # the ensemble's calibrated threshold of qa's distance rule (NaN for older ensembles)
    table["ood_threshold"] = np.nan if info.ood_threshold is None else info.ood_threshold
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
