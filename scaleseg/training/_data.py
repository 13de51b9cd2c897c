"""Training tiles read lazily from OME-Zarr: a torch ``Dataset`` and fixed validation tiles.

Memory behaviour of :class:`TileDataset`
---------------------------------------
* **Pixels** are never loaded whole. Each ``__getitem__`` reads one window around the tile
  centre (``tile_shape * scale``, enlarged to the tile diagonal when ``rotate`` or
  ``grid_distortion`` is on) from level 0 of the image and of the label image, through the
  dask-backed arrays of :mod:`scaleseg.io` (``.data[..., ys, xs].compute(scheduler="sync")``):
  only the zarr chunks that the window touches are fetched.
* **Label maps for sampling** are read once, in ``__init__``, at the finest pyramid level with
  at most ``max_label_pixels`` pixels: level 0 for images up to 2048 x 2048 by default, a coarser
  level otherwise (centres are then jittered inside the coarse pixel). They stay in
  memory as uint8 (uint16 for more than 255 classes): at most ``max_label_pixels`` bytes per image
  (4 MiB by default), and they travel with the dataset when it is pickled to spawned workers.
* **Centres** are drawn once per epoch for all images (``tiles_per_epoch`` x 2 int64) when the
  first item of that epoch is asked for, deterministically from ``(seed, epoch)``.

Workers: zarr 3 can deadlock in forked processes, so use ``num_workers=0`` or a DataLoader
with ``multiprocessing_context="spawn"``. Call :meth:`TileDataset.set_epoch` before iterating an
epoch; spawned workers get the epoch when the DataLoader (re)creates them, so use
``persistent_workers=False`` (the default) or the epoch is not seen by the workers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..io import ImageRef, open_image, open_labels, to_cyx
from ..io._store import url_name
from ..models._normalize import Normalization, channel_stats
from ._augment import augmentation_input_shape, build_augmentation, check_augmentations
from ._sampling import reflect_index, sample_tile_centres, tile_slices

__all__ = [
    "TileDataset",
    "TrainItem",
    "flow_targets",
    "normalization_from_items",
    "semantic_to_instances",
    "validation_tiles",
]


@dataclass(frozen=True)
class TrainItem:
    """One training image: where its pixels are and where its labels are.

    Attributes
    ----------
    image_url : str
        OME-Zarr image holding the pixels (an :class:`~scaleseg.io.ImageRef` or a path is
        accepted and turned into its URL).
    label_url : str
        OME-Zarr image whose ``labels/<label_name>`` holds the semantic labels; may differ from
        ``image_url`` (e.g. ``<gt>/images/<name>.zarr`` written by ``scaleseg gt``, label
        ``est_gt``). Its ``(y, x)`` shape must equal the image's.
    label_name : str
        Name of the label image (0 = background, classes ``1 .. K-1``).
    instance_name : str, optional
        A label image of instance ids under ``label_url`` used for flow targets; without it
        instances are the connected components of each class.
    name : str
        For messages; defaults to the image name.
    """

    image_url: str
    label_url: str
    label_name: str
    instance_name: str | None = None
    name: str = ""

    def __post_init__(self) -> None:
        image, label = self.image_url, self.label_url
        name = self.name or (image.name if isinstance(image, ImageRef) else "")
        if isinstance(image, ImageRef):
            image = image.url
        if isinstance(label, ImageRef):
            label = label.url
        object.__setattr__(self, "image_url", str(image))
        object.__setattr__(self, "label_url", str(label))
        object.__setattr__(self, "name", name or url_name(str(image)).removesuffix(".zarr"))


def _read_window(arr: Any, centre, shape, image_shape) -> np.ndarray:
    """Read ``shape`` pixels around ``centre`` from a dask array ``(..., Y, X)``.

    Only the in-image bounding box of the needed pixels is read; pixels outside the image are
    filled by reflecting the image about its border (as ``np.pad(image, mode="reflect")``).
    """
    ys, xs, pad = tile_slices(centre, shape, image_shape)
    if not any(p for pair in pad for p in pair):
        return np.asarray(arr[..., ys, xs].compute(scheduler="sync"))
    iy = reflect_index(np.arange(ys.start - pad[0][0], ys.stop + pad[0][1]), image_shape[0])
    ix = reflect_index(np.arange(xs.start - pad[1][0], xs.stop + pad[1][1]), image_shape[1])
    y0, y1, x0, x1 = iy.min(), iy.max() + 1, ix.min(), ix.max() + 1
    box = np.asarray(arr[..., y0:y1, x0:x1].compute(scheduler="sync"))
    return box[..., (iy - y0)[:, None], (ix - x0)[None, :]]


def _resize_image(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a ``(C, Y, X)`` float32 array: area averaging to shrink, bilinear to enlarge."""
    if x.shape[-2:] == tuple(shape):
        return x
    shrink = shape[0] < x.shape[-2] or shape[1] < x.shape[-1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    out = [cv2.resize(c, (shape[1], shape[0]), interpolation=interp) for c in x]
    return np.stack(out).astype(np.float32, copy=False)


def _resize_labels(lab: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if lab.shape[-2:] == tuple(shape):
        return lab
    iy = np.minimum((np.arange(shape[0]) + 0.5) * lab.shape[0] / shape[0], lab.shape[0] - 1)
    ix = np.minimum((np.arange(shape[1]) + 0.5) * lab.shape[1] / shape[1], lab.shape[1] - 1)
    return lab[iy.astype(np.intp)[:, None], ix.astype(np.intp)[None, :]]


def semantic_to_instances(target: np.ndarray, n_classes: int) -> np.ndarray:
    """Instances as the connected components (4-connected) of each foreground class.

    Parameters
    ----------
    target : (H, W) ndarray of int
    n_classes : int

    Returns
    -------
    (H, W) ndarray of int32
        0 = background; touching objects of one class become one instance.
    """
    from scipy import ndimage

    out = np.zeros(target.shape, dtype=np.int32)
    offset = 0
    for k in range(1, n_classes):
        lab, n = ndimage.label(target == k)
        out[lab > 0] = lab[lab > 0] + offset
        offset += n
    return out


def flow_targets(instances: np.ndarray) -> np.ndarray:
    """Cellpose flow targets of an instance label tile.

    Parameters
    ----------
    instances : (H, W) ndarray of int
        0 = background.

    Returns
    -------
    (2, H, W) ndarray of float32
        ``(dy, dx)`` unit flows from ``cellpose.dynamics.labels_to_flows`` (rows 2 and 3 of its
        output); exactly 0 outside objects. Cost grows with object size (the heat diffusion
        runs for a number of iterations set by the largest object): about 0.2 s for a 256^2
        tile with small objects, tens of seconds on 2 CPU cores for a 512^2 tile with a
        200-pixel object.
    """
    if instances.ndim != 2:
        raise ValueError(f"instances must be (H, W), got shape {instances.shape}")
    if not instances.any():
        return np.zeros((2, *instances.shape), dtype=np.float32)
    from cellpose.dynamics import labels_to_flows

    lab = np.ascontiguousarray(instances, dtype=np.int32).copy()  # renumbered in place
    flows = labels_to_flows([lab], device=torch.device("cpu"))[0]
    return np.ascontiguousarray(flows[2:4], dtype=np.float32)


class _Source:
    """Opened lazy arrays of one item (re-opened after unpickling)."""

    def __init__(self, item: TrainItem, normalization: Normalization):
        self.image = to_cyx(open_image(item.image_url)).data
        self.normalization = normalization.for_image(self.image)  # per-image scaling bound
        self.labels = open_labels(item.label_url, item.label_name).data
        self.instances = (
            open_labels(item.label_url, item.instance_name).data if item.instance_name else None
        )


class TileDataset(Dataset):
    """Class-balanced random training tiles, read lazily from OME-Zarr.

    Parameters
    ----------
    items : list of TrainItem
    tile_shape : (int, int)
        Output tile ``(H, W)`` at model resolution.
    n_classes : int
        K, including background; labels must lie in ``0 .. K-1``.
    tiles_per_epoch : int
        ``len(dataset)``. Tile ``i`` comes from image ``i % len(items)`` (every image gives the
        same number of tiles per epoch, as in deepflash2) with a class-balanced centre.
    normalization : Normalization
        Applied after augmentation; its channel count must match the images.
    augment : list of str or None
        Names from :data:`~scaleseg.training._augment.AUGMENTATIONS`; ``None`` or ``[]``: none.
    seed : int
        Item ``i`` of epoch ``e`` depends only on ``(seed, e, i)``.
    scale : float
        Zoom-out factor (deepflash2 ``zoom``): a window of ``tile_shape * scale`` pixels is read
        and resized to ``tile_shape`` (image: area averaging when shrinking, bilinear when
        enlarging; labels: nearest).
    flows : bool
        Also return cellpose flow targets (see :func:`flow_targets`; slow on CPU for big
        objects).
    max_label_pixels : int
        Size bound of the in-memory label maps used to draw centres (see the module notes).

    Notes
    -----
    ``dataset[i]`` is a dict with ``image`` (``(C, H, W)`` float32 tensor, normalised),
    ``target`` (``(H, W)`` int64 tensor) and, with ``flows``, ``flows`` (``(2, H, W)``
    float32 tensor). Pipeline per item: read window (reflect outside the image) -> unit range
    -> resize by ``scale`` -> augment (geometric, centre crop, intensity) -> normalise.
    One instance is not thread-safe (the augmentation pipeline is re-seeded per item); use
    one instance per process, as DataLoader workers do.
    """

    def __init__(
        self,
        items: Sequence[TrainItem],
        *,
        tile_shape: Sequence[int],
        n_classes: int,
        tiles_per_epoch: int,
        normalization: Normalization,
        augment: Sequence[str] | None,
        seed: int,
        scale: float = 1.0,
        flows: bool = False,
        max_label_pixels: int = 2**22,
    ):
        self.items = [i if isinstance(i, TrainItem) else TrainItem(*i) for i in items]
        if not self.items:
            raise ValueError("TileDataset needs at least one item")
        self.tile_shape = tuple(int(t) for t in tile_shape)
        if len(self.tile_shape) != 2 or min(self.tile_shape) < 1:
            raise ValueError(f"tile_shape must be two positive ints, got {tuple(tile_shape)}")
        if not 1 <= n_classes <= 65535:
            raise ValueError(f"n_classes must be in [1, 65535], got {n_classes}")
        if tiles_per_epoch < 1:
            raise ValueError(f"tiles_per_epoch must be >= 1, got {tiles_per_epoch}")
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.n_classes = int(n_classes)
        self.tiles_per_epoch = int(tiles_per_epoch)
        self.normalization = normalization
        self.augment = check_augmentations(augment)
        self.seed = int(seed)
        self.scale = float(scale)
        self.flows = bool(flows)
        self.window_shape = augmentation_input_shape(self.augment, self.tile_shape)
        self.read_shape = tuple(max(1, math.ceil(w * self.scale - 1e-9)) for w in self.window_shape)
        self._aug = build_augmentation(self.augment, tile_shape=self.tile_shape, seed=self.seed)
        self._epoch = 0
        self._plan: tuple[int, np.ndarray] | None = None
        self._sources: dict[int, _Source] = {}
        self._shapes: list[tuple[int, int]] = []
        self._maps: list[tuple[np.ndarray, tuple[int, int]]] = []
        for j, item in enumerate(self.items):
            self._shapes.append(self._check_item(j, item))
            self._maps.append(self._sampling_map(item, max_label_pixels))

    # -- setup ----------------------------------------------------------------------------
    def _check_item(self, j: int, item: TrainItem) -> tuple[int, int]:
        src = self._source(j)
        c, h, w = src.image.shape
        if c != self.normalization.n_channels:
            raise ValueError(
                f"{item.image_url}: {c} channel(s), the normalisation has "
                f"{self.normalization.n_channels}"
            )
        for name, arr in (("labels", src.labels), ("instances", src.instances)):
            if arr is not None and tuple(arr.shape) != (h, w):
                raise ValueError(
                    f"{item.label_url}: {name} {item.label_name!r} are {tuple(arr.shape)}, "
                    f"the image {item.image_url} is {(h, w)} (y, x)"
                )
        return h, w

    def _sampling_map(self, item: TrainItem, max_pixels: int) -> tuple[np.ndarray, tuple[int, int]]:
        lab = open_labels(item.label_url, item.label_name)
        h, w = lab.shape
        level = 0
        while lab.shape[0] * lab.shape[1] > max_pixels and level + 1 < lab.attrs["n_levels"]:
            level += 1
            lab = open_labels(item.label_url, item.label_name, level=level)
        factor = (max(1, round(h / lab.shape[0])), max(1, round(w / lab.shape[1])))
        arr = np.asarray(lab.data.compute(scheduler="sync"))
        if arr.min() < 0 or arr.max() >= self.n_classes:
            raise ValueError(
                f"{item.label_url}/labels/{item.label_name}: values in [{arr.min()}, {arr.max()}] "
                f"but n_classes = {self.n_classes}"
            )
        dtype = np.uint8 if self.n_classes <= 256 else np.uint16
        return arr.astype(dtype), factor

    def _source(self, j: int) -> _Source:
        if j not in self._sources:
            self._sources[j] = _Source(self.items[j], self.normalization)
        return self._sources[j]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_sources"] = {}  # zarr/dask handles are re-opened in each process
        return state

    # -- epochs ---------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; items then depend on ``(seed, epoch, index)`` only."""
        self._epoch = int(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch

    def __len__(self) -> int:
        return self.tiles_per_epoch

    def centres(self, epoch: int | None = None) -> np.ndarray:
        """Tile centres of an epoch, ``(tiles_per_epoch, 2)`` int64 in level-0 ``(y, x)``.

        Row ``i`` belongs to image ``i % len(items)``.
        """
        epoch = self._epoch if epoch is None else int(epoch)
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1]
        n_items = len(self.items)
        out = np.empty((self.tiles_per_epoch, 2), dtype=np.int64)
        for j in range(n_items):
            rows = np.arange(j, self.tiles_per_epoch, n_items)
            if not len(rows):
                continue
            rng = np.random.default_rng([self.seed, epoch, j])
            labels, factor = self._maps[j]
            c = sample_tile_centres(labels, len(rows), rng=rng, n_classes=self.n_classes)
            f = np.asarray(factor)
            if (f > 1).any():  # jitter inside the coarse pixel
                c = c * f + rng.integers(0, f, size=c.shape)
            out[rows] = np.minimum(c, np.asarray(self._shapes[j]) - 1)
        self._plan = (epoch, out)
        return out

    # -- items ----------------------------------------------------------------------------
    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        i = int(i)
        if not 0 <= i < self.tiles_per_epoch:
            raise IndexError(f"index {i} out of range for {self.tiles_per_epoch} tiles")
        j = i % len(self.items)
        centre = self.centres()[i]
        item, src, shape = self.items[j], self._source(j), self._shapes[j]
        raw = _read_window(src.image, centre, self.read_shape, shape)
        labels = _read_window(src.labels, centre, self.read_shape, shape)
        if labels.max(initial=0) >= self.n_classes or labels.min(initial=0) < 0:
            raise ValueError(
                f"{item.label_url}/labels/{item.label_name}: value {labels.max()} near "
                f"{tuple(centre)} outside [0, {self.n_classes - 1}]"
            )
        masks = [labels.astype(np.uint16)]
        if self.flows and src.instances is not None:
            inst = _read_window(src.instances, centre, self.read_shape, shape)
            ids, inv = np.unique(inst, return_inverse=True)
            if len(ids) > 65536:
                raise ValueError(f"{item.label_url}: more than 65535 instances in one tile")
            masks.append(inv.reshape(inst.shape).astype(np.uint16))
        x = _resize_image(src.normalization.unit(raw), self.window_shape)
        masks = [_resize_labels(m, self.window_shape) for m in masks]
        state = np.random.SeedSequence([self.seed, self._epoch, i]).generate_state(1)[0]
        self._aug.set_random_seed(int(state))
        out = self._aug(image=np.ascontiguousarray(x.transpose(1, 2, 0)), masks=masks)
        image = self.normalization.standardize(np.asarray(out["image"]).transpose(2, 0, 1))
        target = np.asarray(out["masks"][0]).astype(np.int64)
        result = {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "target": torch.from_numpy(target),
        }
        if self.flows:
            inst = out["masks"][1] if len(out["masks"]) > 1 else None
            if inst is None:
                inst = semantic_to_instances(target, self.n_classes)
            result["flows"] = torch.from_numpy(flow_targets(np.asarray(inst)))
        return result


def _tile_grid(x: np.ndarray, tile_shape: tuple[int, int], fill: float | None) -> list[np.ndarray]:
    """Cut ``(..., Y, X)`` into non-overlapping tiles, padding bottom/right (reflect or fill)."""
    ty, tx = tile_shape
    h, w = x.shape[-2:]
    ph, pw = -h % ty, -w % tx
    pad = [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)]
    if fill is None:
        x = np.pad(x, pad, mode="reflect") if ph or pw else x
    else:
        x = np.pad(x, pad, mode="constant", constant_values=fill)
    return [
        x[..., y : y + ty, xx : xx + tx]
        for y in range(0, h + ph, ty)
        for xx in range(0, w + pw, tx)
    ]


def validation_tiles(
    items: Sequence[TrainItem],
    *,
    tile_shape: Sequence[int],
    normalization: Normalization,
    scale: float = 1.0,
    ignore_index: int | None = -100,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed, non-overlapping tiles covering each validation image (row-major, image by image).

    Each image is read whole (validation images are loaded into memory), scaled to the unit
    range, resized by ``1 / scale`` like the training tiles, and cut into tiles from the top-left
    corner; the last row/column is reflect-padded.

    Parameters
    ----------
    items : list of TrainItem
    tile_shape : (int, int)
    normalization : Normalization
    scale : float
        The training zoom-out factor.
    ignore_index : int or None
        Target value of the padded pixels (``-100`` is ``torch.nn.CrossEntropyLoss``'s default
        ``ignore_index``; mask it out in the Dice too). ``None`` reflects the labels instead.

    Returns
    -------
    list of (image, target)
        ``image`` a ``(C, H, W)`` float32 tensor (normalised), ``target`` a ``(H, W)`` int64
        tensor.
    """
    tile_shape = tuple(int(t) for t in tile_shape)
    out = []
    for item in items:
        item = item if isinstance(item, TrainItem) else TrainItem(*item)
        img = to_cyx(open_image(item.image_url)).data.compute(scheduler="sync")
        lab = open_labels(item.label_url, item.label_name).data.compute(scheduler="sync")
        if tuple(lab.shape) != tuple(img.shape[-2:]):
            raise ValueError(
                f"{item.label_url}: labels {tuple(lab.shape)} do not match the image "
                f"{item.image_url} {tuple(img.shape[-2:])}"
            )
        x = normalization.for_image(img).unit(img)
        if scale != 1.0:
            shape = tuple(max(1, round(s / scale)) for s in x.shape[-2:])
            x, lab = _resize_image(x, shape), _resize_labels(lab, shape)
        x = normalization.standardize(x)
        tiles = zip(
            _tile_grid(x, tile_shape, None),
            _tile_grid(lab.astype(np.int64), tile_shape, ignore_index),
            strict=True,
        )
        out.extend(
            (torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(np.ascontiguousarray(b)))
            for a, b in tiles
        )
    return out


def normalization_from_items(
    items: Sequence[TrainItem],
    *,
    max_pixels_per_image: int = 2**20,
    seed: int = 0,
    intensity: str = "dtype",
) -> Normalization:
    """:func:`channel_stats` over the level-0 pixels of the training images.

    Large images are subsampled on a strided grid (memory bounded by about
    ``max_pixels_per_image`` per image, although every chunk is read once). Computed with the
    local threaded scheduler, never on a distributed client.
    """
    import dask

    items = [i if isinstance(i, TrainItem) else TrainItem(*i) for i in items]
    images = (to_cyx(open_image(i.image_url)).data for i in items)
    with dask.config.set(scheduler="threads"):
        return channel_stats(
            images,
            max_pixels_per_image=max_pixels_per_image,
            rng=np.random.default_rng(seed),
            names=[i.image_url for i in items],
            intensity=intensity,
        )
