"""Intensity scaling and per-channel normalisation (numpy kernels).

Two steps, always in this order, in training and at inference:

1. :meth:`Normalization.unit` maps raw pixels to float32 on a unit scale. With
   ``Normalization.intensity_max`` (the default for new ensembles, ``TrainConfig.intensity =
   "data"``) each channel is divided by the largest value found in the training images, so
   12-bit data stored in uint16 fills ``[0, 1]``; without it (``"dtype"``, and every ensemble
   written before it existed) :func:`to_unit_range` divides by the dtype's range (``uint8 /
   255``, ``uint16 / 65535``, ...; float images are taken as they are). Augmentations such as
   gamma and CLAHE run on this unit scale.
2. :meth:`Normalization.standardize` subtracts the per-channel mean and divides by the
   per-channel std, both measured by :func:`channel_stats` on the same unit scale.
   :meth:`Normalization.apply` runs both steps on raw tiles.

Per-image scaling (``TrainConfig.intensity = "percentile"``, ``Normalization.percentiles``)
maps each image's own low and high percentile per channel to 0 and 1 (values below the low
one are clipped to 0), so dim and bright acquisitions of the same structures look alike. The
percentiles are a property of the whole image, not of a tile: :meth:`Normalization.for_image`
measures them (:func:`image_percentiles`, a fixed strided subsample of level 0, so every block
of an image and the whole image get the same values) and returns the bound normalisation that
:meth:`~Normalization.unit` needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

__all__ = ["PERCENTILES", "Normalization", "channel_stats", "image_percentiles", "to_unit_range"]

STD_FLOOR = 1e-6
PERCENTILES: tuple[float, float] = (1.0, 99.8)
"""Default low and high percentile of per-image scaling (as csbdeep / StarDist)."""
PERCENTILE_PIXELS = 2**20
"""Per-image percentiles are measured on at most about this many pixels (strided, offset 0)."""


def image_percentiles(
    image: Any, percentiles: Sequence[float] = PERCENTILES, *, max_pixels: int = PERCENTILE_PIXELS
) -> tuple[np.ndarray, np.ndarray]:
    """Low and high percentile per channel of a ``(C, Y, X)`` image.

    Measured on the regular grid ``image[:, ::s, ::s]`` with ``s = ceil(sqrt(Y*X / max_pixels))``
    (no random offset): numpy, dask and xarray inputs of the same pixels give the same values.

    Returns
    -------
    low, high : ndarray of float64, shape (C,)
        ``high`` is at least ``low + 1`` raw unit where a channel is (nearly) constant.
    """
    data = getattr(image, "data", image) if not isinstance(image, np.ndarray) else image
    if len(data.shape) != 3:
        raise ValueError(f"expected a (C, Y, X) image, got shape {tuple(data.shape)}")
    _, h, w = data.shape
    step = max(1, int(np.ceil(np.sqrt(h * w / max_pixels))))
    sample = data[:, ::step, ::step]
    if hasattr(sample, "compute"):
        sample = sample.compute(scheduler="sync")
    x = np.asarray(sample, dtype=np.float64).reshape(data.shape[0], -1)
    if not np.isfinite(x).all():
        raise ValueError("image contains NaN or infinite pixels")
    lo, hi = np.percentile(x, [float(percentiles[0]), float(percentiles[1])], axis=1)
    span = hi - lo
    hi = np.where(span > 0, hi, lo + 1.0)
    return lo, hi


def to_unit_range(x: Any) -> np.ndarray:
    """Raw pixels as float32 scaled by the dtype's range.

    Parameters
    ----------
    x : ndarray
        Unsigned integers become ``x / iinfo.max`` (``[0, 1]``); signed integers ``x / iinfo.max``
        (``[-1, 1]``); booleans 0/1; floats are only cast to float32.

    Returns
    -------
    ndarray of float32
        Same shape as ``x``.
    """
    x = np.asarray(x)
    if x.dtype == np.bool_:
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        return (x.astype(np.float32) / np.float32(np.iinfo(x.dtype).max)).astype(np.float32)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    raise TypeError(f"cannot scale an image of dtype {x.dtype}")


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and standard deviation on the unit-range scale.

    Attributes
    ----------
    mean, std : tuple of float
        One value per channel on the unit scale; ``std`` is floored at ``1e-6``.
    intensity_max : tuple of float, optional
        Raw value that maps to 1 per channel (measured on the training images); None = the
        dtype's range (:func:`to_unit_range`).
    percentiles : (float, float), optional
        Per-image scaling: each image's low / high percentile per channel maps to 0 / 1
        (stored in ``ensemble.json``). Such a normalisation must be bound to an image with
        :meth:`for_image` before :meth:`unit` or :meth:`apply`.
    intensity_min : tuple of float, optional
        Raw value that maps to 0 per channel; set by :meth:`for_image` (never stored).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    intensity_max: tuple[float, ...] | None = None
    percentiles: tuple[float, float] | None = None
    intensity_min: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        mean = tuple(float(m) for m in self.mean)
        std = tuple(float(s) for s in self.std)
        if len(mean) != len(std) or not mean:
            raise ValueError(f"mean and std need one value per channel, got {mean} and {std}")
        if not all(np.isfinite(mean)) or not all(np.isfinite(std)) or min(std) <= 0:
            raise ValueError(f"mean must be finite and std positive, got {mean} and {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if self.intensity_max is not None:
            top = tuple(float(v) for v in self.intensity_max)
            if len(top) != len(mean) or not all(np.isfinite(top)) or min(top) <= 0:
                raise ValueError(f"intensity_max needs one positive value per channel, got {top}")
            object.__setattr__(self, "intensity_max", top)
        if self.percentiles is not None:
            pct = tuple(float(v) for v in self.percentiles)
            if len(pct) != 2 or not 0.0 <= pct[0] < pct[1] <= 100.0:
                raise ValueError(
                    f"percentiles must be (low, high) with 0 <= low < high <= 100, got {pct}"
                )
            object.__setattr__(self, "percentiles", pct)
        if self.intensity_min is not None:
            low = tuple(float(v) for v in self.intensity_min)
            if self.intensity_max is None or len(low) != len(mean):
                raise ValueError("intensity_min needs intensity_max and one value per channel")
            if not all(b > a for a, b in zip(low, self.intensity_max)):
                raise ValueError(
                    f"intensity_max {self.intensity_max} must exceed intensity_min {low}"
                )
            object.__setattr__(self, "intensity_min", low)

    @property
    def per_image(self) -> bool:
        """True when each image is scaled by its own percentiles."""
        return self.percentiles is not None

    def for_image(self, image: Any) -> Normalization:
        """This normalisation bound to one ``(C, Y, X)`` image (numpy, dask or xarray, level 0).

        Without per-image scaling (or when already bound) it is returned unchanged; otherwise a
        copy whose ``intensity_min`` / ``intensity_max`` are the image's percentiles.
        """
        if self.percentiles is None or self.intensity_min is not None:
            return self
        low, high = image_percentiles(image, self.percentiles)
        return replace(self, intensity_min=tuple(low.tolist()), intensity_max=tuple(high.tolist()))

    @property
    def n_channels(self) -> int:
        """Number of channels C."""
        return len(self.mean)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready ``{"mean": [...], "std": [...][, "intensity_max": [...]]}`` (stored in
        ``ensemble.json``)."""
        if self.intensity_min is not None:
            raise ValueError("a normalisation bound to one image (for_image) is not stored")
        d = {"mean": list(self.mean), "std": list(self.std)}
        if self.intensity_max is not None:
            d["intensity_max"] = list(self.intensity_max)
        if self.percentiles is not None:
            d["percentiles"] = list(self.percentiles)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalization:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        extra = set(d) - {"mean", "std", "intensity_max", "percentiles"}
        if extra:
            raise ValueError(
                f"unknown normalisation keys {sorted(extra)} "
                "(expected mean, std, intensity_max, percentiles)"
            )
        top, pct = d.get("intensity_max"), d.get("percentiles")
        return cls(
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            intensity_max=None if top is None else tuple(top),
            percentiles=None if pct is None else tuple(pct),
        )

    def unit(self, x: Any) -> np.ndarray:
        """Raw pixels ``(C, Y, X)`` as float32 on the unit scale (step 1 of the module notes)."""
        if self.percentiles is not None and self.intensity_min is None:
            raise ValueError("per-image normalisation: bind it to the image with for_image() first")
        if self.intensity_max is None:
            return to_unit_range(x)
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[0] != self.n_channels:
            raise ValueError(
                f"expected a (C, Y, X) image with C = {self.n_channels}, got shape {x.shape}"
            )
        top = np.asarray(self.intensity_max, dtype=np.float32)[:, None, None]
        if self.intensity_min is None:
            return (x.astype(np.float32) / top).astype(np.float32, copy=False)
        low = np.asarray(self.intensity_min, dtype=np.float32)[:, None, None]
        return np.maximum((x.astype(np.float32) - low) / (top - low), np.float32(0.0))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise a raw image or tile: :meth:`unit`, then :meth:`standardize`.

        Parameters
        ----------
        x : (C, Y, X) ndarray
            Raw pixels as stored.

        Returns
        -------
        (C, Y, X) ndarray of float32
        """
        return self.standardize(self.unit(x))

    def standardize(self, x: np.ndarray) -> np.ndarray:
        """Subtract the mean and divide by the std per channel of a unit-scale ``(C, Y, X)``
        float image (the output of :meth:`unit`, possibly augmented)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[0] != self.n_channels:
            raise ValueError(
                f"expected a (C, Y, X) image with C = {self.n_channels}, got shape {x.shape}"
            )
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return ((x - mean) / std).astype(np.float32, copy=False)


def channel_stats(
    images: Iterable[Any],
    *,
    max_pixels_per_image: int = 2**20,
    rng: np.random.Generator | None = None,
    names: Sequence[str] | None = None,
    intensity: str = "dtype",
) -> Normalization:
    """Per-channel mean and std over all pixels of the training images.

    Parameters
    ----------
    images : iterable of (C, Y, X) arrays
        numpy arrays or anything sliceable that ``np.asarray`` turns into one (dask arrays are
        computed per strided slice). Values are scaled with :func:`to_unit_range` first.
    max_pixels_per_image : int
        Larger images are subsampled on a regular grid of stride ``ceil(sqrt(Y*X / max))`` with
        a random offset, so at most about this many pixels per image enter the statistics.
    rng : numpy.random.Generator, optional
        Picks the grid offsets; default ``np.random.default_rng(0)`` (deterministic).
    names : sequence of str, optional
        What to call the images in errors (default: their index).
    intensity : {"dtype", "data", "percentile"}
        The unit scale: the dtype's range, the largest value per channel among the (sampled)
        pixels (recorded as ``intensity_max``), or each image's own :data:`PERCENTILES`
        (recorded as ``percentiles``; see :meth:`Normalization.for_image`).

    Returns
    -------
    Normalization
        Pooled over pixels (each pixel counts once); std floored at ``1e-6``.
    """
    if intensity not in ("dtype", "data", "percentile"):
        raise ValueError(f"intensity must be 'dtype', 'data' or 'percentile', got {intensity!r}")
    rng = np.random.default_rng(0) if rng is None else rng
    mean = m2 = top = None
    count = 0
    for i, img in enumerate(images):
        name = names[i] if names is not None else f"image {i}"
        if len(img.shape) != 3:
            raise ValueError(f"{name}: expected (C, Y, X), got shape {tuple(img.shape)}")
        c, h, w = img.shape
        bound = None
        if intensity == "percentile":
            unbound = Normalization(mean=(0.0,) * c, std=(1.0,) * c, percentiles=PERCENTILES)
            try:
                bound = unbound.for_image(img)
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
        step = max(1, int(np.ceil(np.sqrt(h * w / max_pixels_per_image))))
        if step > 1:
            oy, ox = (int(v) for v in rng.integers(0, step, size=2))
            img = img[:, oy::step, ox::step]
        raw = np.asarray(img)
        if bound is not None:
            x = bound.unit(raw).astype(np.float64)
        else:
            x = (to_unit_range(raw) if intensity == "dtype" else raw).astype(np.float64)
        x = x.reshape(img.shape[0], -1)
        if not np.isfinite(x).all():
            raise ValueError(f"{name}: image contains NaN or infinite pixels")
        n = x.shape[1]
        if n == 0:
            continue
        if mean is None:
            mean, m2 = np.zeros(x.shape[0]), np.zeros(x.shape[0])
        elif x.shape[0] != mean.shape[0]:
            raise ValueError(f"{name} has {x.shape[0]} channels, earlier ones {mean.shape[0]}")
        top = x.max(axis=1) if top is None else np.maximum(top, x.max(axis=1))
        # Chan et al. pairwise merge of (count, mean, M2): stable for many large images
        xm = x.mean(axis=1)
        xm2 = np.square(x - xm[:, None]).sum(axis=1)
        delta = xm - mean
        new = count + n
        mean = mean + delta * (n / new)
        m2 = m2 + xm2 + delta**2 * (count * n / new)
        count = new
    if mean is None:
        raise ValueError("channel_stats needs at least one non-empty image")
    std = np.sqrt(m2 / count)
    if intensity == "percentile":
        return Normalization(
            mean=tuple(mean.tolist()),
            std=tuple(np.maximum(std, STD_FLOOR).tolist()),
            percentiles=PERCENTILES,
        )
    if intensity == "dtype":
        return Normalization(
            mean=tuple(mean.tolist()), std=tuple(np.maximum(std, STD_FLOOR).tolist())
        )
    if (top <= 0).any():
        raise ValueError(
            f"intensity='data' needs a positive maximum per channel, got {top.tolist()}; "
            "use intensity='dtype'"
        )
    return Normalization(
        mean=tuple((mean / top).tolist()),
        std=tuple(np.maximum(std / top, STD_FLOOR).tolist()),
        intensity_max=tuple(top.tolist()),
    )
