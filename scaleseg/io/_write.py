"""Writing OME-Zarr images, multiscale label images and per-image result arrays.

All writes are chunk aligned: dask chunks equal the zarr chunks before anything is stored, and
pyramid levels are computed block by block (exact, because only the last block of an axis can
have an odd size). Metadata is written by ome-zarr, never by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.writer import (
    add_metadata,
    write_label_metadata,
    write_multiscale,
    write_multiscales_metadata,
)

from ..executor import current_worker
from ..files import remove_location
from ._pyramid import downsample_image, downsample_labels, level_shapes
from ._read import ome_attrs
from ._store import join_url, location_exists, open_group

__all__ = [
    "ngff_format",
    "write_image",
    "write_labels",
    "create_labels",
    "create_multiscale",
    "remove_location",
]


def ngff_format(version: str):
    """The ome-zarr ``Format`` for an NGFF version: ``"0.4"`` (zarr v2) or ``"0.5"`` (zarr v3)."""
    if version == "0.4":
        return FormatV04()
    if version == "0.5":
        return FormatV05()
    raise ValueError(f"unsupported NGFF version {version!r} (use '0.4' or '0.5')")


def _chunks_for(shape: tuple[int, ...], axes: str, chunks_yx: Sequence[int]) -> tuple[int, ...]:
    spatial = dict(zip("yx", chunks_yx))
    return tuple(min(shape[i], spatial.get(a, 1)) for i, a in enumerate(axes))


def _dask_pyramid(
    data: np.ndarray | da.Array, axes: str, chunks: tuple[int, ...], n_levels: int, labels: bool
) -> list[da.Array]:
    """Pyramid levels as dask arrays, each chunked exactly like its zarr target."""
    down = downsample_labels if labels else downsample_image
    if isinstance(data, da.Array):
        level = data.rechunk(chunks)
    else:
        level = da.from_array(np.asarray(data), chunks=chunks)
    shapes = level_shapes(level.shape, n_levels)
    levels = [level]
    for shape in shapes[1:]:
        if min(shape[-2:]) < 1:
            break
        prev = levels[-1]
        new_chunks = prev.chunks[:-2] + tuple(
            tuple((c + 1) // 2 for c in axis_chunks) for axis_chunks in prev.chunks[-2:]
        )
        nxt = prev.map_blocks(down, chunks=new_chunks, dtype=prev.dtype)
        levels.append(nxt.rechunk(_chunks_for(nxt.shape, axes, chunks[-2:])))
    return levels


def _store_pyramid(pyramid: list[da.Array], group: zarr.Group, fmt, axes: list[str], **kw) -> None:
    """Write levels + multiscales metadata through ome-zarr, computing locally.

    Inside a dask worker the writes run synchronously in the task (no nested graphs on the
    cluster); elsewhere a local thread pool is used.
    """
    import dask

    delayed = write_multiscale(
        pyramid,
        group,
        fmt=fmt,
        axes=axes,
        storage_options=[{"chunks": lvl.chunksize} for lvl in pyramid],
        compute=False,
        **kw,
    )
    dask.compute(*delayed, scheduler="synchronous" if current_worker() is not None else "threads")


def _prepare_target(url: str, *, overwrite: bool) -> None:
    if location_exists(url):
        if not overwrite:
            raise FileExistsError(
                f"{url} already exists (use overwrite / --overwrite to replace it)"
            )
        remove_location(url)


def write_image(
    url: str | Path,
    image: np.ndarray | da.Array,
    *,
    axes: str = "cyx",
    chunks: Sequence[int] = (512, 512),
    n_levels: int = 3,
    ngff_version: str = "0.5",
    channel_names: Sequence[str] | None = None,
    attrs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Write an image as a multiscale OME-Zarr image group.

    Parameters
    ----------
    url : path or URL
        The image group to create. Must not exist unless ``overwrite``.
    image : (C, Y, X) ndarray or dask array
        Any axes string is accepted through ``axes`` (e.g. ``"yx"``, ``"tczyx"``).
    chunks : (int, int)
        Chunk shape in ``(y, x)``; other axes are chunked with size 1.
    n_levels : int
        Pyramid levels including full resolution (2x downsampling per level).
    channel_names : list of str, optional
        Written as omero channel labels.
    attrs : dict, optional
        Extra attributes stored under the ``scaleseg`` key of the group.

    Returns
    -------
    str
        ``url``.
    """
    url = str(url)
    if image.ndim != len(axes):
        raise ValueError(f"{url}: image has {image.ndim} dimensions but axes {axes!r}")
    _prepare_target(url, overwrite=overwrite)
    fmt = ngff_format(ngff_version)
    chunk_shape = _chunks_for(tuple(image.shape), axes, chunks)
    pyramid = _dask_pyramid(image, axes, chunk_shape, n_levels, labels=False)
    group = open_group(url, mode="w", zarr_format=fmt.zarr_format)
    metadata: dict[str, Any] = {}
    if channel_names is not None:
        n_c = image.shape[axes.index("c")] if "c" in axes else 1
        if len(channel_names) != n_c:
            raise ValueError(f"{url}: {len(channel_names)} channel names for {n_c} channels")
        metadata["omero"] = {
            "channels": [{"label": str(n), "active": True} for n in channel_names],
        }
    _store_pyramid(pyramid, group, fmt, list(axes), metadata=metadata)
    if attrs:
        group.attrs["scaleseg"] = attrs
    return url


def write_labels(
    image_url: str | Path,
    name: str,
    labels: np.ndarray | da.Array,
    *,
    chunks: Sequence[int] = (512, 512),
    n_levels: int | None = None,
    properties: list[dict[str, Any]] | None = None,
    source: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Write a multiscale label image to ``<image>/labels/<name>`` with image-label metadata.

    Parameters
    ----------
    image_url : path or URL
        An existing OME-Zarr image; its NGFF version is used.
    labels : (Y, X) ndarray or dask array of unsigned integers
        0 = background. Must match the image's ``(y, x)`` shape.
    n_levels : int, optional
        Default: as many levels as the image has.
    """
    image_url = str(image_url)
    group = open_group(image_url, mode="r+")
    attrs, version = ome_attrs(group)
    if "multiscales" not in attrs:
        raise ValueError(f"{image_url} is not an OME-Zarr image")
    fmt = ngff_format("0.4" if group.metadata.zarr_format == 2 else "0.5")
    ms = attrs["multiscales"][0]
    img_axes = [a["name"] if isinstance(a, dict) else a for a in ms["axes"]]
    img_shape = group[ms["datasets"][0]["path"]].shape
    yx = tuple(img_shape[img_axes.index(a)] for a in "yx")
    if labels.ndim != 2 or tuple(labels.shape) != yx:
        raise ValueError(
            f"{image_url}: label image {name!r} has shape {tuple(labels.shape)}, "
            f"the image is {yx[0]}x{yx[1]} (y, x)"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{image_url}: label image {name!r} has non-integer dtype {labels.dtype}")
    lab_axes = [a for a in img_axes if a != "c"]
    lead = tuple(1 for _ in lab_axes[:-2])
    data = labels.reshape(lead + yx) if lead else labels
    label_url = join_url(image_url, "labels", name)
    if location_exists(label_url):
        if not overwrite:
            raise FileExistsError(f"{label_url} already exists (use --overwrite to replace it)")
        del group[f"labels/{name}"]
    n_levels = n_levels or len(ms["datasets"])
    axes_str = "".join(lab_axes)
    pyramid = _dask_pyramid(
        data, axes_str, _chunks_for(data.shape, axes_str, chunks), n_levels, True
    )
    sub = group.require_group(f"labels/{name}")
    _store_pyramid(pyramid, sub, fmt, lab_axes, name=name)
    label_meta: dict[str, Any] = {}
    if source:
        label_meta["source"] = source
    labels_group = group["labels"]
    existing = [n for n in ome_attrs(labels_group)[0].get("labels", []) if n != name]
    add_metadata(labels_group, {"labels": existing}, fmt=fmt)
    write_label_metadata(group["labels"], name, properties=properties, fmt=fmt, **label_meta)
    return label_url


def create_multiscale(
    url: str | Path,
    *,
    shape: tuple[int, ...],
    dtype: Any,
    axes: str = "cyx",
    chunks: Sequence[int] = (512, 512),
    n_levels: int = 1,
    ngff_version: str = "0.5",
    fill_value: Any = 0,
    halve_chunks: bool = False,
    channel_names: Sequence[str] | None = None,
    shard_chunks: Sequence[int] | None = None,
    overwrite: bool = False,
) -> list[zarr.Array]:
    """Create an empty multiscale image (metadata and arrays) to be filled chunk by chunk.

    Workers then write whole chunks into the returned arrays' regions, so no two units ever
    touch the same chunk. With ``halve_chunks`` the chunk shape halves with every level, so a
    unit whose region is whole chunks at full resolution also writes whole chunks at every
    lower level.

    ``shard_chunks`` (zarr v3 / NGFF 0.5 only; ignored for 0.4): ``(ky, kx)`` chunks per shard
    at every level, so the files per array stop growing with the image -- a shard is one file
    holding ``ky x kx`` chunks. Give the chunks of one work unit's block: a unit then writes
    each shard it touches whole and no two units share a shard. The chunk grid is unchanged.

    Returns
    -------
    list of zarr.Array
        One array per level, full resolution first (paths ``s0``, ``s1``, ...).
    """
    url = str(url)
    _prepare_target(url, overwrite=overwrite)
    fmt = ngff_format(ngff_version)
    group = open_group(url, mode="w", zarr_format=fmt.zarr_format)
    shapes = level_shapes(tuple(shape), n_levels)
    arrays = []
    for i, s in enumerate(shapes):
        kwargs: dict[str, Any] = {}
        if fmt.zarr_format == 3:
            kwargs["dimension_names"] = list(axes)
        else:
            kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
        level_chunks = [max(1, c >> i) for c in chunks] if halve_chunks else list(chunks)
        chunk_shape = _chunks_for(s, axes, level_chunks)
        if shard_chunks is not None and fmt.zarr_format == 3:
            per = dict(zip("yx", (int(k) for k in shard_chunks)))
            kwargs["shards"] = tuple(
                c * max(1, min(per.get(a, 1), -(-n // c))) for c, n, a in zip(chunk_shape, s, axes)
            )
        arrays.append(
            group.create_array(
                f"s{i}",
                shape=s,
                chunks=chunk_shape,
                dtype=dtype,
                fill_value=fill_value,
                **kwargs,
            )
        )
    transforms = fmt.generate_coordinate_transformations(shapes)
    datasets = [{"path": f"s{i}", "coordinateTransformations": t} for i, t in enumerate(transforms)]
    metadata: dict[str, Any] = {}
    if channel_names is not None:
        metadata["omero"] = {"channels": [{"label": str(n), "active": True} for n in channel_names]}
    write_multiscales_metadata(
        group, datasets=datasets, fmt=fmt, axes=list(axes), metadata=metadata
    )
    return arrays


def create_labels(
    image_url: str | Path,
    name: str,
    *,
    dtype: Any,
    chunks: Sequence[int] = (512, 512),
    n_levels: int = 1,
    halve_chunks: bool = True,
    properties: list[dict[str, Any]] | None = None,
    shard_chunks: Sequence[int] | None = None,
    overwrite: bool = False,
) -> list[zarr.Array]:
    """Create an empty multiscale label image ``<image>/labels/<name>`` (filled chunk by chunk).

    The label image takes the ``(y, x)`` shape and the NGFF version of the image; its axes are
    the image's without ``c``. ``shard_chunks``: as :func:`create_multiscale`.
    """
    image_url = str(image_url)
    group = open_group(image_url, mode="r+")
    attrs, _ = ome_attrs(group)
    if "multiscales" not in attrs:
        raise ValueError(f"{image_url} is not an OME-Zarr image")
    ms = attrs["multiscales"][0]
    img_axes = [a["name"] if isinstance(a, dict) else a for a in ms["axes"]]
    img_shape = group[ms["datasets"][0]["path"]].shape
    lab_axes = [a for a in img_axes if a != "c"]
    shape = tuple(1 if a not in "yx" else img_shape[img_axes.index(a)] for a in lab_axes)
    version = "0.4" if group.metadata.zarr_format == 2 else "0.5"
    fmt = ngff_format(version)
    labels_group = group.require_group("labels")
    arrays = create_multiscale(
        join_url(image_url, "labels", name),
        shape=shape,
        dtype=dtype,
        axes="".join(lab_axes),
        chunks=chunks,
        n_levels=n_levels,
        ngff_version=version,
        halve_chunks=halve_chunks,
        shard_chunks=shard_chunks,
        overwrite=overwrite,
    )
    existing = [n for n in ome_attrs(labels_group)[0].get("labels", []) if n != name]
    add_metadata(labels_group, {"labels": existing}, fmt=fmt)
    write_label_metadata(labels_group, name, properties=properties, fmt=fmt)
    return arrays
