"""Deterministic synthetic fluorescence images with instance ground truth and simulated experts.

The generator mimics low-SNR fluorescence microscopy of cells or nuclei (the setting of the
deepflash2 paper): irregular elliptical objects of varied size, some touching, a fraction dim;
smooth illumination and autofluorescence; Poisson plus Gaussian camera noise at a chosen SNR;
and several simulated experts whose annotations disagree the way human annotators do.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ._synthetic_draw import Ellipses, place_ellipses, rasterize_ellipses, smooth_field
from ._synthetic_experts import simulate_experts, touching_pairs
from ._synthetic_ood import OOD_KINDS, particles_signal, stain_photons, vessels_signal

__all__ = ["OOD_KINDS", "SyntheticSample", "make_dataset", "make_sample"]

# Per-class style (radius factor, aspect ratio, brightness factor); class c uses row (c-1) % 6.
_CLASS_STYLES = np.array(
    [[1.0, 1.0, 1.0], [0.65, 1.9, 1.8], [1.45, 1.15, 0.55],
     [0.8, 1.0, 2.2], [1.2, 2.4, 1.2], [0.55, 1.3, 0.8]]
)  # fmt: skip
_MEAN_RADIUS = 8.0  # pixels
_DENSITY = 28.0  # expected objects per 256 x 256 pixels
_DIM_FRACTION = 0.2  # objects drawn at 10-30 % of the typical brightness
_P_TOUCH = 0.3  # fraction of objects placed against another one
_PSF_SIGMA = 1.0  # pixels
_GAIN = 2.0  # digital numbers per photon
_OFFSET = 100.0  # camera offset in digital numbers
_NOISE_OOD_SNR = 0.12  # SNR factor of the "noise" variant


@dataclass(frozen=True)
class SyntheticSample:
    """One synthetic image with its ground truth and expert annotations.

    Attributes
    ----------
    name : str
        ``"syn_0003"`` in distribution, ``"ood_<kind>_0003"`` out of distribution.
    image : (C, Y, X) ndarray of uint16
        Fluorescence-like camera image (offset 100, 2 digital numbers per photon).
    instances : (Y, X) ndarray of uint32
        Instance ground truth 1..N, 0 = background.
    semantic : (Y, X) ndarray of uint8
        Class ground truth 1..n_classes, 0 = background; ``semantic > 0 == instances > 0``.
    experts : dict of str to (Y, X) ndarray of uint8
        ``"expert_1"``, ... simulated semantic annotations with the same class coding.
    ood : str or None
        None in distribution, else one of `OOD_KINDS`.
    meta : dict
        JSON-serialisable generation record: ``seed``, ``snr``, ``snr_effective``,
        ``n_objects``, per-object columns in ``objects`` (label, class, centroid, semi-axes,
        area, brightness, snr, dim), ``touching_pairs``, per-channel ``background_dn`` and
        ``noise_std_dn``, and per-expert parameters and events in ``experts``.
    """

    name: str
    image: np.ndarray
    instances: np.ndarray
    semantic: np.ndarray
    experts: dict[str, np.ndarray]
    ood: str | None
    meta: dict


def _rng(seed, stream):
    return np.random.default_rng([seed, stream])


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _layout(rng, shape, n_objects, n_classes):
    """Draw and place objects; returns (ellipses, class, relative brightness, dim, touching)."""
    if n_objects is None:
        n_objects = max(1, int(rng.poisson(_DENSITY * shape[0] * shape[1] / 256**2)))
    n = n_objects
    cls = rng.integers(1, n_classes + 1, n)
    style = _CLASS_STYLES[(cls - 1) % len(_CLASS_STYLES)]
    radius = _MEAN_RADIUS * style[:, 0] * rng.lognormal(0.0, 0.22, n)
    aspect = style[:, 1] * (1.0 + np.abs(rng.normal(0.0, 0.2, n)))
    a, b, theta, amp, phase = Ellipses.random_shapes(rng, radius, aspect)
    cy, cx, touch = place_ellipses(rng, shape, a, b, theta, p_touch=_P_TOUCH)
    dim = rng.random(n) < _DIM_FRACTION
    w = np.where(dim, rng.uniform(0.1, 0.3, n), rng.lognormal(0.0, 0.3, n)) * style[:, 2]
    ok = ~np.isnan(cy)
    # Re-index "placed against" to the surviving objects (1-based, 0 = placed freely).
    new_index = np.cumsum(ok)
    touch = np.where(touch >= 0, new_index[np.maximum(touch, 0)], 0)
    ell = Ellipses(cy, cx, a, b, theta, amp, phase).take(ok)
    return ell, cls[ok], w[ok], dim[ok], touch[ok]


def _extra_ellipses(rng, shape, avoid, n, radius):
    """Small round objects placed away from ``avoid`` (an `Ellipses`)."""
    r = radius * rng.lognormal(0.0, 0.2, n)
    a, b, theta, amp, phase = Ellipses.random_shapes(rng, r, 1.0 + np.abs(rng.normal(0, 0.2, n)))
    disc = (avoid.cy, avoid.cx, 1.2 * np.sqrt(avoid.a * avoid.b))
    cy, cx, _ = place_ellipses(rng, shape, a, b, theta, p_touch=0.0, avoid=disc, max_tries=10)
    ok = ~np.isnan(cy)
    return Ellipses(cy, cx, a, b, theta, amp, phase).take(ok)


def _channel_signals(rng_for, ell, labels, score, w, n_channels):
    """Noise-free, PSF-blurred signals per channel, each normalised to mean 1 on its foreground.

    Channel 0 is the object stain; channel 1 a nuclear counterstain (every object plus
    unlabelled nuclei); channel 2 a membrane-like outline; further channels a cytoplasmic
    stain with independent per-object brightness.
    """
    shape = labels.shape
    fg = labels > 0
    profile = np.where(fg, 1.0 - 0.3 * np.minimum(score, 1.0) ** 2, 0.0)
    signals = []
    for c in range(n_channels):
        rng = rng_for(c)
        texture = 1.0 + 0.15 * smooth_field(rng, shape, 2.0)
        if c == 1:
            jitter = rng.normal(0.0, 0.12, (2, len(ell))) * ell.b
            nuclei = ell.scaled(0.5, dy=jitter[0], dx=jitter[1])
            unlabelled = _extra_ellipses(rng, shape, ell, len(ell) // 2, 0.5 * _MEAN_RADIUS)
            nuclei_all = Ellipses.concat(nuclei, unlabelled)
            nlab, nscore = rasterize_ellipses(nuclei_all, shape)
            gain = np.concatenate([[0.0], rng.lognormal(0.0, 0.25, len(nuclei_all))])
            sig = np.where(nlab > 0, gain[nlab] * (1.0 - 0.3 * np.minimum(nscore, 1.0) ** 2), 0.0)
            on = nlab > 0
        elif c == 2:
            sig = np.exp(-0.5 * ((score - 1.0) / 0.08) ** 2)
            on = sig > 0.5
        else:
            weight = w if c == 0 else w * rng.lognormal(0.0, 0.5, w.shape)
            sig = np.concatenate([[0.0], weight])[labels] * profile
            on = fg
        sig = ndi.gaussian_filter((sig * texture).astype(np.float32), _PSF_SIGMA)
        mean_on = float(sig[on].mean()) if on.any() else 1.0
        signals.append(sig / mean_on)
    return np.stack(signals)


def _background(rng, shape):
    """Expected background photons (Y, X): smooth illumination plus autofluorescence."""
    level = rng.uniform(60.0, 140.0)
    illum = 1.0 + 0.15 * smooth_field(rng, shape, max(shape) / 2.5)
    auto = 0.08 * smooth_field(rng, shape, 16.0)
    return level * np.clip(illum + auto, 0.3, None)


def make_sample(
    seed,
    *,
    shape=(256, 256),
    n_channels=1,
    n_classes=1,
    n_objects=None,
    snr=8.0,
    n_experts=3,
    ood=None,
    name=None,
):
    """Generate one synthetic fluorescence image with ground truth and expert annotations.

    Everything is determined by ``seed``: the object layout, the experts' annotations and the
    background do not depend on ``snr`` or ``ood``, so ``ood="noise"`` with the same seed shows
    the same objects as the in-distribution sample.

    **SNR** is the mean noise-free object signal above the local background, taken over all
    object pixels of channel 0, divided by the standard deviation of the noise in the
    background, ``sqrt(mean background photons + read noise**2)`` (Poisson plus Gaussian
    camera noise). Every further channel is scaled to the same SNR over its own foreground.
    A fifth of the objects are dim (object SNR about ``0.23 * snr``).

    Parameters
    ----------
    seed : int
        Non-negative seed of `numpy.random.default_rng`.
    shape : tuple of int
        ``(Y, X)``, each at least 16.
    n_channels : int
        Channel 0: object stain; 1: nuclear counterstain; 2: membrane-like; 3+: cytoplasmic.
    n_classes : int
        Objects get classes ``1..n_classes`` differing in size, elongation and brightness.
    n_objects : int, optional
        Objects to place (some may not fit); default Poisson with mean 28 per 256 x 256 pixels.
    snr : float
        Signal-to-noise ratio as defined above (> 0).
    n_experts : int
        Simulated annotators; personalities cycle through conservative, liberal, balanced,
        sloppy, meticulous (see ``_synthetic_experts.PERSONALITIES``).
    ood : str, optional
        Out-of-distribution variant, one of `OOD_KINDS`: ``"stain"`` (brightfield-like H&E
        absorption, dark objects on a bright textured background), ``"vessels"`` (branching
        tubes that are not objects), ``"particles"`` (many small, very bright spots),
        ``"noise"`` (SNR times 0.12, row banding and hot pixels). Ground truth and experts
        still describe the objects only.
    name : str, optional
        Defaults to ``"syn_<seed>"`` or ``"ood_<kind>_<seed>"``.

    Returns
    -------
    SyntheticSample
    """
    seed = _check_int("seed", seed, 0)
    if not isinstance(shape, tuple | list) or len(shape) != 2:
        raise ValueError(f"shape must be (Y, X), got {shape!r}")
    shape = tuple(_check_int("shape", s, 16) for s in shape)
    n_channels = _check_int("n_channels", n_channels, 1)
    n_classes = _check_int("n_classes", n_classes, 1)
    if n_classes > 255:
        raise ValueError(f"n_classes must be <= 255 (uint8 labels), got {n_classes}")
    if n_objects is not None:
        n_objects = _check_int("n_objects", n_objects, 0)
    n_experts = _check_int("n_experts", n_experts, 0)
    if not (isinstance(snr, numbers.Real) and np.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be a positive finite number, got {snr!r}")
    if ood is not None and ood not in OOD_KINDS:
        raise ValueError(f"ood must be None or one of {OOD_KINDS}, got {ood!r}")

    ell, cls, w, dim, touch = _layout(_rng(seed, 0), shape, n_objects, n_classes)
    labels, score = rasterize_ellipses(ell, shape, reach=1.3)
    # Objects hidden by neighbours or cut by the border to nothing are dropped; relabel 1..N.
    present = np.bincount(labels.ravel(), minlength=len(ell) + 1)[1:] > 0
    lut = np.concatenate([[0], np.cumsum(present) * present]).astype(np.uint32)
    instances = lut[labels]
    ell, cls, w, dim = ell.take(present), cls[present], w[present], dim[present]
    touch = lut[touch][present]
    n = len(ell)

    rng_render = _rng(seed, 1)
    debris = _extra_ellipses(rng_render, shape, ell, int(rng_render.poisson(0.12 * n)), 4.0)
    signals = _channel_signals(lambda c: _rng(seed, 10 + c), ell, instances, score, w, n_channels)
    fg = instances > 0
    counts = np.bincount(instances.ravel(), minlength=n + 1).astype(np.float64)
    rel = np.bincount(instances.ravel(), signals[0].ravel(), minlength=n + 1) / np.maximum(
        counts, 1
    )
    object_snr = snr * rel

    snr_eff = snr * (_NOISE_OOD_SNR if ood == "noise" else 1.0)
    rng_noise = _rng(seed, 2)
    rng_ood = _rng(seed, 3)
    extra = np.zeros(shape, dtype=np.float32)
    if ood == "vessels":
        extra = 1.3 * vessels_signal(rng_ood, shape)
    elif ood == "particles":
        extra = 12.0 * particles_signal(rng_ood, shape)
    debris_lab, debris_score = rasterize_ellipses(debris, shape)
    debris_sig = ndi.gaussian_filter(
        np.where(debris_lab > 0, 0.3 * (1.0 - 0.5 * np.minimum(debris_score, 1) ** 2), 0),
        _PSF_SIGMA,
    )
    photons, bg_dn, noise_dn, read = [], [], [], []
    for c in range(n_channels):
        bg = _background(rng_noise, shape)
        read.append(rng_noise.uniform(1.5, 3.0))
        sigma_b = np.sqrt(bg.mean() + read[c] ** 2)
        lam = bg + snr_eff * sigma_b * (signals[c] + (debris_sig if c == 0 else 0) + extra)
        photons.append(lam)
        bg_dn.append(_OFFSET + _GAIN * float(bg.mean()))
        noise_dn.append(_GAIN * float(sigma_b))
    photons = np.stack(photons)
    if ood == "stain":
        stain_obj = ndi.gaussian_filter(np.where(fg, 1.0 - 0.3 * np.minimum(score, 1) ** 2, 0), 1.0)
        photons = stain_photons(rng_ood, stain_obj, n_channels=n_channels)
    counts_ph = rng_noise.poisson(photons).astype(np.float64)
    read_arr = np.asarray(read)[:, None, None]
    dn = _OFFSET + _GAIN * (counts_ph + read_arr * rng_noise.standard_normal(photons.shape))
    if ood == "noise":
        sigma = np.asarray(noise_dn)[:, None, None]
        dn += sigma * rng_ood.normal(0.0, 0.7, (n_channels, shape[0], 1))
        hot = rng_ood.random(dn.shape) < 0.002
        dn[hot] += sigma.max() * rng_ood.uniform(5.0, 30.0, int(hot.sum()))
    image = np.clip(np.rint(dn), 0, np.iinfo(np.uint16).max).astype(np.uint16)

    classes = np.concatenate([[0], cls]).astype(np.uint8)
    semantic = classes[instances]
    pairs = touching_pairs(instances)
    experts, experts_meta = simulate_experts(
        _rng(seed, 4), instances, classes, object_snr,
        pairs=pairs, debris=debris, n_experts=n_experts, n_classes=n_classes,
    )  # fmt: skip

    com = ndi.center_of_mass(fg, instances, np.arange(1, n + 1)) if n else []
    meta = {
        "seed": seed,
        "shape": list(shape),
        "n_channels": n_channels,
        "n_classes": n_classes,
        "snr": float(snr),
        "snr_effective": float(snr_eff),
        "n_objects": n,
        "n_debris": len(debris),
        "gain": _GAIN,
        "offset_dn": _OFFSET,
        "background_dn": bg_dn,
        "noise_std_dn": noise_dn,
        "ood": ood,
        "objects": {
            "label": list(range(1, n + 1)),
            "class": [int(v) for v in cls],
            "centroid_y": [round(float(c[0]), 2) for c in com],
            "centroid_x": [round(float(c[1]), 2) for c in com],
            "semi_axis_a": [round(float(v), 2) for v in ell.a],
            "semi_axis_b": [round(float(v), 2) for v in ell.b],
            "area": [int(v) for v in counts[1:]],
            "brightness": [round(float(v), 4) for v in rel[1:]],
            "snr": [round(float(v), 3) for v in object_snr[1:]],
            "dim": [bool(v) for v in dim],
            "placed_against": [int(v) for v in touch],
        },
        "touching_pairs": pairs.tolist(),
        "experts": experts_meta,
    }
    if name is None:
        name = f"syn_{seed:04d}" if ood is None else f"ood_{ood}_{seed:04d}"
    return SyntheticSample(
        name=name,
        image=image,
        instances=instances,
        semantic=semantic,
        experts=experts,
        ood=ood,
        meta=meta,
    )


def make_dataset(n_images, *, seed=0, n_ood=0, ood_kinds=OOD_KINDS, **sample_kwargs):
    """Generate a list of synthetic samples, the last ``n_ood`` of them out of distribution.

    Parameters
    ----------
    n_images : int
        Total number of samples.
    seed : int
        Dataset seed; sample ``i`` uses ``meta["seed"]``, derived from ``(seed, i)``, so
        ``make_sample(s.meta["seed"], ood=s.ood, ...)`` reproduces any sample ``s``.
    n_ood : int
        Number of out-of-distribution samples (at most ``n_images``), cycling through
        ``ood_kinds``.
    ood_kinds : sequence of str
        Subset of `OOD_KINDS`.
    **sample_kwargs
        Passed to `make_sample` (not ``ood`` or ``name``).

    Returns
    -------
    list of SyntheticSample
        Named ``syn_0000``, ... and ``ood_<kind>_<index>``.
    """
    n_images = _check_int("n_images", n_images, 0)
    seed = _check_int("seed", seed, 0)
    n_ood = _check_int("n_ood", n_ood, 0)
    if n_ood > n_images:
        raise ValueError(f"n_ood ({n_ood}) must not exceed n_images ({n_images})")
    ood_kinds = tuple(ood_kinds)
    bad = [k for k in ood_kinds if k not in OOD_KINDS]
    if bad or (n_ood and not ood_kinds):
        raise ValueError(f"ood_kinds must be a non-empty subset of {OOD_KINDS}, got {ood_kinds!r}")
    clash = {"ood", "name"} & set(sample_kwargs)
    if clash:
        raise TypeError(f"make_dataset sets {sorted(clash)} itself; do not pass them")
    samples = []
    n_id = n_images - n_ood
    for i in range(n_images):
        sample_seed = int(np.random.SeedSequence(seed, spawn_key=(i,)).generate_state(1)[0])
        ood = None if i < n_id else ood_kinds[(i - n_id) % len(ood_kinds)]
        name = f"syn_{i:04d}" if ood is None else f"ood_{ood}_{i:04d}"
        samples.append(make_sample(sample_seed, ood=ood, name=name, **sample_kwargs))
    return samples
