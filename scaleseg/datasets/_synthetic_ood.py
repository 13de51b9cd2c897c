"""Out-of-distribution appearance variants for the synthetic generator."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ._synthetic_draw import smooth_field

__all__ = ["OOD_KINDS", "particles_signal", "stain_photons", "vessels_signal"]

#: Out-of-distribution variants understood by `make_sample` (``ood=``).
OOD_KINDS: tuple[str, ...] = ("stain", "vessels", "particles", "noise")

# Optical densities per RGB channel of hematoxylin and eosin (Ruifrok & Johnston 2001).
_HEMATOXYLIN = np.array([0.65, 0.70, 0.29])
_EOSIN = np.array([0.07, 0.99, 0.11])


def stain_photons(rng, objects, *, n_channels, white=2500.0):
    """Expected photon counts of a brightfield, H&E-like stained rendering of the objects.

    Parameters
    ----------
    rng : numpy.random.Generator
    objects : (Y, X) ndarray of float32
        Noise-free object signal (arbitrary units, 0 outside objects).
    n_channels : int
        Three or more channels get RGB-like absorption; fewer get a grey rendering.
    white : float
        Transmitted light without any stain, in photons.

    Returns
    -------
    photons : (C, Y, X) ndarray of float64
        Dark, granular objects on a bright, textured background.
    """
    shape = objects.shape
    obj = objects / max(float(objects.max()), 1e-6)
    chromatin = 1.0 + 0.35 * smooth_field(rng, shape, 1.5)
    od_h = 1.1 * np.sqrt(obj) * chromatin + 0.05
    od_e = 0.3 + 0.12 * smooth_field(rng, shape, 12.0) + 0.08 * smooth_field(rng, shape, 2.0)
    out = np.empty((n_channels, *shape))
    for c in range(n_channels):
        if n_channels >= 3:
            h, e = _HEMATOXYLIN[c % 3], _EOSIN[c % 3]
        else:
            h, e = _HEMATOXYLIN.mean(), _EOSIN.mean()
        out[c] = white * np.exp(-(h * od_h + e * np.clip(od_e, 0.0, None)))
    return out


def vessels_signal(rng, shape, *, width=(3.0, 8.0)):
    """Branching tube network with bright walls (unit peak), absent from the ground truth.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of int
        ``(Y, X)``.
    width : tuple of float
        Range of trunk diameters in pixels; branches are thinner.

    Returns
    -------
    signal : (Y, X) ndarray of float32
        Values in [0, 1].
    """
    ymax, xmax = shape
    centre = np.zeros(shape, dtype=bool)
    diameter = np.zeros(shape, dtype=np.float32)
    n_trees = max(1, round(2 * np.sqrt(ymax * xmax) / 256))
    stack = []
    for _ in range(n_trees):
        side = int(rng.integers(4))
        t = rng.uniform(0.1, 0.9)
        start = [(0.0, t * xmax), (ymax - 1.0, t * xmax), (t * ymax, 0.0), (t * ymax, xmax - 1.0)]
        heading = (np.pi / 2, -np.pi / 2, 0.0, np.pi)[side] + rng.normal(0.0, 0.3)
        stack.append((*start[side], heading, rng.uniform(*width), 0))
    max_steps = int(1.5 * max(shape))
    while stack:
        y, x, heading, w, depth = stack.pop()
        headings = heading + np.cumsum(rng.normal(0.0, 0.06, max_steps))
        ys = y + np.cumsum(np.sin(headings))
        xs = x + np.cumsum(np.cos(headings))
        outside = (ys < 0) | (ys >= ymax) | (xs < 0) | (xs >= xmax)
        n = int(np.argmax(outside)) if outside.any() else max_steps
        iy, ix = ys[:n].astype(np.intp), xs[:n].astype(np.intp)
        centre[iy, ix] = True
        diameter[iy, ix] = w
        if depth < 3 and w > 2.0 and n > 8:
            for i in np.sort(rng.integers(0, n, rng.poisson(1.5))):
                turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.0)
                stack.append((ys[i], xs[i], headings[i] + turn, 0.7 * w, depth + 1))
    if not centre.any():
        return np.zeros(shape, dtype=np.float32)
    dist, idx = ndi.distance_transform_edt(~centre, return_indices=True)
    radius = diameter[idx[0], idx[1]] / 2.0
    wall = np.exp(-0.5 * ((dist - radius) / 1.0) ** 2)
    lumen = 0.3 * (dist < radius)
    return np.maximum(wall, lumen).astype(np.float32)


def particles_signal(rng, shape, *, density=400.0):
    """Many small, diffraction-limited bright particles (unit mean peak).

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of int
        ``(Y, X)``.
    density : float
        Expected number of particles per 256 x 256 pixels.

    Returns
    -------
    signal : (Y, X) ndarray of float32
        Peaks with brightness spread 0.5-2 around 1.
    """
    n = int(rng.poisson(density * shape[0] * shape[1] / 256**2))
    impulses = np.zeros(shape, dtype=np.float32)
    ys = rng.integers(0, shape[0], n)
    xs = rng.integers(0, shape[1], n)
    np.add.at(impulses, (ys, xs), rng.uniform(0.5, 2.0, n).astype(np.float32))
    sigma = 0.9
    return ndi.gaussian_filter(impulses, sigma) * np.float32(2 * np.pi * sigma**2)
