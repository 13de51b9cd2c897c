"""The instance stage over a prediction output (orchestration layer).

Per (image, block) unit: read ŷ (and flows / probabilities) of the block core + halo from the
prediction, run the method, and either write final labels (a single-block image) or write
provisional 64-bit ids for the core and return the face strips. The driver merges the strips of
neighbouring blocks, saves each block's slice of the relabel table, and relabel units map their
own cores. Instance tables are combined from per-block partial sums.

Written into the prediction output (and nothing else there): ``images/<name>.zarr/labels/
instances`` (uint32, multiscale), ``instances.parquet`` / ``.csv`` (one row per instance) and
``instances_images.parquet`` / ``.csv`` (``n_instances``, ``cellpose_removed_pixels`` and the
method per image).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..config import InstancesConfig

__all__ = ["InstancesUnit", "RelabelUnit", "instances_unit", "relabel_unit", "run_instances"]

_PROVISIONAL = "_instances_provisional"


def _run_method(
    cfg: InstancesConfig, semantic, flows=None, probabilities=None
) -> tuple[np.ndarray, dict]:
    from ._methods import (
        cellpose_instances,
        components_instances,
        flows_instances,
        watershed_instances,
    )

    m = cfg.method
    if m == "components":
        return components_instances(semantic, min_size=cfg.min_size)
    if m == "watershed":
        return watershed_instances(semantic, min_size=cfg.min_size)
    if m == "flows":
        if flows is None:
            raise ValueError(
                "method 'flows' needs an ensemble trained with --flows (no flows output)"
            )
        return flows_instances(
            semantic, flows, min_size=cfg.min_size, flow_threshold=cfg.flow_threshold
        )
    if m == "cellpose":
        return cellpose_instances(
            semantic,
            probabilities,
            model=cfg.cellpose_model,
            diameter=cfg.diameter,
            min_size=cfg.min_size,
            flow_threshold=cfg.flow_threshold,
        )
    raise ValueError(f"unknown instance method {m!r}")


@dataclass(frozen=True)
class InstancesUnit:
    """One (image, block) unit of the instance stage."""

    name: str
    out_url: str
    image_url: str
    core: tuple[tuple[int, int], tuple[int, int]]
    ext: tuple[tuple[int, int], tuple[int, int]]
    block: tuple[int, int]
    block_number: int
    single: bool
    levels: int
    shape: tuple[int, int]
    mode: str
    n_classes: int
    has_flows: bool


@dataclass(frozen=True)
class RelabelUnit:
    """Map one block's provisional ids to final labels."""

    out_url: str
    lookup: str
    core: tuple[tuple[int, int], tuple[int, int]]
    levels: int


def _read(url: str, ext: tuple[slice, slice], what: str) -> np.ndarray:
    from ..io import open_image, open_labels

    if what == "semantic":
        arr = open_labels(url, "semantic")
    else:
        arr = open_image(f"{url}/{what}")
    return np.asarray(arr.data[..., ext[0], ext[1]].compute(scheduler="sync"))


def instances_unit(task: InstancesUnit, *, config: InstancesConfig) -> dict[str, Any]:
    """Instances of one block: final labels (single block) or provisional ids + face strips."""
    from ..io import open_group, open_image, to_cyx
    from ._stitch import face_strips, provisional_ids, unique_ids
    from ._tables import instance_partials

    t0 = time.perf_counter()
    url = task.out_url
    ext = (slice(*task.ext[0]), slice(*task.ext[1]))
    core = (slice(*task.core[0]), slice(*task.core[1]))
    semantic = _read(url, ext, "semantic")
    flows = _read(url, ext, "flows") if config.method == "flows" and task.has_flows else None
    probs = _read(url, ext, "probabilities") if config.method == "cellpose" else None
    labels, info = _run_method(config, semantic, flows, probs)
    inner = (
        slice(core[0].start - ext[0].start, core[0].stop - ext[0].start),
        slice(core[1].start - ext[1].start, core[1].stop - ext[1].start),
    )
    image = to_cyx(open_image(task.image_url))
    pixels = np.asarray(image.data[:, core[0], core[1]].compute(scheduler="sync"))
    unc = np.asarray(open_image(url).data[0, core[0], core[1]].compute(scheduler="sync"))
    if task.single:
        from ..blocks import write_block

        final = labels[inner]
        group = open_group(f"{url}/labels/instances", mode="r+")
        write_block([group[f"s{i}"] for i in range(task.levels)], final, core, labels=True)
        ids_core = final
    else:
        prov = provisional_ids(labels, task.block_number)
        open_group(f"{url}/{_PROVISIONAL}", mode="r+")["s0"][core[0], core[1]] = prov[inner]
        ids_core = prov[inner]
    partials = instance_partials(
        ids_core,
        offset=(core[0].start, core[1].start),
        image_shape=tuple(task.shape),
        semantic=semantic[inner],
        image=pixels,
        uncertainty=unc,
        n_classes=task.n_classes,
    )
    out: dict[str, Any] = {
        "image": task.name,
        "block": task.block,
        "partials": partials,
        "info": info,
        "seconds": time.perf_counter() - t0,
    }
    if not task.single:
        out["faces"] = face_strips(
            prov,
            core=inner,
            halo=config.halo,
            origin=(ext[0].start, ext[1].start),
            mode=task.mode,
        )
        out["ids"] = unique_ids(prov[inner])
    return out


def relabel_unit(task: RelabelUnit) -> int:
    """Map one block's provisional core to final labels (reading only its own table)."""
    from ..blocks import write_block
    from ..io import open_group
    from ._stitch import relabel

    url = task.out_url
    core = (slice(*task.core[0]), slice(*task.core[1]))
    table = np.load(task.lookup)
    prov = open_group(f"{url}/{_PROVISIONAL}", mode="r")["s0"][core[0], core[1]]
    final = relabel(prov, table["ids"], table["final"])
    group = open_group(f"{url}/labels/instances", mode="r+")
    write_block([group[f"s{i}"] for i in range(task.levels)], final, core, labels=True)
    return int(final.max())


def _blocks(url: str, block_shape) -> tuple[list, tuple[int, int], int, tuple[int, int]]:
    from ..blocks import plan_blocks
    from ..io import open_group

    sem = open_group(f"{url}/labels/semantic")
    arr0 = sem["s0"]
    shape = tuple(int(s) for s in arr0.shape[-2:])
    chunks = tuple(int(c) for c in arr0.chunks[-2:])
    levels = len([k for k in sem.array_keys() if k.startswith("s")])
    return plan_blocks(shape, block_shape=block_shape, chunks=chunks).cores(), shape, levels, chunks


def run_instances(
    pred_dir: str | Path,
    *,
    config: InstancesConfig,
    n_classes: int,
    has_flows: bool,
    block_shape=(2048, 2048),
    overwrite: bool = False,
    client: Any = None,
    progress=None,
) -> dict[str, Any]:
    """Instance segmentation of every successfully predicted image of ``pred_dir``.

    ``n_classes`` and ``has_flows`` describe the ensemble that made the prediction.
    """
    import pandas as pd

    from ..executor import map_units
    from ..files import remove_location
    from ..io import create_labels, create_multiscale, list_labels
    from ..tables import write_table
    from ._stitch import block_lookup, match_neighbours, merge_pairs, relabel
    from ._tables import combine_instance_partials

    pred_dir = Path(pred_dir)
    table_file = pred_dir / "images.parquet"
    if not table_file.is_file():
        raise FileNotFoundError(f"{pred_dir}: not a prediction output (no images.parquet)")
    images = pd.read_parquet(table_file)
    # connected components merge exactly across touching faces; methods whose result depends on
    # context merge by overlap in the halo
    mode = "touch" if config.method == "components" else "iou"
    halo = int(config.halo)
    tasks, per_image = [], {}
    for _, row in images[images["status"] == "ok"].iterrows():
        url = row["output"]
        if "instances" in list_labels(url):
            if not overwrite:
                raise FileExistsError(
                    f"{url}/labels/instances exists (use --overwrite to replace it)"
                )
        cores, shape, levels, chunks = _blocks(url, block_shape)
        create_labels(
            url, "instances", dtype="uint32", chunks=chunks, n_levels=levels, overwrite=True
        )
        single = len(cores) == 1
        if not single:
            create_multiscale(
                f"{url}/{_PROVISIONAL}",
                shape=shape,
                dtype="uint64",
                axes="yx",
                chunks=chunks,
                n_levels=1,
                overwrite=True,
            )
        grid = {}
        for number, (by, bx, ys, xs) in enumerate(cores):
            ext = (
                slice(max(0, ys.start - halo), min(shape[0], ys.stop + halo)),
                slice(max(0, xs.start - halo), min(shape[1], xs.stop + halo)),
            )
            grid[(by, bx)] = number
            tasks.append(
                InstancesUnit(
                    name=row["image"],
                    out_url=url,
                    image_url=row["path"],
                    core=((ys.start, ys.stop), (xs.start, xs.stop)),
                    ext=((ext[0].start, ext[0].stop), (ext[1].start, ext[1].stop)),
                    block=(by, bx),
                    block_number=number,
                    single=single,
                    levels=levels,
                    shape=shape,
                    mode=mode,
                    n_classes=n_classes,
                    has_flows=has_flows,
                )  # fmt: skip
            )
        per_image[row["image"]] = {
            "url": url,
            "grid": grid,
            "levels": levels,
            "single": single,
            "cores": {(by, bx): (ys, xs) for by, bx, ys, xs in cores},
        }
    results = map_units(
        instances_unit, tasks, stage="instances", names=[f"{t.name}-{t.block[0]}-{t.block[1]}" for t in tasks],
        client=client, progress=progress, config=config,
    ).results  # fmt: skip
    by_image: dict[str, list] = {}
    for r in results:
        by_image.setdefault(r["image"], []).append(r)

    relabel_tasks = []
    tables = []
    summary: dict[str, dict[str, Any]] = {}
    for name, rs in by_image.items():
        meta = per_image[name]
        parts = [r["partials"] for r in rs]
        if not meta["single"]:
            faces = {tuple(r["block"]): r["faces"] for r in rs}
            pairs = [
                match_neighbours(faces[a], faces[b], axis=ax, mode=mode)
                for a in faces
                for ax, b in ((0, (a[0] + 1, a[1])), (1, (a[0], a[1] + 1)))
                if b in faces
            ]
            pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.uint64)
            ids_sorted, final = merge_pairs(pairs, np.concatenate([r["ids"] for r in rs]))
            ldir = pred_dir / "manifest_instances" / name
            ldir.mkdir(parents=True, exist_ok=True)
            for (by, bx), number in meta["grid"].items():
                bids, bfinal = block_lookup(ids_sorted, final, number)
                np.savez(ldir / f"{by}_{bx}.npz", ids=bids, final=bfinal)
                ys, xs = meta["cores"][(by, bx)]
                relabel_tasks.append(
                    RelabelUnit(
                        meta["url"],
                        str(ldir / f"{by}_{bx}.npz"),
                        ((ys.start, ys.stop), (xs.start, xs.stop)),
                        meta["levels"],
                    )  # fmt: skip
                )
            for p in parts:  # the stitch kernel's lookup, not a Python dict per instance
                p["label"] = relabel(p["label"].to_numpy(np.uint64), ids_sorted, final).astype(
                    np.uint64
                )
        t = combine_instance_partials(parts)
        t.insert(0, "image", name)
        tables.append(t)
        removed: dict[str, int] = {}
        for r in rs:
            for k, v in r["info"].get("cellpose_removed_pixels", {}).items():
                removed[k] = removed.get(k, 0) + v
        summary[name] = {
            "n_instances": len(t),
            "cellpose_removed_pixels": json.dumps(removed) if removed else "",
        }
    map_units(relabel_unit, relabel_tasks, stage="relabel", client=client)
    for meta in per_image.values():
        if not meta["single"]:
            remove_location(f"{meta['url']}/{_PROVISIONAL}")
    inst = (
        pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["image", "label"])
    )
    write_table(inst, pred_dir / "instances", ["parquet", "csv"])
    per_image_table = pd.DataFrame(
        {
            "image": list(images["image"]),
            "n_instances": [summary.get(n, {}).get("n_instances", np.nan) for n in images["image"]],
            "cellpose_removed_pixels": [
                summary.get(n, {}).get("cellpose_removed_pixels", "") for n in images["image"]
            ],
            "instance_method": config.method,
        }
    )
    # the prediction's own images table is left as predict wrote it: this stage owns only its
    # files (labels/instances, instances.*, instances_images.*)
    write_table(per_image_table, pred_dir / "instances_images", ["parquet", "csv"])
    merged = images.drop(
        columns=[c for c in per_image_table.columns if c != "image" and c in images]
    )
    merged = merged.merge(per_image_table, on="image", how="left")
    return {"images": merged, "instances": inst, "n_units": len(tasks)}
