"""Simulated expert annotators with realistic, personality-dependent disagreement."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ._synthetic_draw import Ellipses, rasterize_ellipses, smooth_field

__all__ = ["PERSONALITIES", "simulate_experts", "touching_pairs"]

#: Expert archetypes, cycled over ``expert_1, expert_2, ...``. ``bias_px``: signed boundary offset
#: (negative = tight outlines); ``jitter_px``: std of the smooth boundary noise; ``detect_snr``:
#: object SNR at which half of the objects are missed; ``p_merge``: probability of joining two
#: touching objects; ``p_extra``: probability of outlining an ambiguous structure that is not
#: an object; ``p_confuse``: probability of a wrong class (multiclass only).
PERSONALITIES = (
    {"personality": "conservative", "bias_px": -0.9, "jitter_px": 0.5, "detect_snr": 3.0,
     "p_merge": 0.05, "p_extra": 0.05, "p_confuse": 0.02},
    {"personality": "liberal", "bias_px": 1.1, "jitter_px": 0.7, "detect_snr": 1.4,
     "p_merge": 0.6, "p_extra": 0.45, "p_confuse": 0.04},
    {"personality": "balanced", "bias_px": 0.1, "jitter_px": 0.6, "detect_snr": 2.2,
     "p_merge": 0.2, "p_extra": 0.15, "p_confuse": 0.03},
    {"personality": "sloppy", "bias_px": 0.4, "jitter_px": 1.3, "detect_snr": 2.6,
     "p_merge": 0.35, "p_extra": 0.25, "p_confuse": 0.08},
    {"personality": "meticulous", "bias_px": -0.3, "jitter_px": 0.35, "detect_snr": 1.8,
     "p_merge": 0.1, "p_extra": 0.1, "p_confuse": 0.01},
)  # fmt: skip

# Half of the 8-neighbourhood: comparing each pixel with these offsets covers all neighbour pairs.
_OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))
_LAPSE = 0.01  # probability of missing even a bright object


def _neighbour_views(arr, dy, dx):
    """Views ``(arr[p], arr[p + (dy, dx)])`` over all pixels p where both are inside."""
    ys = slice(0, arr.shape[0] - dy)
    yt = slice(dy, None)
    xs = slice(max(0, -dx), arr.shape[1] - max(0, dx))
    xt = slice(max(0, dx), arr.shape[1] + min(0, dx))
    return (ys, xs), (yt, xt)


def touching_pairs(instances):
    """Pairs of instances that share an edge or corner.

    Parameters
    ----------
    instances : (Y, X) ndarray of int
        Instance labels, 0 = background.

    Returns
    -------
    pairs : (P, 2) ndarray of int64
        Sorted unique pairs ``(a, b)`` with ``a < b``.
    """
    found = []
    for dy, dx in _OFFSETS:
        s, t = _neighbour_views(instances, dy, dx)
        a, b = instances[s], instances[t]
        m = (a != b) & (a > 0) & (b > 0)
        found.append(np.stack([np.minimum(a[m], b[m]), np.maximum(a[m], b[m])], axis=1))
    pairs = np.concatenate(found).astype(np.int64)
    return np.unique(pairs, axis=0) if pairs.size else pairs.reshape(0, 2)


def personality(k):
    """Parameters of expert ``k`` (0-based); archetypes repeat with shifted bias after five."""
    p = dict(PERSONALITIES[k % len(PERSONALITIES)])
    p["bias_px"] += 0.2 * (k // len(PERSONALITIES)) * (-1) ** k
    return p


def _inner_distance(instances, fg):
    """Distance from each object pixel to its own instance outline (>= 1 inside, 0 outside)."""
    d_in = ndi.distance_transform_edt(fg)
    interface = np.zeros_like(fg)
    for dy, dx in _OFFSETS[:2]:
        s, t = _neighbour_views(instances, dy, dx)
        m = (instances[s] != instances[t]) & fg[s] & fg[t]
        interface[s] |= m
        interface[t] |= m
    if interface.any():
        d_in = np.minimum(d_in, ndi.distance_transform_edt(~interface) + 1.0)
    return d_in


def _separate(mask, owner, merged_keys, n_labels):
    """Cut 2-pixel gaps between differently owned regions unless their pair is in ``merged_keys``."""
    cut = np.zeros_like(mask)
    for dy, dx in _OFFSETS:
        s, t = _neighbour_views(owner, dy, dx)
        a, b = owner[s], owner[t]
        m = mask[s] & mask[t] & (a != b)
        if merged_keys.size and m.any():
            key = np.minimum(a[m], b[m]).astype(np.int64) * (n_labels + 1) + np.maximum(a[m], b[m])
            m[m] = ~np.isin(key, merged_keys)
        cut[s] |= m
        cut[t] |= m
    return mask & ~cut


def _fill_neck(mask, owner, a, b, boxes, radius=3):
    """Close the gap between the expert outlines of touching objects ``a`` and ``b``.

    ``boxes`` are the ground-truth bounding boxes (`scipy.ndimage.find_objects`); the window
    is padded to cover the expert's dilation.
    """
    pad = radius + 8
    box = [
        slice(max(0, min(sa.start, sb.start) - pad), min(n, max(sa.stop, sb.stop) + pad))
        for sa, sb, n in zip(boxes[a - 1], boxes[b - 1], mask.shape)
    ]
    win_mask, win_owner = mask[tuple(box)], owner[tuple(box)]
    pair = win_mask & ((win_owner == a) | (win_owner == b))
    disk = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius
    closed = ndi.binary_closing(pair, structure=disk, border_value=0)
    new = closed & ~win_mask
    win_mask |= new
    win_owner[new] = a


def _outside_distance(kept, keep, d_all, owner_all, boxes, reach):
    """Distance to, and label of, the nearest kept object pixel, exact up to ``reach``.

    Starts from the transform of all objects (``d_all``, ``owner_all``) and recomputes it in a
    window around each missed object only: a pixel whose nearest object is missed lies farther
    than ``reach`` from any kept object unless it is within ``reach`` of the missed object, and
    then its nearest kept pixel is within ``2 * reach`` of that object's box.
    """
    d_out, owner = d_all.copy(), owner_all.copy()
    for m in np.flatnonzero(~keep[1:]) + 1:
        box = boxes[m - 1]
        if box is None:
            continue
        outer = tuple(
            slice(max(0, b.start - 2 * reach), min(n, b.stop + 2 * reach))
            for b, n in zip(box, kept.shape)
        )
        inner = np.zeros(kept[outer].shape, dtype=bool)
        inner[
            tuple(
                slice(max(0, b.start - reach) - o.start, min(n, b.stop + reach) - o.start)
                for b, o, n in zip(box, outer, kept.shape)
            )
        ] = True
        target = inner & (owner_all[outer] == m)
        window = kept[outer]
        if window.any():
            dist, (iy, ix) = ndi.distance_transform_edt(~window, return_indices=True)
            labels = owner_all[outer][iy, ix]
        else:
            dist, labels = np.full(window.shape, np.inf), np.zeros(window.shape, np.int64)
        d_out[outer][target] = dist[target]
        owner[outer][target] = labels[target]
    return d_out, owner


def simulate_experts(rng, instances, classes, object_snr, *, pairs, debris, n_experts, n_classes):
    """Simulate ``n_experts`` semantic annotations of the ground-truth instances.

    Each expert follows a personality (`PERSONALITIES`): a signed boundary offset plus smooth
    random boundary noise, a detection threshold in object SNR (dim objects are missed more
    often), a probability of merging touching neighbours (the gap between them is filled), a
    probability of outlining ambiguous debris and small random false objects, and (multiclass)
    occasional class confusion. Separately drawn touching objects keep a 2-pixel gap.

    Parameters
    ----------
    rng : numpy.random.Generator
    instances : (Y, X) ndarray of uint32
        Ground-truth instances 1..N, 0 = background.
    classes : (N + 1,) ndarray of uint8
        Class of each instance label (index 0 unused).
    object_snr : (N + 1,) ndarray of float64
        Mean object signal over background noise std for each label (index 0 unused).
    pairs : (P, 2) ndarray of int64
        Touching instance pairs, from `touching_pairs`.
    debris : Ellipses
        Ambiguous non-object structures visible in the image.
    n_experts, n_classes : int

    Returns
    -------
    experts : dict of str to (Y, X) ndarray of uint8
        ``"expert_1"`` ... semantic masks, 0 = background, 1..n_classes.
    meta : dict
        Per expert: personality parameters and the drawn events (missed labels, merged pairs,
        relabelled objects, number of false objects). JSON-serialisable.
    """
    shape = instances.shape
    n = classes.shape[0] - 1
    fg = instances > 0
    d_in = _inner_distance(instances, fg)
    if fg.any():
        d_all, idx = ndi.distance_transform_edt(~fg, return_indices=True)
        owner_all = instances[idx[0], idx[1]].astype(np.int64)
        del idx
    debris_labels, _ = rasterize_ellipses(debris, shape)
    boxes = ndi.find_objects(instances)
    experts, meta = {}, {}
    for k in range(n_experts):
        p = personality(k)
        z = (object_snr[1:] - p["detect_snr"]) / (0.25 * p["detect_snr"])
        p_miss = _LAPSE + (1.0 - _LAPSE) / (1.0 + np.exp(np.clip(z, -50, 50)))
        keep = np.concatenate([[False], rng.random(n) >= p_miss])
        cls = classes.copy()
        if n_classes > 1:
            flip = np.flatnonzero(rng.random(n) < p["p_confuse"]) + 1
            cls[flip] = (cls[flip] - 1 + rng.integers(1, n_classes, flip.size)) % n_classes + 1
        else:
            flip = np.empty(0, dtype=np.int64)
        threshold = p["bias_px"] + p["jitter_px"] * smooth_field(rng, shape, 6.0)
        kept = keep[instances]
        mask = np.zeros(shape, dtype=bool)
        owner = np.zeros(shape, dtype=np.int64)
        if kept.any():
            reach = int(np.ceil(threshold.max())) + 2
            d_out, owner = _outside_distance(kept, keep, d_all, owner_all, boxes, reach)
            mask = np.where(kept, 0.5 - d_in, d_out - 0.5) < threshold
        both = keep[pairs[:, 0]] & keep[pairs[:, 1]] if pairs.size else np.zeros(0, bool)
        merged = pairs[both & (rng.random(len(pairs)) < p["p_merge"])]
        mask = _separate(mask, owner, merged[:, 0] * (n + 1) + merged[:, 1], n)
        for a, b in merged:
            _fill_neck(mask, owner, a, b, boxes)
        semantic = np.where(mask, cls[owner], 0).astype(np.uint8)
        # False objects: ambiguous debris, plus small blobs at random background positions.
        extra = np.flatnonzero(rng.random(len(debris)) < p["p_extra"])
        n_rand = int(rng.poisson(0.5 * p["p_extra"] * max(1.0, n / 20)))
        ry, rx = rng.uniform(0, shape[0], n_rand), rng.uniform(0, shape[1], n_rand)
        rr = rng.uniform(2.5, 5.0, n_rand)
        blobs = Ellipses(ry, rx, rr * 1.2, rr / 1.2, *Ellipses.random_shapes(rng, rr, 1.0)[2:])
        blob_labels, _ = rasterize_ellipses(blobs, shape)
        add = np.isin(debris_labels, extra + 1) | ((blob_labels > 0) & ~fg & (semantic == 0))
        add &= ndi.binary_dilation(semantic > 0, iterations=2) == 0
        if add.any():
            semantic[add] = rng.integers(1, n_classes + 1) if n_classes > 1 else 1
        name = f"expert_{k + 1}"
        experts[name] = semantic
        meta[name] = {
            **p,
            "missed": [int(v) for v in np.flatnonzero(~keep[1:]) + 1],
            "merged": merged.tolist(),
            "relabelled": [int(v) for v in flip],
            "n_extra": int(ndi.label(add)[1]) if add.any() else 0,
        }
    return experts, meta
