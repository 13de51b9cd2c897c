"""The instance stage over a prediction output (orchestration layer).

Per (image, block) unit: read ŷ (and flows / probabilities) of the block core + halo from the
prediction and run the method. A single-block image is finished in its unit: final labels and
its part of the instance table. A block of a larger image writes provisional 64-bit ids for its
core, its face strips and its partial sums to the stage's work folder; then one stitch unit per
image (on a worker) merges the strips of neighbouring blocks, saves each block's slice of the
relabel table and writes the image's part of the table, and relabel units map their own cores.
The driver only ever receives small per-image summaries: its memory does not grow with the
number of instances, and no more than one image's face data is held anywhere at a time.

Same pass: ``predict(..., instances=...)`` hands an :class:`InPass` to its units, and a unit that
predicts a whole image (one block) separates its instances right there from the arrays it holds
(:func:`instances_in_pass`), so the archive and the probabilities are read once. Its manifest
record carries the instance request's token (:data:`PASS_FILE`); this stage then runs only the
images no unit finished for the same request (:func:`in_pass_results`).

Written into the prediction output (and nothing else there): ``images/<name>.zarr/labels/
instances`` (uint32, multiscale), ``instances/part-<image>.parquet`` (one row per instance, a
partitioned table: :mod:`scaleseg.tables`), ``instances.csv`` when asked or small, and
``instances_images.parquet`` / ``.csv`` (``n_instances``, ``cellpose_removed_pixels`` and the
method per image).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..config import InstancesConfig

__all__ = [
    "INSTANCES_TABLE",
    "PASS_FILE",
    "InPass",
    "InstancesUnit",
    "RelabelUnit",
    "StitchUnit",
    "begin_in_pass",
    "has_instances",
    "in_pass_results",
    "instances_in_pass",
    "instances_unit",
    "iter_instances",
    "read_instances",
    "relabel_unit",
    "run_instances",
    "stitch_unit",
]

_PROVISIONAL = "_instances_provisional"
INSTANCES_TABLE = "instances"
"""Folder of the partitioned instance table in a prediction output."""
_WORK = "manifest_instances"
_SIDES = ("top", "bottom", "left", "right")
PASS_FILE = "instances_pass.json"
"""Token of the instance request whose results predict's own units may carry (same pass); a new
token for every new or replaced request, the same one while it resumes."""
_IMAGES_TABLE = "instances_images"


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
    parts_dir: str
    work_dir: str


@dataclass(frozen=True)
class StitchUnit:
    """Stitch one multi-block image: match the blocks' face strips, write each block's relabel
    table and the image's part of the instance table."""

    name: str
    work_dir: str
    parts_dir: str
    blocks: tuple[tuple[tuple[int, int], int], ...]
    mode: str


@dataclass(frozen=True)
class InPass:
    """Instance separation inside predict's single-block units, right after the prediction.

    Attributes
    ----------
    config : InstancesConfig
    token : str
        The request's token (:func:`begin_in_pass`), recorded with each result.
    parts_dir : str
        The partitioned instance table (``instances/``).
    n_classes : int
    """

    config: InstancesConfig
    token: str
    parts_dir: str
    n_classes: int


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
    from ._stitch import face_strips, provisional_ids
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
    if task.single:  # the whole image: ext == core
        n = _finish_single(task.name, url, task.levels, labels[inner], semantic=semantic[inner],
                           pixels=pixels, uncertainty=unc, n_classes=task.n_classes,
                           parts_dir=task.parts_dir)  # fmt: skip
        return {"image": task.name, "block": task.block, "info": info, "n_instances": n,
                "seconds": time.perf_counter() - t0}  # fmt: skip
    prov = provisional_ids(labels, task.block_number)
    open_group(f"{url}/{_PROVISIONAL}", mode="r+")["s0"][core[0], core[1]] = prov[inner]
    partials = instance_partials(
        prov[inner],
        offset=(core[0].start, core[1].start),
        image_shape=tuple(task.shape),
        semantic=semantic[inner],
        image=pixels,
        uncertainty=unc,
        n_classes=task.n_classes,
    )
    faces = face_strips(
        prov, core=inner, halo=config.halo, origin=(ext[0].start, ext[1].start), mode=task.mode
    )
    _save_block(Path(task.work_dir), task.block, faces, partials)
    return {"image": task.name, "block": task.block, "info": info,
            "seconds": time.perf_counter() - t0}  # fmt: skip


def _finish_single(
    name: str, url: str, levels: int, labels: np.ndarray, *, semantic, pixels, uncertainty,
    n_classes: int, parts_dir: str,
) -> int:  # fmt: skip
    """Final labels and the table part of an image done in one block; its number of instances."""
    from ..blocks import write_block
    from ..io import open_group
    from ..tables import write_part
    from ._tables import combine_instance_partials, instance_partials

    core = (slice(0, labels.shape[0]), slice(0, labels.shape[1]))
    group = open_group(f"{url}/labels/instances", mode="r+")
    write_block([group[f"s{i}"] for i in range(levels)], labels, core, labels=True)
    partials = instance_partials(labels, offset=(0, 0), image_shape=labels.shape,
                                 semantic=semantic, image=pixels, uncertainty=uncertainty,
                                 n_classes=n_classes)  # fmt: skip
    table = combine_instance_partials([partials])
    table.insert(0, "image", name)
    write_part(table, parts_dir, name)  # last: a part on disk means the labels are there
    return len(table)


def instances_in_pass(
    task: InPass,
    *,
    name: str,
    url: str,
    chunks: tuple[int, int],
    levels: int,
    shard_chunks: tuple[int, int] | None,
    semantic: np.ndarray,
    pixels: np.ndarray,
    uncertainty: np.ndarray,
    flows: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
) -> dict[str, Any]:
    """Instances of a whole image from the arrays its predict unit holds (cast to the stored
    dtypes by the caller, so the result equals this stage's own run over the stored outputs).

    Returns the record predict keeps in its manifest: ``token``, ``n_instances``,
    ``cellpose_removed_pixels``.
    """
    from ..io import create_labels

    labels, info = _run_method(task.config, semantic, flows, probabilities)
    create_labels(url, "instances", dtype="uint32", chunks=chunks, n_levels=levels,
                  shard_chunks=shard_chunks, overwrite=True)  # fmt: skip
    n = _finish_single(name, url, levels, labels, semantic=semantic, pixels=pixels,
                       uncertainty=uncertainty, n_classes=task.n_classes,
                       parts_dir=task.parts_dir)  # fmt: skip
    return {"token": task.token, "n_instances": n,
            "cellpose_removed_pixels": info.get("cellpose_removed_pixels", {})}  # fmt: skip


def _pass_token(pred_dir: Path) -> str | None:
    try:
        return json.loads((pred_dir / PASS_FILE).read_text()).get("token")
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        return None


def _clear_outputs(pred_dir: Path, keep=()) -> None:
    """Remove this stage's files of an earlier run, except the table parts of the images in
    ``keep`` (done in predict's pass under the current token, which is kept with them)."""
    from ..files import remove_location
    from ..tables import part_path

    parts = pred_dir / INSTANCES_TABLE
    old = [pred_dir / _WORK, pred_dir / "instances.parquet", pred_dir / "instances.csv",
           pred_dir / f"{_IMAGES_TABLE}.parquet", pred_dir / f"{_IMAGES_TABLE}.csv"]  # fmt: skip
    if not keep:
        old += [pred_dir / PASS_FILE, parts]
    elif parts.is_dir():
        kept = {part_path(parts, name).name for name in keep}
        old += [p for p in parts.iterdir() if p.name not in kept]
    for path in old:
        if path.exists():
            remove_location(path)
    parts.mkdir(exist_ok=True)


def begin_in_pass(pred_dir: str | Path, *, fresh: bool) -> str:
    """Prepare ``pred_dir`` for instances made in predict's own units and return the token of
    the request: a new one (and this stage's earlier files removed) when ``fresh`` -- a new or
    replaced request --, else the stored one, so that a resumed run keeps what its units did."""
    from ..files import atomic_write_json

    pred_dir = Path(pred_dir)
    token = None if fresh else _pass_token(pred_dir)
    if token is None:
        _clear_outputs(pred_dir)
        token = uuid.uuid4().hex
        atomic_write_json(pred_dir / PASS_FILE, {"token": token})
    else:  # the request is not finished any more: the per-image table is written again
        for suffix in (".parquet", ".csv"):
            (pred_dir / f"{_IMAGES_TABLE}{suffix}").unlink(missing_ok=True)
        (pred_dir / INSTANCES_TABLE).mkdir(exist_ok=True)
    return token


def in_pass_results(pred_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The images whose instances predict's units made for the current request (their
    manifest record carries its token, their table part exists): name -> record."""
    from ..tables import part_path
    from ..unitlog import UnitLog

    pred_dir = Path(pred_dir)
    token = _pass_token(pred_dir)
    if token is None:
        return {}
    parts = pred_dir / INSTANCES_TABLE
    found = {}
    for (name, block), rec in UnitLog(pred_dir / "manifest").read().items():
        done = rec.get("instances") if block else None
        if done and done.get("token") == token and part_path(parts, name).is_file():
            found[name] = done
    return found


def _block_stem(work_dir: Path, block: tuple[int, int]) -> Path:
    return work_dir / f"{block[0]}_{block[1]}"


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Arrays as one ``.npz`` file, written atomically (never executable content)."""
    from ..files import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, write)


def _save_block(work_dir: Path, block, faces: dict, partials) -> None:
    """A block's face strips (with its core ids, ``faces["ids"]``) and partial sums, written
    atomically for its stitch unit."""
    from ..files import atomic_write

    stem = _block_stem(work_dir, block)
    stem.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"ids": faces["ids"]}
    for side in _SIDES:
        for part in ("halo", "core"):
            strip = faces[side][part]
            arrays[f"{side}_{part}"] = strip.labels
            arrays[f"{side}_{part}_offset"] = np.asarray(strip.offset, dtype=np.int64)
    _save_npz(stem.with_suffix(".faces.npz"), **arrays)
    atomic_write(stem.with_suffix(".partials.parquet"), lambda tmp: partials.to_parquet(tmp))


def _load_faces(work_dir: Path, block) -> dict:
    from ._stitch import Strip

    with np.load(_block_stem(work_dir, block).with_suffix(".faces.npz")) as z:
        faces: dict = {"ids": z["ids"]}
        for side in _SIDES:
            faces[side] = {
                part: Strip(z[f"{side}_{part}"], tuple(int(v) for v in z[f"{side}_{part}_offset"]))
                for part in ("halo", "core")
            }
    return faces


def stitch_unit(task: StitchUnit) -> dict[str, Any]:
    """Merge the blocks of one image (on a worker): exact labels across faces, one relabel
    table per block (``<by>_<bx>.lookup.npz``), and the image's part of the instance table."""
    import pandas as pd

    from ..tables import write_part
    from ._stitch import block_lookup, match_neighbours, merge_pairs, relabel
    from ._tables import combine_instance_partials

    work = Path(task.work_dir)
    numbers = {tuple(b): n for b, n in task.blocks}
    faces = {b: _load_faces(work, b) for b in numbers}
    pairs = [
        match_neighbours(faces[a], faces[b], axis=ax, mode=task.mode)
        for a in faces
        for ax, b in ((0, (a[0] + 1, a[1])), (1, (a[0], a[1] + 1)))
        if b in faces
    ]
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.uint64)
    ids_sorted, final = merge_pairs(pairs, np.concatenate([f["ids"] for f in faces.values()]))
    del faces
    parts = []
    for block, number in numbers.items():
        bids, bfinal = block_lookup(ids_sorted, final, number)
        _save_npz(_block_stem(work, block).with_suffix(".lookup.npz"), ids=bids, final=bfinal)
        p = pd.read_parquet(_block_stem(work, block).with_suffix(".partials.parquet"))
        # the stitch kernel's lookup, not a Python dict per instance
        p["label"] = relabel(p["label"].to_numpy(np.uint64), ids_sorted, final).astype(np.uint64)
        parts.append(p)
    table = combine_instance_partials(parts)
    table.insert(0, "image", task.name)
    write_part(table, task.parts_dir, task.name)
    return {"image": task.name, "n_instances": len(table)}


def relabel_unit(task: RelabelUnit) -> int:
    """Map one block's provisional core to final labels (reading only its own table)."""
    from ..blocks import write_block
    from ..io import open_group
    from ._stitch import relabel

    url = task.out_url
    core = (slice(*task.core[0]), slice(*task.core[1]))
    with np.load(task.lookup) as table:
        ids, final_ids = table["ids"], table["final"]
    prov = open_group(f"{url}/{_PROVISIONAL}", mode="r")["s0"][core[0], core[1]]
    final = relabel(prov, ids, final_ids)
    group = open_group(f"{url}/labels/instances", mode="r+")
    write_block([group[f"s{i}"] for i in range(task.levels)], final, core, labels=True)
    return int(final.max())


def _blocks(url: str, block_shape) -> tuple[list, tuple[int, int], int, tuple[int, int], tuple]:
    from ..blocks import plan_blocks
    from ..io import open_group

    sem = open_group(f"{url}/labels/semantic")
    arr0 = sem["s0"]
    shape = tuple(int(s) for s in arr0.shape[-2:])
    chunks = tuple(int(c) for c in arr0.chunks[-2:])
    levels = len([k for k in sem.array_keys() if k.startswith("s")])
    plan = plan_blocks(shape, block_shape=block_shape, chunks=chunks)
    return plan.cores(), shape, levels, chunks, plan.chunks_per_block


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
    csv: bool | None = None,
    in_pass: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Instance segmentation of every successfully predicted image of ``pred_dir``.

    ``n_classes`` and ``has_flows`` describe the ensemble that made the prediction. ``csv``:
    also write ``instances.csv`` (True), never (False), or when the table has at most
    :data:`~scaleseg.tables.CSV_ROW_LIMIT` rows (None). ``in_pass``: images already done in
    predict's own units for this request (:func:`in_pass_results`); only the others run.

    Returns
    -------
    dict
        ``images`` (the prediction's images table with the instance columns), ``table`` (the
        folder of the partitioned instance table), ``n_instances``, ``n_units``, ``in_pass``
        (images done in predict's pass).
    """
    import pandas as pd

    from ..executor import map_units
    from ..files import remove_location
    from ..io import create_labels, create_multiscale, list_labels
    from ..tables import CSV_ROW_LIMIT, write_parts_csv, write_table

    pred_dir = Path(pred_dir)
    in_pass = dict(in_pass or {})
    table_file = pred_dir / "images.parquet"
    if not table_file.is_file():
        raise FileNotFoundError(f"{pred_dir}: not a prediction output (no images.parquet)")
    images = pd.read_parquet(table_file)
    # connected components merge exactly across touching faces; methods whose result depends on
    # context merge by overlap in the halo
    mode = "touch" if config.method == "components" else "iou"
    halo = int(config.halo)
    ok_rows = images[images["status"] == "ok"]
    in_pass = {k: v for k, v in in_pass.items() if k in set(ok_rows["image"])}
    todo = ok_rows[~ok_rows["image"].isin(list(in_pass))]
    if not overwrite:  # before anything is removed
        for url in todo["output"]:
            if "instances" in list_labels(url):
                raise FileExistsError(
                    f"{url}/labels/instances exists (use --overwrite to replace it)"
                )
    parts_dir, work_root = pred_dir / INSTANCES_TABLE, pred_dir / _WORK
    _clear_outputs(pred_dir, keep=in_pass)  # this stage's own files of an earlier run
    tasks, stitches, per_image = [], [], {}
    for _, row in todo.iterrows():
        url, name = row["output"], row["image"]
        cores, shape, levels, chunks, per_shard = _blocks(url, block_shape)
        create_labels(url, "instances", dtype="uint32", chunks=chunks, n_levels=levels,
                      shard_chunks=per_shard, overwrite=True)  # fmt: skip
        single = len(cores) == 1
        if not single:
            create_multiscale(f"{url}/{_PROVISIONAL}", shape=shape, dtype="uint64", axes="yx",
                              chunks=chunks, n_levels=1, shard_chunks=per_shard,
                              overwrite=True)  # fmt: skip
        work = work_root / name
        for number, (by, bx, ys, xs) in enumerate(cores):
            ext = (
                (max(0, ys.start - halo), min(shape[0], ys.stop + halo)),
                (max(0, xs.start - halo), min(shape[1], xs.stop + halo)),
            )
            tasks.append(
                InstancesUnit(
                    name=name,
                    out_url=url,
                    image_url=row["path"],
                    core=((ys.start, ys.stop), (xs.start, xs.stop)),
                    ext=ext,
                    block=(by, bx),
                    block_number=number,
                    single=single,
                    levels=levels,
                    shape=shape,
                    mode=mode,
                    n_classes=n_classes,
                    has_flows=has_flows,
                    parts_dir=str(parts_dir),
                    work_dir=str(work),
                )  # fmt: skip
            )
        if not single:
            stitches.append(
                StitchUnit(name, str(work), str(parts_dir),
                           tuple(((by, bx), n) for n, (by, bx, _, _) in enumerate(cores)), mode)
            )  # fmt: skip
        per_image[name] = {"url": url, "levels": levels, "cores": cores, "work": work}
    results = map_units(
        instances_unit, tasks, stage="instances", names=[f"{t.name}-{t.block[0]}-{t.block[1]}" for t in tasks],
        client=client, progress=progress, config=config,
    ).results  # fmt: skip
    counts = {r["image"]: r["n_instances"] for r in results if "n_instances" in r}
    counts.update({name: done["n_instances"] for name, done in in_pass.items()})
    removed: dict[str, dict[str, int]] = {}
    for r in [*results, *({"image": k, "info": v} for k, v in in_pass.items())]:
        for k, v in r["info"].get("cellpose_removed_pixels", {}).items():
            img = removed.setdefault(r["image"], {})
            img[k] = img.get(k, 0) + v
    del results
    stitched = map_units(stitch_unit, stitches, stage="stitch", names=[u.name for u in stitches],
                         client=client).results  # fmt: skip
    counts.update({r["image"]: r["n_instances"] for r in stitched})
    relabel_tasks = [
        RelabelUnit(meta["url"], str(_block_stem(meta["work"], (by, bx)).with_suffix(".lookup.npz")),
                    ((ys.start, ys.stop), (xs.start, xs.stop)), meta["levels"])
        for u in stitches
        for meta in [per_image[u.name]]
        for by, bx, ys, xs in meta["cores"]
    ]  # fmt: skip
    map_units(relabel_unit, relabel_tasks, stage="relabel", client=client)
    for u in stitches:
        remove_location(f"{per_image[u.name]['url']}/{_PROVISIONAL}")
    if work_root.exists():
        remove_location(work_root)
    n_total = int(sum(counts.values()))
    if csv or (csv is None and n_total <= CSV_ROW_LIMIT):
        write_parts_csv(parts_dir, pred_dir / "instances.csv")
    per_image_table = pd.DataFrame(
        {
            "image": list(images["image"]),
            "n_instances": [counts.get(n, np.nan) for n in images["image"]],
            "cellpose_removed_pixels": [
                json.dumps(removed[n]) if removed.get(n) else "" for n in images["image"]
            ],
            "instance_method": config.method,
        }
    )
    # the prediction's own images table is left as predict wrote it: this stage owns only its
    # files (labels/instances, instances/, instances.csv, instances_images.*)
    write_table(per_image_table, pred_dir / _IMAGES_TABLE, ["parquet", "csv"])
    merged = images.drop(
        columns=[c for c in per_image_table.columns if c != "image" and c in images]
    )
    merged = merged.merge(per_image_table, on="image", how="left")
    return {"images": merged, "table": parts_dir, "n_instances": n_total, "n_units": len(tasks),
            "in_pass": len(in_pass)}  # fmt: skip


def _legacy_table(pred_dir: Path) -> Path | None:
    path = pred_dir / "instances.parquet"  # a single file, written before the partitioned table
    return path if path.is_file() else None


def has_instances(pred_dir: str | Path) -> bool:
    """Whether a prediction output holds an instance table."""
    pred_dir = Path(pred_dir)
    return (pred_dir / INSTANCES_TABLE).is_dir() or _legacy_table(pred_dir) is not None


def read_instances(pred_dir: str | Path, *, images=None, columns=None):  # -> pandas.DataFrame
    """Instance rows of a prediction output, only of ``images`` / ``columns`` when given (only
    their part files are opened). Reads the older single-file ``instances.parquet`` too."""
    import pandas as pd

    from ..tables import read_parts

    pred_dir = Path(pred_dir)
    legacy = _legacy_table(pred_dir)
    if legacy is not None and not (pred_dir / INSTANCES_TABLE).is_dir():
        df = pd.read_parquet(legacy, columns=None if columns is None else ["image", *columns])
        df = df[df["image"].isin(list(images))] if images is not None else df
        return df[list(columns)] if columns is not None else df
    if not has_instances(pred_dir):
        raise FileNotFoundError(
            f"{pred_dir}: no instance table (run `scaleseg instances` or predict --instances)"
        )
    return read_parts(pred_dir / INSTANCES_TABLE, images=images, columns=columns)


def iter_instances(pred_dir: str | Path, *, columns=None, batch_rows: int = 1_000_000):
    """Stream the instance rows of a prediction output in frames of about ``batch_rows``."""
    from ..tables import iter_parts

    pred_dir = Path(pred_dir)
    if not (pred_dir / INSTANCES_TABLE).is_dir():
        yield read_instances(pred_dir, columns=columns)
        return
    yield from iter_parts(pred_dir / INSTANCES_TABLE, columns=columns, batch_rows=batch_rows)
