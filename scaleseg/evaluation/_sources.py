"""Where label maps to evaluate come from: an OME-Zarr collection or a folder of mask files.

A *source* resolves to one :class:`LabelItem` per image name. Items are small, picklable
descriptions (a location plus a label-group name); :meth:`LabelItem.read` loads the pixels,
so a dask worker reads its own image instead of receiving arrays through the scheduler.

Name matching
-------------
Collection images are named as :func:`scaleseg.io.open_collection` names them. A mask file
``<stem><suffix>.<ext>`` is named ``safe_name(<stem>)`` (the rule of ``scaleseg convert``);
with a suffix, files whose stem does not end with it are ignored. Experts in a folder are
sub-folders of mask files, ``<folder>/<expert>/<image><suffix>.<ext>``, labelled
``expert_<expert>`` (the layout ``scaleseg convert`` and ``scaleseg gt`` read).

Instance maps
-------------
A label group called ``instances`` or ending in ``_instances`` (``truth_instances``) holds
instance labels and is used as such; anything else is a semantic map whose instances are
its connected components. ``instances=True`` forces the instance reading (e.g. for folders).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scaleseg.io import (
    EXPERT_PREFIX,
    IMAGE_SUFFIXES,
    NotOmeZarrError,
    expert_label,
    is_remote,
    list_labels,
    open_collection,
    open_labels,
    read_mask_file,
    safe_name,
)

__all__ = [
    "ALL_EXPERTS",
    "LabelItem",
    "LabelSource",
    "is_instance_label",
    "resolve_source",
]

#: The reference label meaning "each expert in turn".
ALL_EXPERTS = "experts"


def is_instance_label(label: str | None) -> bool:
    """Whether a label-group name holds instance labels (``instances``, ``*_instances``)."""
    return label is not None and (label == "instances" or label.endswith("_instances"))


@dataclass(frozen=True)
class LabelItem:
    """One label map of one image, not yet read.

    Attributes
    ----------
    name : str
        The image name used to match prediction, reference and experts.
    location : str
        The OME-Zarr image (collection sources) or the mask file (folder sources).
    label : str or None
        The label group inside ``location``; ``None`` for a mask file.
    instances : bool
        ``True`` when the map holds instance labels rather than classes.
    expert : str or None
        The expert label (``expert_<name>``) of a mask file from an expert sub-folder.
    """

    name: str
    location: str
    label: str | None = None
    instances: bool = False
    expert: str | None = None

    @property
    def key(self) -> str:
        """What the map is called in tables: label group, expert, or ``"masks"``."""
        return self.label or self.expert or "masks"

    @property
    def description(self) -> str:
        return f"{self.location}/labels/{self.label}" if self.label else self.location

    def read(self) -> np.ndarray:
        """Load the label map as a ``(Y, X)`` unsigned integer array."""
        if self.label is None:
            return read_mask_file(self.location)
        arr = open_labels(self.location, self.label)
        # synchronous: this may run inside a dask worker task
        out = np.asarray(arr.data.compute(scheduler="synchronous"))
        if out.ndim != 2:
            raise ValueError(f"{self.description}: label image has shape {out.shape}, not (y, x)")
        return out


@dataclass(frozen=True)
class LabelSource:
    """A resolved prediction or reference source.

    Attributes
    ----------
    location : str
        The collection or folder given.
    kind : {"collection", "folder"}
    label : str or None
        Label group (collections); :data:`ALL_EXPERTS` for every ``expert_*`` group.
    items : dict of str to list of LabelItem
        Per image name, the label maps found (several only for :data:`ALL_EXPERTS`).
    missing : dict of str to str
        Images of the collection that lack the label group, with the reason.
    experts : dict of str to dict of str to LabelItem
        Per image name, its expert label maps (``expert_*`` groups; collections only).
    """

    location: str
    kind: str
    label: str | None
    items: dict[str, list[LabelItem]]
    missing: dict[str, str] = field(default_factory=dict)
    experts: dict[str, dict[str, LabelItem]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """All image names seen, including those without the label group."""
        return sorted({*self.items, *self.missing})


def _mask_files(
    folder: Path, suffix: str, instances: bool, expert: str | None = None
) -> dict[str, list[LabelItem]]:
    items: dict[str, list[LabelItem]] = {}
    files: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        stem = f.stem
        if suffix:
            if not stem.endswith(suffix) or stem == suffix:
                continue
            stem = stem[: -len(suffix)]
        name = safe_name(stem)
        if name in files:
            raise ValueError(f"{f}: image name {name!r} is also given by {files[name]}")
        files[name] = f
        items[name] = [LabelItem(name, str(f), None, instances, expert)]
    return items


def _no_masks(folder: Path, suffix: str) -> ValueError:
    extra = f" ending in {suffix!r}" if suffix else ""
    return ValueError(f"{folder}: no mask files{extra} ({', '.join(IMAGE_SUFFIXES)})")


def _expert_folders(folder: Path, suffix: str) -> LabelSource:
    """``<folder>/<expert>/<image><suffix>.<ext>`` (the layout ``scaleseg convert`` reads)."""
    experts: dict[str, dict[str, LabelItem]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = expert_label(sub.name)
        for name, found in _mask_files(sub, suffix, False, label).items():
            experts.setdefault(name, {})[label] = found[0]
    if not experts:
        raise ValueError(
            f"{folder}: no expert sub-folders with mask files (<folder>/<expert>/<image>.<ext>)"
        )
    items = {name: list(found.values()) for name, found in experts.items()}
    return LabelSource(str(folder), "folder", ALL_EXPERTS, items, {}, experts)


def _collection(location: str, refs, label: str, instances: bool) -> LabelSource:
    items: dict[str, list[LabelItem]] = {}
    missing: dict[str, str] = {}
    experts: dict[str, dict[str, LabelItem]] = {}
    for ref in refs:
        labels = list_labels(ref)
        found = {lab: LabelItem(ref.name, ref.url, lab) for lab in labels}
        experts[ref.name] = {
            lab: item for lab, item in found.items() if lab.startswith(EXPERT_PREFIX)
        }
        if label == ALL_EXPERTS:
            if experts[ref.name]:
                items[ref.name] = list(experts[ref.name].values())
            else:
                missing[ref.name] = f"no {EXPERT_PREFIX}* label images"
        elif label in found:
            inst = instances or is_instance_label(label)
            items[ref.name] = [LabelItem(ref.name, ref.url, label, inst)]
        else:
            missing[ref.name] = f"no label image {label!r} (found: {', '.join(labels) or 'none'})"
    return LabelSource(location, "collection", label, items, missing, experts)


def resolve_source(
    location: str | Path,
    *,
    label: str | None,
    suffix: str = "",
    instances: bool = False,
) -> LabelSource:
    """Resolve a prediction, reference or expert location into per-image label maps.

    Parameters
    ----------
    location : path or URL
        An OME-Zarr collection (or single image / plate), or a local folder of mask files.
    label : str or None
        Label group to read from a collection (e.g. ``"semantic"``, ``"est_gt"``,
        ``"expert_a"``, or :data:`ALL_EXPERTS`). For folders only :data:`ALL_EXPERTS`
        matters: it reads one sub-folder of masks per expert.
    suffix : str, optional
        Mask file stem suffix (folders only), e.g. ``"_pred"`` for ``img1_pred.png``.
    instances : bool, optional
        Read the maps as instance labels even when the label name does not say so.

    Returns
    -------
    LabelSource

    Raises
    ------
    FileNotFoundError
        ``location`` does not exist.
    ValueError
        Neither a collection nor a folder of mask files, or colliding image names.
    """
    location = str(location)
    local = None if is_remote(location) else Path(location)
    if local is not None and not local.exists():
        raise FileNotFoundError(f"{location}: not found")
    try:
        refs = open_collection(location)
    except NotOmeZarrError:
        if local is None or not local.is_dir():
            raise
    else:
        if label is None:
            raise ValueError(f"{location}: a label group name is needed for a collection")
        return _collection(location, refs, label, instances)
    if label == ALL_EXPERTS:
        return _expert_folders(local, suffix)
    items = _mask_files(local, suffix, instances)
    if not items:
        raise _no_masks(local, suffix)
    return LabelSource(location, "folder", None, items)
