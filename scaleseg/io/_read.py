"""Lazy reading of OME-Zarr images (NGFF 0.4 / zarr v2 and 0.5 / zarr v3) and collections."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import xarray as xr
import zarr

from ._store import join_url, list_child_groups, open_group, safe_name, url_name

__all__ = [
    "ImageRef",
    "NotOmeZarrError",
    "ome_attrs",
    "read_multiscales",
    "open_image",
    "open_collection",
    "list_labels",
    "open_labels",
    "image_info",
    "to_cyx",
]


class NotOmeZarrError(ValueError):
    """A zarr group that carries no OME-Zarr multiscales (or plate) metadata."""


@dataclass(frozen=True)
class ImageRef:
    """A reference to one OME-Zarr image in a collection; no pixels are read.

    Attributes
    ----------
    url : str
        Location of the image group.
    name : str
        A unique, path-safe name within the collection (used for outputs).
    well, field : str or None, int or None
        Set for the fields of an HCS plate.
    """

    url: str
    name: str
    well: str | None = None
    field: int | None = None


def ome_attrs(group: zarr.Group) -> tuple[dict[str, Any], str | None]:
    """The OME attributes of a group and their NGFF version (``None`` when absent)."""
    attrs = dict(group.attrs)
    if "ome" in attrs and isinstance(attrs["ome"], dict):  # NGFF 0.5
        ome = dict(attrs["ome"])
        return ome, str(ome.get("version", "0.5"))
    if "multiscales" in attrs:
        version = attrs["multiscales"][0].get("version", "0.4")
        return attrs, str(version)
    if "plate" in attrs:
        return attrs, str(attrs["plate"].get("version", "0.4"))
    if "well" in attrs:
        return attrs, str(attrs["well"].get("version", "0.4"))
    if "labels" in attrs:
        return attrs, "0.4"
    return attrs, None


def read_multiscales(group: zarr.Group, *, url: str = "") -> dict[str, Any]:
    """Parse the multiscales metadata of an image group.

    Returns a dict with ``axes`` (list of names), ``paths`` (dataset paths, largest first),
    ``scales`` (per-level scale vectors), ``version`` and ``name``.
    """
    attrs, version = ome_attrs(group)
    ms = attrs.get("multiscales")
    if not ms:
        raise NotOmeZarrError(
            f"{url or group.path} is not an OME-Zarr image (no multiscales metadata)"
        )
    m = ms[0]
    axes_meta = m.get("axes")
    if axes_meta is None:  # NGFF <= 0.2 has no axes: 5-D tczyx
        axes = ["t", "c", "z", "y", "x"]
    else:
        axes = [a["name"] if isinstance(a, dict) else str(a) for a in axes_meta]
    paths, scales = [], []
    for ds in m["datasets"]:
        paths.append(ds["path"])
        scale = [1.0] * len(axes)
        for tr in ds.get("coordinateTransformations", []):
            if tr.get("type") == "scale":
                scale = [float(s) for s in tr["scale"]]
        scales.append(scale)
    unknown = [a for a in axes if a not in {"t", "c", "z", "y", "x"}]
    if unknown:
        raise ValueError(f"{url or group.path}: unknown axes {unknown} (expected t, c, z, y, x)")
    return {
        "axes": axes,
        "paths": paths,
        "scales": scales,
        "version": version,
        "name": m.get("name"),
    }


def _as_dataarray(group: zarr.Group, meta: dict, level: int, url: str) -> xr.DataArray:
    if not 0 <= level < len(meta["paths"]):
        raise ValueError(f"{url}: level {level} does not exist ({len(meta['paths'])} levels)")
    arr = group[meta["paths"][level]]
    if arr.ndim != len(meta["axes"]):
        raise ValueError(
            f"{url}/{meta['paths'][level]}: array has {arr.ndim} dimensions but the metadata "
            f"names {len(meta['axes'])} axes {meta['axes']}"
        )
    data = da.from_zarr(arr)
    dims = list(meta["axes"])
    attrs = {
        "url": url,
        "ngff_version": meta["version"],
        "level": level,
        "n_levels": len(meta["paths"]),
        "scale": meta["scales"][level],
    }
    out = xr.DataArray(data, dims=dims, attrs=attrs, name=url_name(url))
    if "c" not in dims:
        out = out.expand_dims("c", axis=max(0, dims.index("y") - ("z" in dims)))
    return out


def open_image(ref: ImageRef | str | Path, *, level: int = 0) -> xr.DataArray:
    """Open one OME-Zarr image lazily as a dask-backed :class:`xarray.DataArray`.

    The array keeps the axes named in the metadata and gains a ``c`` axis (size 1) when the
    image has none. Nothing is read but metadata.
    """
    url = ref.url if isinstance(ref, ImageRef) else str(ref)
    group = open_group(url)
    meta = read_multiscales(group, url=url)
    return _as_dataarray(group, meta, level, url)


def to_cyx(image: xr.DataArray) -> xr.DataArray:
    """Validate and squeeze an image to ``(c, y, x)`` (singleton ``t`` / ``z`` dropped)."""
    url = image.attrs.get("url", image.name)
    for ax in ("t", "z"):
        if ax in image.dims:
            if image.sizes[ax] != 1:
                raise ValueError(
                    f"{url}: axis {ax!r} has size {image.sizes[ax]}; only 2-D images "
                    "(t = z = 1) are supported"
                )
            image = image.isel({ax: 0})
    return image.transpose("c", "y", "x")


def list_labels(ref: ImageRef | str | Path) -> list[str]:
    """Names of the label images of an OME-Zarr image (``labels/<name>``)."""
    url = ref.url if isinstance(ref, ImageRef) else str(ref)
    group = open_group(url)
    if "labels" not in group:
        return []
    attrs, _ = ome_attrs(group["labels"])
    return list(dict.fromkeys(attrs.get("labels", [])))


def open_labels(ref: ImageRef | str | Path, name: str, *, level: int = 0) -> xr.DataArray:
    """Open ``labels/<name>`` of an image lazily, as ``(y, x)`` (singleton axes dropped)."""
    url = ref.url if isinstance(ref, ImageRef) else str(ref)
    names = list_labels(url)
    if name not in names:
        raise KeyError(f"{url} has no label image {name!r} (found: {', '.join(names) or 'none'})")
    lurl = join_url(url, "labels", name)
    group = open_group(lurl)
    meta = read_multiscales(group, url=lurl)
    arr = _as_dataarray(group, meta, level, lurl)
    drop = {d: 0 for d in arr.dims if d not in ("y", "x") and arr.sizes[d] == 1}
    return arr.isel(drop)


def _member_path(url: str, path: Any, what: str) -> str:
    """A well / field path from plate metadata, refused unless it stays inside the plate."""
    parts = str(path).split("/")
    if (
        not isinstance(path, str)
        or not path
        or path.startswith(("/", "\\"))
        or any(p in ("", ".", "..") or "\\" in p or ":" in p for p in parts)
    ):
        raise ValueError(f"{url}: {what} path {path!r} in the plate metadata leaves the plate")
    return path


def _plate_fields(url: str, group: zarr.Group, attrs: dict) -> list[ImageRef]:
    refs = []
    plate_name = safe_name(url_name(url).removesuffix(".zarr").removesuffix(".ome"))
    for well in attrs["plate"].get("wells", []):
        wpath = _member_path(url, well.get("path"), "well")
        wattrs, _ = ome_attrs(group[wpath])
        for i, img in enumerate(wattrs.get("well", {}).get("images", [])):
            _member_path(url, img.get("path"), f"field of well {wpath}")
            name = safe_name(f"{plate_name}_{wpath.replace('/', '')}_f{img['path']}")
            refs.append(ImageRef(join_url(url, wpath, img["path"]), name, well=wpath, field=i))
    return refs


def open_collection(url: str | Path) -> list[ImageRef]:
    """List the images of a collection without reading pixels.

    ``url`` may be a single OME-Zarr image, an HCS plate (its fields become images), or a
    folder / bucket prefix whose children are OME-Zarr images or plates.
    """
    url = str(url)
    try:
        group = open_group(url)
    except ValueError:
        group = None  # a plain folder of images
    if group is not None:
        attrs, _ = ome_attrs(group)
        if "multiscales" in attrs:
            return [ImageRef(url, _image_name(url))]
        if "plate" in attrs:
            return _plate_fields(url, group, attrs)
    refs: list[ImageRef] = []
    for child in list_child_groups(url):
        cgroup = open_group(child)
        attrs, _ = ome_attrs(cgroup)
        if "multiscales" in attrs:
            refs.append(ImageRef(child, _image_name(child)))
        elif "plate" in attrs:
            refs.extend(_plate_fields(child, cgroup, attrs))
    if not refs:
        raise NotOmeZarrError(
            f"{url}: no OME-Zarr images found (not an image, plate or collection)"
        )
    names = [r.name for r in refs]
    if len(set(names)) != len(names):
        raise ValueError(f"{url}: image names are not unique after sanitising: {names}")
    return refs


def _image_name(url: str) -> str:
    name = url_name(url)
    for suffix in (".zarr", ".ome"):
        name = name.removesuffix(suffix)
    return safe_name(name)


def image_info(ref: ImageRef | str | Path) -> dict[str, Any]:
    """Shape, axes, dtype, chunks, levels and label groups of one image (metadata only)."""
    url = ref.url if isinstance(ref, ImageRef) else str(ref)
    group = open_group(url)
    meta = read_multiscales(group, url=url)
    levels = []
    for path in meta["paths"]:
        arr = group[path]
        levels.append({"path": path, "shape": list(arr.shape), "chunks": list(arr.chunks)})
    arr0 = group[meta["paths"][0]]
    return {
        "url": url,
        "name": ref.name if isinstance(ref, ImageRef) else _image_name(url),
        "ngff_version": meta["version"],
        "zarr_format": group.metadata.zarr_format,
        "axes": "".join(meta["axes"]),
        "shape": list(arr0.shape),
        "dtype": str(arr0.dtype),
        "chunks": list(arr0.chunks),
        "levels": levels,
        "labels": list_labels(url),
    }
