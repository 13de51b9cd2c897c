"""Drawing primitives for the synthetic generator: random fields, object layout, rasterisation.

All functions are pure numpy/scipy and take an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["Ellipses", "place_ellipses", "rasterize_ellipses", "smooth_field"]

# Harmonics k = 2, 3, 4 of the angular radius modulation (irregular, blob-like outlines).
_HARMONICS = np.array([2.0, 3.0, 4.0])


def smooth_field(rng, shape, scale):
    """Zero-mean, unit-variance smooth random field.

    Small scales filter full-size white noise with a Gaussian of sigma ``scale``; large scales
    interpolate a white-noise grid of node spacing ``scale`` with separable Gaussian kernels,
    which is much faster than filtering with a wide kernel.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of int
        ``(Y, X)``.
    scale : float
        Correlation length in pixels (> 0).

    Returns
    -------
    field : (Y, X) ndarray of float32
    """
    if scale < 8.0:  # filtering full-size noise is cheaper than the basis product here
        field = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), scale)
        field -= field.mean()
        std = float(field.std())
        return field / std if std > 0 else field
    bases = []
    for n in shape:
        n_nodes = int(np.ceil(n / scale)) + 5
        centres = (np.arange(n_nodes, dtype=np.float32) - 2.0) * scale
        pos = np.arange(n, dtype=np.float32)
        bases.append(np.exp(-0.5 * ((pos[:, None] - centres[None, :]) / scale) ** 2))
    weights = rng.standard_normal((bases[0].shape[1], bases[1].shape[1]), dtype=np.float32)
    field = bases[0] @ weights @ bases[1].T
    field -= field.mean()
    std = float(field.std())
    return field / std if std > 0 else field


class Ellipses:
    """Column store of irregular ellipses (object outlines).

    Attributes
    ----------
    cy, cx : (N,) ndarray of float64
        Centre in pixels.
    a, b : (N,) ndarray of float64
        Semi-axes in pixels (``a`` along the direction ``theta``).
    theta : (N,) ndarray of float64
        Orientation in radians.
    amp, phase : (N, 3) ndarray of float64
        Amplitudes and phases of the angular harmonics k = 2, 3, 4 of the outline.
    """

    __slots__ = ("cy", "cx", "a", "b", "theta", "amp", "phase")

    def __init__(self, cy, cx, a, b, theta, amp, phase):
        self.cy = np.asarray(cy, dtype=np.float64)
        self.cx = np.asarray(cx, dtype=np.float64)
        self.a = np.asarray(a, dtype=np.float64)
        self.b = np.asarray(b, dtype=np.float64)
        self.theta = np.asarray(theta, dtype=np.float64)
        self.amp = np.asarray(amp, dtype=np.float64).reshape(-1, 3)
        self.phase = np.asarray(phase, dtype=np.float64).reshape(-1, 3)

    def __len__(self):
        return self.cy.shape[0]

    def take(self, index):
        """Return the subset ``index`` (boolean mask or integer array) as a new `Ellipses`."""
        return Ellipses(*(getattr(self, k)[index] for k in self.__slots__))

    def scaled(self, factor, *, dy=0.0, dx=0.0):
        """Return a copy with semi-axes multiplied by ``factor`` and centres shifted."""
        return Ellipses(
            self.cy + dy, self.cx + dx, self.a * factor, self.b * factor,
            self.theta, self.amp, self.phase,
        )  # fmt: skip

    @staticmethod
    def concat(first, second):
        """Return the objects of ``first`` followed by those of ``second``."""
        return Ellipses(
            *(np.concatenate([getattr(first, k), getattr(second, k)]) for k in Ellipses.__slots__)
        )

    @staticmethod
    def random_shapes(rng, radius, aspect):
        """Random orientation and outline harmonics for given mean radii and aspect ratios.

        ``radius`` and ``aspect`` are (N,) arrays; returns ``(a, b, theta, amp, phase)``.
        """
        n = radius.shape[0]
        a = radius * np.sqrt(aspect)
        b = radius / np.sqrt(aspect)
        theta = rng.uniform(0.0, np.pi, n)
        amp = rng.uniform(0.0, 0.07, (n, 3)) / np.sqrt(_HARMONICS - 1.0)
        phase = rng.uniform(0.0, 2 * np.pi, (n, 3))
        return a, b, theta, amp, phase


def _radius_along(a, b, theta, direction):
    """Radius of an ellipse along ``direction`` (radians), ignoring harmonics."""
    phi = direction - theta
    return a * b / np.sqrt((b * np.cos(phi)) ** 2 + (a * np.sin(phi)) ** 2)


def place_ellipses(rng, shape, a, b, theta, *, p_touch=0.3, avoid=None, max_tries=40):
    """Place ellipses without overlap, a fraction of them touching an earlier one.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of int
        ``(Y, X)``; centres are drawn inside the image.
    a, b, theta : (N,) ndarray of float64
        Semi-axes and orientations of the candidates, in placement order.
    p_touch : float
        Probability that a candidate is placed in contact with an already placed ellipse.
    avoid : tuple of ndarray, optional
        ``(cy, cx, r)`` of discs that must not be overlapped (e.g. existing objects).
    max_tries : int
        Random positions tried before a candidate is dropped.

    Returns
    -------
    cy, cx : (N,) ndarray of float64
        Centres; NaN for dropped candidates.
    touching : (N,) ndarray of int64
        Index of the ellipse a candidate was placed against, -1 when placed freely.
    """
    n = a.shape[0]
    ymax, xmax = shape
    r_eff = np.sqrt(a * b)
    r_max = a * 1.2
    cy = np.full(n, np.nan)
    cx = np.full(n, np.nan)
    touching = np.full(n, -1, dtype=np.int64)
    if avoid is None:
        avoid = (np.empty(0), np.empty(0), np.empty(0))
    placed = []
    for i in range(n):
        idx = np.asarray(placed, dtype=np.int64)
        py = np.concatenate([cy[idx], avoid[0]])
        px = np.concatenate([cx[idx], avoid[1]])
        pr = np.concatenate([r_eff[idx], avoid[2]])
        pr_max = np.concatenate([r_max[idx], avoid[2]])
        for _ in range(max_tries):
            j = -1
            if placed and rng.random() < p_touch:
                j = placed[int(rng.integers(len(placed)))]
                direction = rng.uniform(0.0, 2 * np.pi)
                dist = _radius_along(a[j], b[j], theta[j], direction)
                dist += _radius_along(a[i], b[i], theta[i], direction + np.pi)
                dist *= rng.uniform(0.88, 0.97)
                y = cy[j] + dist * np.sin(direction)
                x = cx[j] + dist * np.cos(direction)
                if not (0 <= y < ymax and 0 <= x < xmax):
                    continue
                d = np.hypot(py - y, px - x)
                others = np.ones(d.shape, dtype=bool)
                others[placed.index(j)] = False
                ok = np.all(d[others] >= 1.05 * (r_eff[i] + pr[others]) + 1.0)
            else:
                y = rng.uniform(0, ymax)
                x = rng.uniform(0, xmax)
                ok = np.all(np.hypot(py - y, px - x) >= r_max[i] + pr_max + 2.0)
            if ok:
                cy[i], cx[i], touching[i] = y, x, j
                placed.append(i)
                break
    return cy, cx, touching


def rasterize_ellipses(ell, shape, *, reach=1.0):
    """Rasterise irregular ellipses into a label image (closest outline wins overlaps).

    Parameters
    ----------
    ell : Ellipses
        N objects.
    shape : tuple of int
        ``(Y, X)``.
    reach : float
        Also compute the normalised radius out to ``reach`` times the outline (>= 1).

    Returns
    -------
    labels : (Y, X) ndarray of int32
        ``i + 1`` where object ``i`` covers the pixel, 0 elsewhere.
    score : (Y, X) ndarray of float32
        Smallest normalised radius over all objects (0 at a centre, 1 on the outline,
        ``inf`` farther than ``reach``).
    """
    labels = np.zeros(shape, dtype=np.int32)
    score = np.full(shape, np.inf, dtype=np.float32)
    ymax, xmax = shape
    for i in range(len(ell)):
        cy, cx, a, b = ell.cy[i], ell.cx[i], ell.a[i], ell.b[i]
        r = a * (1.0 + ell.amp[i].sum()) * reach + 2.0
        y0, y1 = max(0, int(cy - r)), min(ymax, int(cy + r) + 2)
        x0, x1 = max(0, int(cx - r)), min(xmax, int(cx + r) + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        yy = (np.arange(y0, y1) - cy)[:, None]
        xx = (np.arange(x0, x1) - cx)[None, :]
        c, s = np.cos(ell.theta[i]), np.sin(ell.theta[i])
        un = (xx * c + yy * s) / a
        vn = (yy * c - xx * s) / b
        phi = np.arctan2(vn, un)[..., None]
        rmod = 1.0 + np.sum(ell.amp[i] * np.cos(_HARMONICS * phi + ell.phase[i]), axis=-1)
        sc = (np.hypot(un, vn) / rmod).astype(np.float32)
        sc[sc > reach] = np.inf
        sub_score = score[y0:y1, x0:x1]
        better = sc < sub_score
        sub_score[better] = sc[better]
        labels[y0:y1, x0:x1][better & (sc < 1.0)] = i + 1
    return labels, score
