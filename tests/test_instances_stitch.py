"""Label stitching kernels: blocked labelling equals whole-image labelling up to a permutation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from scaleseg.instances._stitch import (
    ID_BITS,
    Strip,
    block_lookup,
    face_strips,
    match_faces,
    merge_pairs,
    provisional_ids,
    relabel,
    stitch_blocks,
    unique_ids,
)


def _blobs(shape, seed=0, sigma=2.0, frac=0.45):
    rng = np.random.default_rng(seed)
    smooth = ndi.gaussian_filter(rng.random(shape), sigma)
    return smooth > np.quantile(smooth, 1 - frac)


def _blocks(image, block, halo, method):
    """(core, local labels of ext, ext) per block, row-major, as the units would return them."""
    out = []
    for y0 in range(0, image.shape[0], block[0]):
        for x0 in range(0, image.shape[1], block[1]):
            y1, x1 = min(y0 + block[0], image.shape[0]), min(x0 + block[1], image.shape[1])
            ext = (
                slice(max(0, y0 - halo), min(image.shape[0], y1 + halo)),
                slice(max(0, x0 - halo), min(image.shape[1], x1 + halo)),
            )
            out.append(((slice(y0, y1), slice(x0, x1)), method(image[ext]), ext))
    return out


def _cc(mask):
    return ndi.label(mask)[0].astype(np.uint32)


def assert_same_up_to_permutation(whole, stitched):
    assert stitched.dtype == np.uint32
    np.testing.assert_array_equal(whole == 0, stitched == 0)
    fg = whole != 0
    pairs = np.unique(np.stack([whole[fg], stitched[fg]], axis=1), axis=0)
    # a bijection: every whole label maps to one stitched label and vice versa
    assert len(np.unique(pairs[:, 0])) == len(pairs) == len(np.unique(pairs[:, 1]))
    np.testing.assert_array_equal(np.unique(stitched[fg]), np.arange(1, len(pairs) + 1))


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(17, 71),
    w=st.integers(17, 71),
    by=st.integers(5, 30),
    bx=st.integers(5, 30),
    halo=st.integers(0, 9),
)
def test_touch_equals_whole_image_cc(h, w, by, bx, halo):
    mask = _blobs((72, 72))[:h, :w]
    stitched = stitch_blocks(_blocks(mask, (by, bx), halo, _cc), mask.shape, halo=halo)
    assert_same_up_to_permutation(ndi.label(mask)[0], stitched)


def test_touch_objects_across_many_blocks_and_corners():
    mask = np.zeros((30, 30), bool)
    mask[5, 2:28] = True  # spans 3 blocks along x
    mask[8:12, 8:12] = True  # 4 blocks meet at (10, 10)
    mask[14:28, 14] = mask[14:28, 18] = mask[27, 14:19] = True  # U: arms joined in the next block
    mask[19, 19] = mask[20, 20] = True  # diagonal across a corner: two objects (4-connectivity)
    blocks = _blocks(mask, (10, 10), 2, _cc)
    stitched = stitch_blocks(blocks, mask.shape, halo=2)
    assert_same_up_to_permutation(ndi.label(mask)[0], stitched)
    assert stitched[5, 2] == stitched[5, 27]
    assert len(np.unique(stitched[8:12, 8:12])) == 1
    assert stitched[14, 14] == stitched[14, 18]
    assert stitched[19, 19] != stitched[20, 20]


def _watershed(mask):
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    dist = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(dist, min_distance=5, threshold_abs=3, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=mask).astype(np.uint32)


def _touching_disks(shape, n, rng):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, bool)
    for _ in range(n):  # pairs of disks that touch/overlap a little
        cy, cx = rng.integers(10, shape[0] - 10), rng.integers(10, shape[1] - 10)
        r, a = rng.integers(6, 10), rng.uniform(0, 2 * np.pi)
        for oy, ox in ((0, 0), (1.8 * r * np.sin(a), 1.8 * r * np.cos(a))):
            mask |= (yy - cy - oy) ** 2 + (xx - cx - ox) ** 2 <= r * r
    return mask


def _iou_agreement(a, b, thr=0.9):
    """Fraction of objects of ``a`` with a partner in ``b`` at IoU >= thr."""
    fg = (a != 0) & (b != 0)
    pairs, inter = np.unique(np.stack([a[fg], b[fg]], 1), axis=0, return_counts=True)
    area_a, area_b = np.bincount(a.ravel()), np.bincount(b.ravel())
    iou = inter / (area_a[pairs[:, 0]] + area_b[pairs[:, 1]] - inter)
    return len(np.unique(pairs[iou >= thr, 0])) / (len(np.unique(a)) - 1)


def test_iou_mode_context_dependent_method_agrees_with_whole_image():
    mask = _touching_disks((400, 400), 160, np.random.default_rng(0))
    whole = _watershed(mask)
    blocks = _blocks(mask, (64, 64), 16, _watershed)
    stitched = stitch_blocks(blocks, mask.shape, halo=16, mode="iou")
    agree = _iou_agreement(whole, stitched)
    print(f"iou-mode agreement with whole image: {agree:.3f} of {whole.max()} objects")
    assert agree >= 0.95
    assert _iou_agreement(stitched, whole) >= 0.95
    # "touch" would glue touching cells cut by a face: clearly worse for this method
    assert _iou_agreement(whole, stitch_blocks(blocks, mask.shape, halo=16)) < 0.9


def test_match_faces_iou_keeps_best_partner_once():
    a = Strip(np.array([[1, 1, 1, 2]], np.uint64), (5, 0))
    b = Strip(np.array([[7, 7, 8, 8]], np.uint64), (5, 0))
    # IoU(1,7) = 2/3, IoU(1,8) = 1/4, IoU(2,8) = 1/2
    np.testing.assert_array_equal(match_faces(a, b, mode="iou"), [[1, 7], [2, 8]])
    np.testing.assert_array_equal(match_faces(a, b, mode="iou", iou_threshold=0.6), [[1, 7]])
    # touch: a above b, a's last row against b's first row
    ta = Strip(np.array([[0, 0, 0], [3, 0, 4]], np.uint64), (0, 0))
    tb = Strip(np.array([[5, 6, 6]], np.uint64), (2, 0))
    np.testing.assert_array_equal(match_faces(ta, tb, mode="touch"), [[3, 5], [4, 6]])
    np.testing.assert_array_equal(match_faces(tb, ta, mode="touch"), [[5, 3], [6, 4]])
    with pytest.raises(ValueError, match="mode"):
        match_faces(ta, tb, mode="overlap")


def test_face_strips_shapes_offsets_and_halo_filter():
    ext = provisional_ids(np.arange(1, 13 * 11 + 1, dtype=np.uint32).reshape(13, 11), 3)
    ext[0, 4] = 0
    f = face_strips(ext, core=(slice(3, 10), slice(0, 8)), halo=3, origin=(100, 200))
    assert f["ids"].size == 7 * 8
    assert f["top"]["halo"].labels.shape == (3, 8) and f["top"]["halo"].offset == (100, 200)
    assert not f["top"]["halo"].labels.any()  # ids absent from the core are not this block's
    assert f["top"]["core"].offset == (103, 200) and f["top"]["core"].labels.shape == (3, 8)
    assert f["left"]["halo"].labels.shape == (7, 0)  # image border: nothing outside
    assert f["right"]["halo"].labels.shape == (7, 3) and f["right"]["halo"].offset == (103, 208)
    f0 = face_strips(ext, core=(slice(3, 10), slice(0, 8)), halo=0)
    assert f0["bottom"]["core"].labels.shape == (1, 8) and f0["bottom"]["halo"].labels.size == 0
    ft = face_strips(ext, core=(slice(3, 10), slice(0, 8)), halo=3, mode="touch")
    assert ft["bottom"]["core"].labels.shape == (1, 8) and ft["bottom"]["core"].offset == (9, 0)
    assert ft["right"]["core"].labels.shape == (7, 1) and ft["right"]["halo"].labels.size == 0
    with pytest.raises(ValueError, match="mode"):
        face_strips(ext, core=(slice(3, 10), slice(0, 8)), halo=3, mode="overlap")


def test_provisional_ids_and_64bit_lookup():
    local = np.array([[0, 1], [2, 2**32 - 1]], np.uint32)
    prov = provisional_ids(local, 5)
    assert prov.dtype == np.uint64 and prov[0, 0] == 0
    assert prov[1, 1] == (5 << ID_BITS) | (2**32 - 1) and prov.min() == 0
    np.testing.assert_array_equal(prov & np.uint64(2**ID_BITS - 1), local)
    with pytest.raises(ValueError, match="block_number"):
        provisional_ids(local, 2 ** (64 - ID_BITS))
    with pytest.raises(ValueError, match=">= 0"):
        provisional_ids(np.array([-1]), 0)
    other = provisional_ids(np.array([[1, 3]], np.uint32), 6)
    ids = np.concatenate([unique_ids(prov), unique_ids(other)])
    ids_sorted, final = merge_pairs(np.array([[prov[0, 1], other[0, 1]]], np.uint64), ids)
    np.testing.assert_array_equal(final, [1, 2, 3, 4, 1])
    bids, bfinal = block_lookup(ids_sorted, final, 6)  # a block needs only its own slice
    np.testing.assert_array_equal(bids, other.ravel())
    np.testing.assert_array_equal(relabel(other, bids, bfinal), [[4, 1]])
    np.testing.assert_array_equal(
        relabel(prov, *block_lookup(ids_sorted, final, 5)), [[0, 1], [2, 3]]
    )
    with pytest.raises(ValueError, match="not in the block"):
        relabel(prov, bids, bfinal)  # another block's ids
    with pytest.raises(ValueError, match="not in the block"):
        relabel(prov, *block_lookup(ids_sorted, final, 7))
    with pytest.raises(ValueError, match="missing from ids"):
        merge_pairs(np.array([[prov[0, 1], 12345]], np.uint64), ids)


def test_unique_ids_fast_and_general_paths_agree():
    rng = np.random.default_rng(0)
    local = rng.integers(0, 50, (40, 40)).astype(np.uint32)
    prov = provisional_ids(local, 9)
    expected = np.unique(prov[prov != 0])
    np.testing.assert_array_equal(unique_ids(prov), expected)
    mixed = np.concatenate([prov.ravel(), provisional_ids(local, 2).ravel()])
    np.testing.assert_array_equal(unique_ids(mixed), np.unique(mixed[mixed != 0]))


def test_empty_blocks():
    mask = np.zeros((25, 19), bool)
    mask[20:, 15:] = True  # only the last block has an object
    for m in (mask, np.zeros_like(mask)):
        for mode in ("touch", "iou"):
            stitched = stitch_blocks(_blocks(m, (8, 8), 2, _cc), m.shape, halo=2, mode=mode)
            assert_same_up_to_permutation(ndi.label(m)[0], stitched)
    ids_sorted, final = merge_pairs(np.zeros((0, 2), np.uint64), np.zeros(0, np.uint64))
    assert ids_sorted.size == final.size == 0
    assert not relabel(np.zeros((3, 3), np.uint64), *block_lookup(ids_sorted, final, 0)).any()


def test_deterministic_and_ordered_by_smallest_id():
    mask = _blobs((60, 50), seed=0)
    blocks = _blocks(mask, (16, 16), 3, _cc)
    a = stitch_blocks(blocks, mask.shape, halo=3)
    np.testing.assert_array_equal(a, stitch_blocks(blocks, mask.shape, halo=3))
    # final labels follow the smallest provisional id: the first block holding each label
    first_block = {}
    for n, (core, _, _) in enumerate(blocks):
        for v in np.unique(a[core]):
            first_block.setdefault(int(v), n)
    order = [first_block[v] for v in sorted(first_block) if v]
    assert order == sorted(order)
    # merge_pairs does not depend on pair order or orientation
    rng = np.random.default_rng(0)
    ids = np.arange(1, 200, dtype=np.uint64)
    pairs = rng.choice(ids, (120, 2))
    _, f1 = merge_pairs(pairs, ids)
    _, f2 = merge_pairs(rng.permutation(pairs)[:, ::-1], rng.permutation(ids))
    np.testing.assert_array_equal(f1, f2)
