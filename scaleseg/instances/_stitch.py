"""Stitching instance labels computed per block (kernels: numpy/scipy only).

The scheme of ``dask_image.ndmeasure.label`` -- offset labels per block, connect them across
block faces, relabel -- with two fixes over ``cellpose.contrib.distributed_segmentation``:
ids are 64-bit (no overflow past ``2**32`` objects or blocks) and no block ever loads the global
relabel table, only its own slice of it.

One unit of work (image, block) labels its core + halo region with any method, then

1. :func:`provisional_ids` makes its ids globally unique: ``(block_number << ID_BITS) | local``;
2. writes its core's provisional labels to storage and returns :func:`face_strips` (its core
   ids and thin strips along the four faces of its core, ``O(perimeter x halo)`` pixels).

The driver matches the strips of neighbouring blocks (:func:`match_neighbours` /
:func:`match_faces`), takes connected components of the merge graph (:func:`merge_pairs`) and
cuts the table per block (:func:`block_lookup`). Each block then maps its stored core with
:func:`relabel`. :func:`stitch_blocks` runs the whole pipeline in memory; it is the reference
for the orchestration layer and for tests.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

__all__ = [
    "ID_BITS",
    "Strip",
    "block_lookup",
    "face_strips",
    "match_faces",
    "match_neighbours",
    "merge_pairs",
    "provisional_ids",
    "relabel",
    "stitch_blocks",
    "unique_ids",
]

#: Bits of a provisional id given to the block-local id. Limits: local ids ``< 2**40`` (any
#: uint32 labelling fits), block numbers ``< 2**24`` (16.7 million blocks per image), and at
#: most ``2**32 - 1`` objects per stitched image (final labels are uint32).
ID_BITS = 40
_LOCAL_MASK = np.uint64((1 << ID_BITS) - 1)
_MAX_BLOCKS = 1 << (64 - ID_BITS)


class Strip(NamedTuple):
    """A 2-D strip of provisional labels and the global ``(y, x)`` of its first pixel."""

    labels: np.ndarray
    offset: tuple[int, int]


def _check_block(block_number: int) -> int:
    block_number = int(block_number)
    if not 0 <= block_number < _MAX_BLOCKS:
        raise ValueError(f"block_number must be in [0, 2**{64 - ID_BITS}), got {block_number}")
    return block_number


def provisional_ids(local: np.ndarray, block_number: int) -> np.ndarray:
    """Globally unique ids ``(block_number << ID_BITS) | local``; ``0`` stays ``0``.

    Parameters
    ----------
    local : (Y, X) ndarray of uint32 (any non-negative integer type accepted)
        Labels of one block, ``0`` = background.
    block_number : int
        Number of the block in its image, ``0 <= block_number < 2**24``.

    Returns
    -------
    (Y, X) ndarray of uint64
    """
    local = np.asarray(local)
    if local.dtype.kind not in "ui":
        raise TypeError(f"local labels must be integers, got dtype {local.dtype}")
    if local.size and local.dtype.kind == "i" and local.min() < 0:
        raise ValueError(f"local labels must be >= 0, got {local.min()}")
    if local.size and local.dtype.itemsize > 4 and local.max() > int(_LOCAL_MASK):
        raise ValueError(f"local labels must be < 2**{ID_BITS}, got {local.max()}")
    out = local.astype(np.uint64)
    base = np.uint64(_check_block(block_number) << ID_BITS)
    if base:
        np.bitwise_or(out, base, out=out, where=out != 0)
    return out


def unique_ids(labels: np.ndarray) -> np.ndarray:
    """Sorted unique non-zero ids of ``labels`` (uint64); a bincount for one block's ids."""
    vals = np.asarray(labels, dtype=np.uint64)  # no ravel: a block's core is a strided view
    top = int(vals.max()) if vals.size else 0
    if top == 0:
        return np.zeros(0, np.uint64)
    base = (top >> ID_BITS) << ID_BITS
    low = int(np.min(vals, where=vals != 0, initial=top))
    if low >= base and top - base <= 2 * vals.size + 1024:  # one block, dense local ids
        present = np.flatnonzero(np.bincount((vals & _LOCAL_MASK).view(np.intp).ravel()))
        return present[present != 0].astype(np.uint64) | np.uint64(base)
    out = np.unique(vals)
    return out[out != 0]


def _norm(s: slice, n: int) -> tuple[int, int]:
    start, stop, step = s.indices(n)
    if step != 1 or stop < start:
        raise ValueError(f"core slices must be contiguous, got {s}")
    return start, stop


def face_strips(
    labels_ext: np.ndarray,
    *,
    core: tuple[slice, slice],
    halo: int,
    origin: tuple[int, int] = (0, 0),
    mode: str = "iou",
) -> dict:
    """What one unit returns for merging: its core ids and strips along its four faces.

    Parameters
    ----------
    labels_ext : (H, W) ndarray of uint64
        Provisional labels of the block's core + halo region, clipped to the image (a caller that
        reflected the input outside the image crops the labels back first).
    core : (slice, slice)
        The core within ``labels_ext``.
    halo : int
        Halo width ``>= 0``.
    origin : (int, int)
        Global ``(y, x)`` of ``labels_ext[0, 0]``.
    mode : {"iou", "touch"}
        The matching the strips are for. ``"touch"`` needs only the last row/column inside the
        core: the ``"core"`` strips are 1 pixel wide and the ``"halo"`` strips empty.

    Returns
    -------
    dict
        ``"ids"``: sorted uint64 ids present in the core. For each side in ``"top"``,
        ``"bottom"``, ``"left"``, ``"right"`` a dict with ``"halo"``, the :class:`Strip` of this
        block's labels lying *outside* its core (in the neighbour's core; up to ``halo`` wide,
        empty on an image border; ids absent from the core set to 0), and ``"core"``, the
        :class:`Strip` just *inside* the core along that face (``max(1, halo)`` wide).
    """
    labels_ext = np.asarray(labels_ext)
    if labels_ext.ndim != 2:
        raise ValueError(f"labels_ext must be 2-D, got shape {labels_ext.shape}")
    if halo < 0:
        raise ValueError(f"halo must be >= 0, got {halo}")
    if mode not in ("iou", "touch"):
        raise ValueError(f"mode must be 'iou' or 'touch', got {mode!r}")
    H, W = labels_ext.shape
    (y0, y1), (x0, x1) = _norm(core[0], H), _norm(core[1], W)
    ids = unique_ids(labels_ext[y0:y1, x0:x1])
    w = max(1, halo) if mode == "iou" else 1
    if mode == "touch":
        halo = 0
    boxes = {  # side: (halo box, core box) as (ya, yb, xa, xb) in labels_ext
        "top": ((y0 - min(halo, y0), y0, x0, x1), (y0, min(y0 + w, y1), x0, x1)),
        "bottom": ((y1, y1 + min(halo, H - y1), x0, x1), (max(y1 - w, y0), y1, x0, x1)),
        "left": ((y0, y1, x0 - min(halo, x0), x0), (y0, y1, x0, min(x0 + w, x1))),
        "right": ((y0, y1, x1, x1 + min(halo, W - x1)), (y0, y1, max(x1 - w, x0), x1)),
    }
    oy, ox = int(origin[0]), int(origin[1])
    out: dict = {"ids": ids}
    for side, (hbox, cbox) in boxes.items():
        hs = labels_ext[hbox[0] : hbox[1], hbox[2] : hbox[3]].astype(np.uint64)
        if hs.size:  # objects this block sees only in its halo belong to the neighbour
            pos = np.minimum(np.searchsorted(ids, hs), max(ids.size - 1, 0))
            keep = ids[pos] == hs if ids.size else np.zeros(hs.shape, bool)
            hs[~keep] = 0
        cs = labels_ext[cbox[0] : cbox[1], cbox[2] : cbox[3]].astype(np.uint64)
        out[side] = {
            "halo": Strip(hs, (oy + hbox[0], ox + hbox[2])),
            "core": Strip(cs, (oy + cbox[0], ox + cbox[2])),
        }
    return out


def _crop_common(a: Strip, b: Strip) -> tuple[np.ndarray, np.ndarray]:
    """Both strips cut to the rectangle they share in global coordinates."""
    lo = [max(a.offset[i], b.offset[i]) for i in (0, 1)]
    hi = [min(a.offset[i] + a.labels.shape[i], b.offset[i] + b.labels.shape[i]) for i in (0, 1)]
    if hi[0] <= lo[0] or hi[1] <= lo[1]:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)

    def cut(s: Strip) -> np.ndarray:
        return s.labels[
            lo[0] - s.offset[0] : hi[0] - s.offset[0], lo[1] - s.offset[1] : hi[1] - s.offset[1]
        ].ravel()

    return cut(a), cut(b)


def _iou_pairs(a: np.ndarray, b: np.ndarray, threshold: float) -> np.ndarray:
    both = (a != 0) & (b != 0)
    if not both.any():
        return np.zeros((0, 2), np.uint64)
    pairs, inter = np.unique(np.stack([a[both], b[both]], axis=1), axis=0, return_counts=True)
    ua, ca = np.unique(a[a != 0], return_counts=True)
    ub, cb = np.unique(b[b != 0], return_counts=True)
    area_a = ca[np.searchsorted(ua, pairs[:, 0])]
    area_b = cb[np.searchsorted(ub, pairs[:, 1])]
    iou = inter / (area_a + area_b - inter)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -iou))  # best first, ties by ids
    used: set[tuple[int, int]] = set()
    keep = []
    for k in order[iou[order] >= threshold]:
        ka, kb = (0, int(pairs[k, 0])), (1, int(pairs[k, 1]))
        if ka not in used and kb not in used:
            used |= {ka, kb}
            keep.append(k)
    return pairs[np.sort(np.asarray(keep, dtype=np.intp))]


def _touch_pairs(a: Strip, b: Strip) -> np.ndarray:
    (ay, ax), (by, bx) = a.offset, b.offset
    (ah, aw), (bh, bw) = a.labels.shape, b.labels.shape
    if ah and aw and bh and bw:
        if ay + ah == by:  # b below a: a's last row against b's first row
            ra, rb = Strip(a.labels[-1:], (ay + ah - 1, ax)), Strip(b.labels[:1], (ay + ah - 1, bx))
        elif ax + aw == bx:  # b right of a
            ra, rb = (
                Strip(a.labels[:, -1:], (ay, ax + aw - 1)),
                Strip(b.labels[:, :1], (by, ax + aw - 1)),
            )
        elif by + bh == ay or bx + bw == ax:
            return _touch_pairs(b, a)[:, ::-1].copy()
        else:
            raise ValueError(f"strips at {a.offset} and {b.offset} do not share a face line")
        la, lb = _crop_common(ra, rb)
        both = (la != 0) & (lb != 0)
        if both.any():
            return np.unique(np.stack([la[both], lb[both]], axis=1), axis=0)
    return np.zeros((0, 2), np.uint64)


def match_faces(
    strip_a: Strip, strip_b: Strip, *, mode: str = "iou", iou_threshold: float = 0.5
) -> np.ndarray:
    """Pairs of provisional ids of two neighbouring blocks that are the same object.

    Parameters
    ----------
    strip_a, strip_b : Strip
        ``mode="iou"``: block A's ``"halo"`` strip on the face towards B and B's ``"core"`` strip
        on the opposite face (the same pixels, labelled by A and by B). ``mode="touch"``: the
        ``"core"`` strips of both blocks on that face.
    mode : {"iou", "touch"}
        ``"iou"``: pairs whose IoU over the shared strip is ``>= iou_threshold``, each id matched
        at most once (greedy, best IoU first) -- for methods whose result depends on context.
        ``"touch"``: ids that touch across the face line (4-connectivity) -- exact for
        connected components.
    iou_threshold : float
        Only for ``mode="iou"``.

    Returns
    -------
    (n, 2) ndarray of uint64
        ``(id in A, id in B)`` rows, sorted.
    """
    if mode == "iou":
        return _iou_pairs(*_crop_common(strip_a, strip_b), float(iou_threshold))
    if mode == "touch":
        return _touch_pairs(strip_a, strip_b)
    raise ValueError(f"mode must be 'iou' or 'touch', got {mode!r}")


def match_neighbours(
    faces_a: dict, faces_b: dict, *, axis: int, mode: str = "iou", iou_threshold: float = 0.5
) -> np.ndarray:
    """:func:`match_faces` for blocks A and B, B after A along ``axis`` (0: below, 1: right).

    ``faces_a``, ``faces_b`` are the :func:`face_strips` of the two blocks.
    """
    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 or 1, got {axis}")
    side_a, side_b = ("bottom", "top") if axis == 0 else ("right", "left")
    first = faces_a[side_a]["halo" if mode == "iou" else "core"]
    return match_faces(first, faces_b[side_b]["core"], mode=mode, iou_threshold=iou_threshold)


def merge_pairs(pairs: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Final labels: connected components of the graph of provisional ids joined by ``pairs``.

    Parameters
    ----------
    pairs : (n, 2) ndarray of uint64
        Ids to merge (any order, duplicates allowed); every id must be in ``ids``.
    ids : ndarray of uint64
        All provisional ids (the concatenated ``"ids"`` of every block; 0 ignored).

    Returns
    -------
    ids_sorted : (m,) ndarray of uint64
        The unique non-zero ids, sorted (hence grouped by block).
    final : (m,) ndarray of uint32
        Their final labels ``1..N``, numbered in order of each component's smallest id.
    """
    ids_sorted = np.unique(np.asarray(ids, dtype=np.uint64))
    ids_sorted = ids_sorted[ids_sorted != 0]
    n = ids_sorted.size
    if n >= 2**32:
        raise ValueError(f"{n} objects do not fit uint32 final labels")
    flat = np.asarray(pairs, dtype=np.uint64).reshape(-1)
    idx = np.searchsorted(ids_sorted, flat)
    bad = idx >= n
    bad[~bad] = ids_sorted[idx[~bad]] != flat[~bad]
    if bad.any():
        raise ValueError(f"pairs hold id {int(flat[bad][0])} missing from ids")
    if n == 0:
        return ids_sorted, np.zeros(0, np.uint32)
    i, j = idx[0::2], idx[1::2]
    graph = sparse.coo_matrix((np.ones(i.size, np.int8), (i, j)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    # number components by first appearance in id order (independent of scipy's numbering)
    _, first, inverse = np.unique(comp, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.uint32)
    rank[np.argsort(first)] = np.arange(1, first.size + 1, dtype=np.uint32)
    return ids_sorted, rank[inverse]


def block_lookup(
    ids_sorted: np.ndarray, final: np.ndarray, block_number: int
) -> tuple[np.ndarray, np.ndarray]:
    """This block's slice of the table (what is saved per block), a ``searchsorted`` range.

    Returns ``(block_ids, block_final)``: sorted uint64 ids of the block, their uint32 labels.
    """
    b = _check_block(block_number)
    lo, hi = np.searchsorted(ids_sorted, np.array([b << ID_BITS, (b + 1) << ID_BITS], np.uint64))
    return ids_sorted[lo:hi].copy(), final[lo:hi].copy()


def relabel(labels: np.ndarray, block_ids: np.ndarray, block_final: np.ndarray) -> np.ndarray:
    """Map provisional ``labels`` (uint64) to final uint32 labels through one block's table.

    Raises ``ValueError`` if a non-zero id is not in ``block_ids``.
    """
    labels = np.asarray(labels, dtype=np.uint64)
    out = np.zeros(labels.shape, np.uint32)
    nz = labels != 0
    vals = labels[nz]
    if vals.size:
        if block_ids.size == 0:
            raise ValueError(f"id {int(vals[0])} not in the block's table (empty table)")
        idx = np.minimum(np.searchsorted(block_ids, vals), block_ids.size - 1)
        bad = block_ids[idx] != vals
        if bad.any():
            raise ValueError(f"id {int(vals[bad][0])} not in the block's table")
        out[nz] = block_final[idx]
    return out


def stitch_blocks(
    blocks: list,
    image_shape: tuple[int, int],
    *,
    halo: int,
    mode: str = "touch",
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """Reference driver: the whole stitching pipeline in memory.

    Parameters
    ----------
    blocks : list of (core, local, ext)
        Per block (numbered by position): ``core`` and ``ext`` are ``(slice, slice)`` in global
        coordinates (``ext`` = core + halo clipped to the image), ``local`` the ``(Y, X)``
        integer labels of the ``ext`` region. Cores tile the image on a grid.
    image_shape : (int, int)
    halo : int
    mode, iou_threshold
        See :func:`match_faces`.

    Returns
    -------
    (Y, X) ndarray of uint32
    """
    stored, faces, where = [], [], {}
    for n, (core, local, ext) in enumerate(blocks):
        (cy0, cy1), (cx0, cx1) = _norm(core[0], image_shape[0]), _norm(core[1], image_shape[1])
        (ey0, ey1), (ex0, ex1) = _norm(ext[0], image_shape[0]), _norm(ext[1], image_shape[1])
        if np.shape(local) != (ey1 - ey0, ex1 - ex0) or not (ey0 <= cy0 <= cy1 <= ey1):
            raise ValueError(f"block {n}: labels of shape {np.shape(local)} do not fit ext {ext}")
        prov = provisional_ids(local, n)
        inner = (slice(cy0 - ey0, cy1 - ey0), slice(cx0 - ex0, cx1 - ex0))
        faces.append(face_strips(prov, core=inner, halo=halo, origin=(ey0, ex0), mode=mode))
        stored.append(((slice(cy0, cy1), slice(cx0, cx1)), prov[inner]))  # "written" to storage
        where[(cy0, cx0)] = (n, cy1, cx1)
    opts = {"mode": mode, "iou_threshold": iou_threshold}
    pairs = [np.zeros((0, 2), np.uint64)]
    for (cy0, cx0), (n, cy1, cx1) in where.items():
        for axis, key in ((0, (cy1, cx0)), (1, (cy0, cx1))):
            if key in where:
                pairs.append(match_neighbours(faces[n], faces[where[key][0]], axis=axis, **opts))
    ids_sorted, final = merge_pairs(
        np.concatenate(pairs), np.concatenate([f["ids"] for f in faces] + [np.zeros(0, np.uint64)])
    )
    out = np.zeros(tuple(image_shape), np.uint32)
    for n, (core, prov_core) in enumerate(stored):
        out[core] = relabel(prov_core, *block_lookup(ids_sorted, final, n))
    return out
