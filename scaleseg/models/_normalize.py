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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Normalization", "channel_stats", "to_unit_range"]

STD_FLOOR = 1e-6


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
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    intensity_max: tuple[float, ...] | None = None

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

    @property
    def n_channels(self) -> int:
        """Number of channels C."""
        return len(self.mean)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready ``{"mean": [...], "std": [...][, "intensity_max": [...]]}`` (stored in
        ``ensemble.json``)."""
        d = {"mean": list(self.mean), "std": list(self.std)}
        if self.intensity_max is not None:
            d["intensity_max"] = list(self.intensity_max)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalization:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        extra = set(d) - {"mean", "std", "intensity_max"}
        if extra:
            raise ValueError(
                f"unknown normalisation keys {sorted(extra)} (expected mean, std, intensity_max)"
            )
        top = d.get("intensity_max")
        return cls(
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            intensity_max=None if top is None else tuple(top),
        )

    def unit(self, x: Any) -> np.ndarray:
        """Raw pixels ``(C, Y, X)`` as float32 on the unit scale (step 1 of the module notes)."""
        if self.intensity_max is None:
            return to_unit_range(x)
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[0] != self.n_channels:
            raise ValueError(
                f"expected a (C, Y, X) image with C = {self.n_channels}, got shape {x.shape}"
            )
        top = np.asarray(self.intensity_max, dtype=np.float32)[:, None, None]
        return (x.astype(np.float32) / top).astype(np.float32, copy=False)

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
    intensity : {"dtype", "data"}
        The unit scale: the dtype's range, or the largest value per channel among the
        (sampled) pixels, recorded as ``intensity_max``.

    Returns
    -------
    Normalization
        Pooled over pixels (each pixel counts once); std floored at ``1e-6``.
    """
    if intensity not in ("dtype", "data"):
        raise ValueError(f"intensity must be 'dtype' or 'data', got {intensity!r}")
    rng = np.random.default_rng(0) if rng is None else rng
    mean = m2 = top = None
    count = 0
    for i, img in enumerate(images):
        name = names[i] if names is not None else f"image {i}"
        if len(img.shape) != 3:
            raise ValueError(f"{name}: expected (C, Y, X), got shape {tuple(img.shape)}")
        _, h, w = img.shape
        step = max(1, int(np.ceil(np.sqrt(h * w / max_pixels_per_image))))
        if step > 1:
            oy, ox = (int(v) for v in rng.integers(0, step, size=2))
            img = img[:, oy::step, ox::step]
        raw = np.asarray(img)
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
