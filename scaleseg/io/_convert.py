"""Convert a folder of TIFF / PNG images (plus expert mask folders) into an OME-Zarr collection.

Layout written::

    OUT/                       (written as OUT.partial-XXXX, renamed when complete)
      <image>.zarr/            one multiscale OME-Zarr image per input file
        labels/expert_<name>/  one label image per expert that annotated this image
      conversion.csv           one row per image: source file, shape, dtype, experts

Masks are matched by file stem: ``<masks>/<expert>/<image stem><mask_suffix>.<ext>``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import atomic_directory, remove_location
from ._imagefiles import IMAGE_SUFFIXES, ImageFileError, read_image_file, read_mask_file
from ._store import is_remote, join_url, location_exists, safe_name
from ._write import write_image, write_labels

__all__ = ["EXPERT_PREFIX", "ConversionItem", "convert_folder", "expert_label", "plan_conversion"]

EXPERT_PREFIX = "expert_"


@dataclass(frozen=True)
class ConversionItem:
    """One image to convert and the expert masks that belong to it."""

    name: str
    image: Path
    masks: dict[str, Path] = field(default_factory=dict)


def expert_label(name: str) -> str:
    """The label-group name of an expert: ``expert_<name>`` (no double prefix), path-safe."""
    name = safe_name(name)
    return name if name.startswith(EXPERT_PREFIX) else EXPERT_PREFIX + name


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def plan_conversion(
    images: str | Path, *, masks: str | Path | None = None, mask_suffix: str = ""
) -> tuple[list[ConversionItem], list[str]]:
    """Match image files with expert masks. Returns the items and warnings (unmatched masks).

    Raises
    ------
    FileNotFoundError, ValueError
        Missing folders, no images, or image names that collide after sanitising.
    """
    images = Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: image folder not found")
    files = _image_files(images)
    if not files:
        raise ValueError(f"{images}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    by_stem: dict[str, Path] = {}
    names: dict[str, Path] = {}
    for f in files:
        if f.stem in by_stem:
            raise ValueError(f"{f}: two images share the name {f.stem!r} ({by_stem[f.stem].name})")
        name = safe_name(f.stem)
        if name in names:
            raise ValueError(f"{f}: name {name!r} collides with {names[name]} after sanitising")
        by_stem[f.stem] = f
        names[name] = f
    item_masks: dict[str, dict[str, Path]] = {stem: {} for stem in by_stem}
    warnings: list[str] = []
    if masks is not None:
        masks = Path(masks)
        if not masks.is_dir():
            raise FileNotFoundError(f"{masks}: mask folder not found")
        experts = sorted(p for p in masks.iterdir() if p.is_dir())
        if not experts:
            raise ValueError(f"{masks}: no expert sub-folders (<masks>/<expert>/<image>.<ext>)")
        for expert_dir in experts:
            expert = expert_label(expert_dir.name)
            for mf in _image_files(expert_dir):
                stem = mf.stem
                if mask_suffix and stem.endswith(mask_suffix):
                    stem = stem[: -len(mask_suffix)]
                if stem not in by_stem:
                    warnings.append(f"{mf}: no image named {stem!r}; mask ignored")
                    continue
                if expert in item_masks[stem]:
                    raise ValueError(f"{mf}: second mask for image {stem!r} by expert {expert!r}")
                item_masks[stem][expert] = mf
    items = [
        ConversionItem(safe_name(stem), f, dict(sorted(item_masks[stem].items())))
        for stem, f in by_stem.items()
    ]
    return items, warnings


def _convert_one(item: ConversionItem, root: str, cfg: dict[str, Any]) -> dict[str, Any]:
    image = read_image_file(item.image)
    masks = {}
    for expert, mpath in item.masks.items():
        mask = read_mask_file(mpath)
        if mask.shape != image.shape[1:]:
            raise ImageFileError(
                f"{mpath}: mask shape {mask.shape} does not match image {item.image} "
                f"({image.shape[1]}x{image.shape[2]})"
            )
        masks[expert] = mask
    url = join_url(root, f"{item.name}.zarr")
    write_image(
        url,
        image,
        chunks=cfg["chunks"],
        n_levels=cfg["n_levels"],
        ngff_version=cfg["ngff_version"],
        attrs={"source": str(item.image), "experts": sorted(masks)},
    )
    for expert, mask in masks.items():
        write_labels(
            url,
            expert,
            mask,
            chunks=cfg["chunks"],
            source={"file": str(item.masks[expert]), "expert": expert},
        )
    return {
        "name": item.name,
        "source": str(item.image),
        "shape": "x".join(map(str, image.shape)),
        "dtype": str(image.dtype),
        "experts": ";".join(sorted(masks)),
    }


def convert_folder(
    images: str | Path,
    out: str | Path,
    *,
    masks: str | Path | None = None,
    mask_suffix: str = "",
    chunks: tuple[int, int] = (512, 512),
    n_levels: int = 3,
    ngff_version: str = "0.5",
    overwrite: bool = False,
    client: Any = None,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Convert an image folder (and optional expert masks) to an OME-Zarr collection.

    The collection is written to a temporary sibling and renamed into place only when every
    image succeeded, so a failed or interrupted conversion never leaves a complete-looking
    output. An existing ``out`` is kept unless ``overwrite``.

    Parameters
    ----------
    client : distributed.Client, optional
        Convert one image per task on this client; otherwise a local thread pool is used.
    progress : callable, optional
        Called with the number of finished images (e.g. a tqdm ``update``).

    Returns
    -------
    dict
        ``out``, ``images`` (rows as in ``conversion.csv``) and ``warnings``.
    """
    from ..executor import map_units

    items, warnings = plan_conversion(images, masks=masks, mask_suffix=mask_suffix)
    out = str(out)
    cfg = {"chunks": tuple(chunks), "n_levels": n_levels, "ngff_version": ngff_version}

    def write(root: str) -> list[dict[str, Any]]:
        rows = map_units(
            _convert_one, items, stage="convert", names=[i.name for i in items], client=client,
            progress=progress, threads=4, root=root, cfg=cfg,
        ).results  # fmt: skip
        rows.sort(key=lambda r: r["name"])
        _write_table(join_url(root, "conversion.csv"), rows, remote=is_remote(root))
        return rows

    if is_remote(out):  # no rename on object stores: refuse or clear first, then write in place
        if location_exists(out):
            if not overwrite:
                raise FileExistsError(f"{out} already exists (use --overwrite to replace it)")
            remove_location(out)
        rows = write(out)
    else:
        with atomic_directory(out, overwrite=overwrite) as tmp:
            rows = write(str(tmp))
    return {"out": out, "images": rows, "warnings": warnings}


def _write_table(url: str, rows: list[dict[str, Any]], *, remote: bool) -> None:
    fields = ["name", "source", "shape", "dtype", "experts"]
    if remote:
        import fsspec

        with fsspec.open(url, "w") as fh:
            _csv(fh, fields, rows)
    else:
        with open(url, "w", newline="") as fh:
            _csv(fh, fields, rows)


def _csv(fh, fields, rows) -> None:
    writer = csv.DictWriter(fh, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
