"""Loaders for the small real datasets kept in ``../shared/data`` (no downloads).

Layouts (see each dataset's ``README.txt``)::

    pv_hc_multiexpert_deepflash_temp/images/<id>.png                  uint8 1024 x 1024
    pv_hc_multiexpert_deepflash_temp/labels/expert_<k>/<id>_Parv.png  uint8 0/255
    pv_hc_multiexpert_deepflash_temp/samples_36_final.csv
    dsb2018_stage1_fixed_subset/fluo/{images/<id>.png, labels/<id>.tif}
    dsb2018_stage1_fixed_subset/ood_brightfield_stained/{images/<id>.png, labels/<id>.tif}
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

__all__ = [
    "ENV_VAR",
    "ExpertSample",
    "InstanceSample",
    "load_dsb2018",
    "load_pv_hc",
    "pv_hc_metadata",
    "shared_data_dir",
]

#: Environment variable naming the shared data directory.
ENV_VAR = "SCALESEG_SHARED_DATA"
_PV_HC = "pv_hc_multiexpert_deepflash_temp"
_DSB2018 = "dsb2018_stage1_fixed_subset"
_DSB_SUBSETS = {"fluo": "fluo", "ood": "ood_brightfield_stained"}
_KNOWN = (_PV_HC, _DSB2018)


@dataclass(frozen=True)
class ExpertSample:
    """One image of the PV-in-HC multi-expert dataset.

    Attributes
    ----------
    name : str
        Image id, e.g. ``"0001"`` (the ``name`` column of `pv_hc_metadata`).
    image : (1, Y, X) ndarray of uint8
        Parvalbumin channel.
    experts : dict of str to (Y, X) ndarray of uint8
        ``"expert_1"`` ... binary masks (0/1).
    """

    name: str
    image: np.ndarray
    experts: dict[str, np.ndarray]


@dataclass(frozen=True)
class InstanceSample:
    """One image of the DSB2018 subset with its instance labels.

    Attributes
    ----------
    name : str
        Short image id (16 hex digits).
    image : (C, Y, X) ndarray of uint8
        One channel for grey images, three for RGB (alpha dropped).
    instances : (Y, X) ndarray of uint32
        Nucleus labels, 0 = background.
    kind : str
        ``"fluo"`` (fluorescence nuclei) or ``"ood"`` (brightfield / stained tissue).
    """

    name: str
    image: np.ndarray
    instances: np.ndarray
    kind: str


def _looks_like_data(path):
    return path.is_dir() and any((path / d).is_dir() for d in _KNOWN)


def shared_data_dir():
    """Locate the shared data directory.

    Looks at ``$SCALESEG_SHARED_DATA`` if set (and then nowhere else), otherwise at
    ``../shared/data`` relative to the current working directory and to the repository root
    (the parent of the ``scaleseg`` package directory). A directory qualifies if it holds at
    least one of the known dataset folders.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileNotFoundError
        Naming every place looked at and how to set the environment variable.
    """
    hint = (
        f"set the environment variable {ENV_VAR} to the directory that holds {' or '.join(_KNOWN)}"
    )
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if _looks_like_data(path):
            return path.resolve()
        raise FileNotFoundError(
            f"{ENV_VAR}={env!r} does not point to the shared data: {path} "
            f"{'has none of' if path.is_dir() else 'is not a directory holding'} "
            f"the dataset folders {', '.join(_KNOWN)}; {hint}"
        )
    repo_root = Path(__file__).resolve().parents[2]
    candidates = [Path.cwd() / ".." / "shared" / "data", repo_root / ".." / "shared" / "data"]
    for path in candidates:
        if _looks_like_data(path):
            return path.resolve()
    looked = ", ".join(str(p.resolve()) for p in candidates)
    raise FileNotFoundError(f"shared data not found (looked in {ENV_VAR}: unset, {looked}); {hint}")


def _dataset_dir(root, name):
    """``root/name`` (root = shared data dir, default located) or root itself if it is the dataset."""
    base = shared_data_dir() if root is None else Path(root)
    if (base / name).is_dir():
        return base / name
    if base.name == name and base.is_dir():
        return base
    raise FileNotFoundError(f"dataset folder {name!r} not found in {base}")


def _read(path, reader):
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}")
    try:
        return reader(path)
    except Exception as err:  # any decoder error: name the file
        raise OSError(f"cannot read {path}: {err}") from err


def _names(folder, suffix, names):
    available = sorted(p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}"))
    if names is None:
        if not available:
            raise FileNotFoundError(f"no *{suffix} images in {folder}")
        return available
    if isinstance(names, str):
        names = [names]
    out = [str(n).removesuffix(suffix) for n in names]
    missing = [n for n in out if n not in available]
    if missing:
        raise FileNotFoundError(f"no image {folder / (missing[0] + suffix)} (asked for {missing})")
    return out


def load_pv_hc(names=None, *, root=None):
    """Load the PV-in-HC images with the masks of all five experts.

    Parameters
    ----------
    names : str or sequence of str, optional
        Image ids such as ``"0001"``; default all 36, sorted.
    root : path-like, optional
        Shared data directory (or the dataset folder itself); default `shared_data_dir`.

    Returns
    -------
    list of ExpertSample

    Raises
    ------
    FileNotFoundError
        An image or an expert's mask for it is missing.
    OSError
        A file cannot be decoded.
    ValueError
        A file has an unexpected shape.
    """
    base = _dataset_dir(root, _PV_HC)
    expert_dirs = sorted(
        (p for p in (base / "labels").glob("expert_*") if re.fullmatch(r"expert_\d+", p.name)),
        key=lambda p: int(p.name.split("_")[1]),
    )
    if not expert_dirs:
        raise FileNotFoundError(f"no expert_<k> folders in {base / 'labels'}")
    samples = []
    for name in _names(base / "images", ".png", names):
        path = base / "images" / f"{name}.png"
        image = _check_uint8(_read(path, iio.imread), path)
        if image.ndim != 2:
            raise ValueError(f"{path}: expected a 2-D grey image, got shape {image.shape}")
        experts = {}
        for d in expert_dirs:
            mask_path = d / f"{name}_Parv.png"
            if not mask_path.is_file():
                raise FileNotFoundError(f"missing mask {mask_path} for image {path}")
            mask = _read(mask_path, iio.imread)
            if mask.ndim == 3:
                mask = mask.max(axis=-1)
            if mask.shape != image.shape:
                raise ValueError(
                    f"{mask_path}: shape {mask.shape} differs from image {image.shape}"
                )
            experts[d.name] = (mask > 0).astype(np.uint8)
        samples.append(ExpertSample(name=name, image=image[None], experts=experts))
    return samples


def pv_hc_metadata(*, root=None):
    """Per-image metadata of PV-in-HC (``samples_36_final.csv``).

    Parameters
    ----------
    root : path-like, optional
        Shared data directory (or the dataset folder itself); default `shared_data_dir`.

    Returns
    -------
    pandas.DataFrame
        One row per image, with a leading ``name`` column (``"0001"``, matching
        `ExpertSample.name`) derived from ``Nummer``, then the original columns
        (``Area`` CA1/CA3/DG, animal, section, ...).
    """
    import pandas as pd  # only needed here; keeps ``import scaleseg.datasets`` light

    path = _dataset_dir(root, _PV_HC) / "samples_36_final.csv"
    table = _read(path, pd.read_csv)
    if "Nummer" not in table.columns:
        raise ValueError(f"{path}: no 'Nummer' column (columns: {list(table.columns)})")
    table.insert(0, "name", [f"{int(v):04d}" for v in table["Nummer"]])
    return table


def _check_uint8(image, path):
    if image.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 pixels, got {image.dtype}")
    return image


def _to_chw(image, path):
    _check_uint8(image, path)
    if image.ndim == 2:
        return image[None]
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        return np.moveaxis(image[..., :3], -1, 0)
    raise ValueError(f"{path}: expected a grey, RGB or RGBA image, got shape {image.shape}")


def load_dsb2018(subset="fluo", *, names=None, root=None):
    """Load DSB2018 images with their nucleus instance labels.

    Parameters
    ----------
    subset : {"fluo", "ood"}
        38 fluorescence images, or 12 brightfield / stained images (out of distribution).
    names : str or sequence of str, optional
        Short ids; default all of the subset, sorted.
    root : path-like, optional
        Shared data directory (or the dataset folder itself); default `shared_data_dir`.

    Returns
    -------
    list of InstanceSample

    Raises
    ------
    ValueError
        Unknown ``subset``, or labels whose shape differs from the image.
    FileNotFoundError
        An image or its label file is missing.
    OSError
        A file cannot be decoded.
    """
    if subset not in _DSB_SUBSETS:
        raise ValueError(f"subset must be one of {sorted(_DSB_SUBSETS)}, got {subset!r}")
    folder = _dataset_dir(root, _DSB2018) / _DSB_SUBSETS[subset]
    samples = []
    for name in _names(folder / "images", ".png", names):
        path = folder / "images" / f"{name}.png"
        label_path = folder / "labels" / f"{name}.tif"
        image = _to_chw(_read(path, iio.imread), path)
        if not label_path.is_file():
            raise FileNotFoundError(f"missing label file {label_path} for image {path}")
        labels = _read(label_path, tifffile.imread)
        if labels.shape != image.shape[1:]:
            raise ValueError(
                f"{label_path}: shape {labels.shape} differs from image {image.shape[1:]}"
            )
        samples.append(
            InstanceSample(
                name=name,
                image=np.ascontiguousarray(image, dtype=np.uint8),
                instances=labels.astype(np.uint32),
                kind=subset,
            )
        )
    return samples
