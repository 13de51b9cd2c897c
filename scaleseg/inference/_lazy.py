"""The lazy prediction API for notebooks: dask-backed xarray objects, computable on any client.

``scaleseg.predict_lazy(image, ensemble)`` builds, per block, one delayed call of the same kernel that
the batch command runs; every output array and the image score U are views of those calls, so
computing several of them together runs each block once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..blocks import plan_blocks
from ._blocks import compute_ensemble_block
from ._models import EnsembleInfo, read_ensemble, verify_ensemble

if TYPE_CHECKING:
    from ..config import PredictConfig

__all__ = ["predict_lazy"]


def _block(url: str, core: tuple, info: EnsembleInfo, config: PredictConfig) -> dict[str, Any]:
    from ..io import open_image, to_cyx
    from ..models import pick_device

    image = to_cyx(open_image(url))
    core_slices = (slice(*core[0]), slice(*core[1]))
    return compute_ensemble_block(image, core_slices, info, config, device=pick_device(), name=url)


def _score(partials: list) -> np.ndarray:
    from ..uncertainty import combine_partials, image_score

    s = image_score(combine_partials(list(partials)))
    return np.array([s["U"], s["U_epistemic"], s["ood_distance"], s["U_novel"]], dtype=np.float64)


def _image_dataset(ref, info: EnsembleInfo, config: PredictConfig):
    import dask
    import dask.array as da
    import xarray as xr

    from ..io import open_image, to_cyx

    image = to_cyx(open_image(ref))
    _, ny, nx = (int(s) for s in image.shape)
    if int(image.shape[0]) != info.in_channels:
        raise ValueError(
            f"{ref.url}: {image.shape[0]} channel(s), the ensemble expects {info.in_channels}"
        )
    bplan = plan_blocks((ny, nx), block_shape=config.block_shape, chunks=config.block_shape)
    k = info.n_classes
    grid: dict[str, list[list[Any]]] = {n: [] for n in ("probabilities", "labels", "uncertainty")}
    partials = []
    row_y = -1
    for by, _bx, ys, xs in bplan.cores():
        if by != row_y:
            row_y = by
            for rows in grid.values():
                rows.append([])
        h, w = ys.stop - ys.start, xs.stop - xs.start
        core = ((ys.start, ys.stop), (xs.start, xs.stop))
        token = dask.base.tokenize(ref.url, core, info.checksums, config.model_dump_json())
        d = dask.delayed(_block, pure=True, name=f"scaleseg-block-{token}")(
            ref.url, core, info, config
        )
        grid["probabilities"][-1].append(da.from_delayed(d["probabilities"], (k, h, w), np.float32))
        grid["labels"][-1].append(
            da.from_delayed(d["labels"], (h, w), np.uint8 if k <= 256 else np.uint16)
        )
        grid["uncertainty"][-1].append(da.from_delayed(d["uncertainty"], (3, h, w), np.float32))
        partials.append(d["partials"])
    prob = da.block(grid["probabilities"])
    unc = da.block(grid["uncertainty"])
    labels = da.block(grid["labels"])
    scores = da.from_delayed(dask.delayed(_score, pure=True)(partials), (4,), np.float64)
    coords = {"y": np.arange(ny), "x": np.arange(nx), "class": list(info.classes)}
    ds = xr.Dataset(
        {
            "probabilities": (("class", "y", "x"), prob),
            "labels": (("y", "x"), labels),
            "uncertainty": (("y", "x"), unc[0]),
            "epistemic": (("y", "x"), unc[1]),
            "aleatoric": (("y", "x"), unc[2]),
            "U": ((), scores[0]),
            "U_epistemic": ((), scores[1]),
            "ood_distance": ((), scores[2]),
            "U_novel": ((), scores[3]),
        },
        coords=coords,
        attrs={
            "image": ref.name,
            "url": ref.url,
            "ensemble": info.path,
            **{k_: str(v) for k_, v in config.model_dump(mode="json").items()},
        },
    )
    return ds


def predict_lazy(source, ensemble: str | Path | EnsembleInfo, *, config: PredictConfig | None = None,
                 **settings: Any):  # fmt: skip
    """Lazy ensemble prediction of an image or a collection (nothing is written).

    Parameters
    ----------
    source : path, URL or ImageRef
        One OME-Zarr image, or a collection / HCS plate.
    ensemble : path or EnsembleInfo
        An ensemble folder (weights are checked against ``ensemble.json``).
    config : PredictConfig, optional
        Tile, overlap, TTA, block shape, batch size, zeta (default: the defaults, the
        ensemble's tile).
    **settings
        Fields of :class:`~scaleseg.config.PredictConfig` to change (``tta="none"``).

    Returns
    -------
    xarray.Dataset or xarray.DataTree
        For one image a Dataset with lazy ``probabilities (class, y, x)``, ``labels``,
        ``uncertainty``, ``epistemic``, ``aleatoric`` and the scalars ``U`` / ``U_epistemic`` /
        ``ood_distance`` / ``U_novel`` (the last two NaN for an ensemble without feature
        statistics, ``U_novel`` also for statistics without a per-cell part).
        For a collection a DataTree with one such Dataset per image name. Nothing is computed
        until asked (``ds.U.compute()``, ``ds.labels[:512, :512].values``), on whatever
        scheduler or client is active.
    """
    import xarray as xr

    from ..config import PredictConfig
    from ..io import ImageRef, open_collection

    info = ensemble if isinstance(ensemble, EnsembleInfo) else read_ensemble(ensemble)
    verify_ensemble(info)
    config = config if config is not None else PredictConfig()
    if settings:
        config = PredictConfig.model_validate({**config.model_dump(), **settings})
    refs = [source] if isinstance(source, ImageRef) else open_collection(source)
    if len(refs) == 1 and not _is_collection(source):
        return _image_dataset(refs[0], info, config)
    return xr.DataTree.from_dict({r.name: _image_dataset(r, info, config) for r in refs})


def _is_collection(source) -> bool:
    from ..io import ImageRef, ome_attrs, open_group

    if isinstance(source, ImageRef):
        return False
    try:
        attrs, _ = ome_attrs(open_group(source))
    except (ValueError, FileNotFoundError):
        return True
    return "multiscales" not in attrs
