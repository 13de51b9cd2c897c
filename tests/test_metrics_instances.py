"""Instance metrics against cellpose.metrics, brute-force loops and hand cases."""

import numpy as np
import pytest
from cellpose.metrics import _true_positive as cp_true_positive
from cellpose.metrics import average_precision as cp_average_precision
from scipy import ndimage as ndi
from skimage.data import binary_blobs
from skimage.measure import label as sk_label
from skimage.segmentation import relabel_sequential

from scaleseg.metrics import (
    MAP_THRESHOLDS,
    RELATIVE_PERFORMANCE,
    aggregated_jaccard_index,
    average_precision,
    error_rate,
    instance_iou,
    instance_scores,
    label_instances,
    match_instances,
    mean_average_precision,
    panoptic_quality,
    precision_recall_f1,
    relative_performance,
    remove_small_instances,
)

# ---------------------------------------------------------------- fixtures
# 6x6 hand case. IoU: ref1-pred5 = 1, ref2-pred7 = 2/4, ref3-pred9 = 2/3;
# pred8 touches nothing.
REF6 = np.array(
    [
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 2, 2],
        [0, 0, 0, 0, 2, 2],
        [0, 0, 0, 0, 0, 0],
        [3, 3, 3, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ],
    dtype=np.uint16,
)
PRED6 = np.array(
    [
        [5, 5, 0, 0, 0, 0],
        [5, 5, 0, 0, 0, 7],
        [0, 0, 0, 0, 0, 7],
        [0, 0, 0, 0, 0, 0],
        [9, 9, 0, 0, 0, 8],
        [0, 0, 0, 0, 0, 8],
    ],
    dtype=np.int32,
)


def random_disks(shape, n, rng, rmin=3, rmax=10):
    """Instance map of n random (possibly overlapping) disks, consecutive uint32 labels."""
    lab = np.zeros(shape, dtype=np.uint32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for i in range(1, n + 1):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r = rng.integers(rmin, rmax)
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return relabel_sequential(lab)[0]


def perturb(ref, rng):
    """A prediction: shifted, some objects dropped/eroded/dilated/split, false positives."""
    pred = np.roll(ref, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
    ids = np.unique(pred)[1:]
    drop, erode, dilate, split = np.array_split(rng.permutation(ids)[: 4 * (ids.size // 8)], 4)
    pred[np.isin(pred, drop)] = 0
    sel = np.isin(pred, erode)
    pred[sel] = ndi.grey_erosion(pred, size=(3, 3))[sel]
    dil = ndi.grey_dilation(pred, size=(5, 5))
    grow = (pred == 0) & np.isin(dil, dilate)
    pred[grow] = dil[grow]
    # Split objects in half along their centroid column.
    nxt = int(pred.max()) + 1
    cols = np.arange(pred.shape[1])[None, :].repeat(pred.shape[0], 0)
    for k, s in enumerate(split):
        m = pred == s
        if m.any():
            cx = np.mean(np.nonzero(m)[1])
            pred[m & (cols > cx)] = nxt + k
    fp = random_disks(pred.shape, 5, rng)
    pred[(pred == 0) & (fp > 0)] = fp[(pred == 0) & (fp > 0)] + nxt + len(split)
    return pred


def pairs(n=4):
    out = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        ref = random_disks((120, 110), 45, rng)
        out.append((perturb(ref, rng), ref))
    # binary_blobs-based pair: connected components of blobs, prediction from noisy blobs.
    blobs = binary_blobs(length=128, blob_size_fraction=0.08, volume_fraction=0.3, rng=0)
    ref = sk_label(blobs, connectivity=1).astype(np.uint32)
    rng = np.random.default_rng(10)
    noisy = ndi.binary_opening(blobs ^ (rng.random(blobs.shape) < 0.05))
    out.append((sk_label(noisy, connectivity=1).astype(np.uint32), ref))
    return out


PAIRS = pairs()


def scramble(labels, rng):
    """Rename labels to random non-consecutive ids (background stays 0)."""
    ids = np.unique(labels)[1:]
    lut = np.zeros(int(labels.max()) + 1, dtype=np.uint64)
    lut[ids] = rng.choice(1000 * max(ids.size, 1), size=ids.size, replace=False) + 1
    return lut[labels]


def brute_iou(pred, ref):
    pids, rids = np.unique(pred)[1:], np.unique(ref)[1:]
    out = np.zeros((pids.size, rids.size))
    for i, p in enumerate(pids):
        for j, r in enumerate(rids):
            a, b = pred == p, ref == r
            out[i, j] = (a & b).sum() / (a | b).sum()
    return out, pids, rids


def brute_aji(pred, ref):
    """Kumar et al. 2017 AJI as a plain loop (pairing as in HoVer-Net's get_fast_aji)."""
    pids, rids = np.unique(pred)[1:], np.unique(ref)[1:]
    c = u = 0
    used = set()
    for r in rids:
        g = ref == r
        ious = [((pred == p) & g).sum() / ((pred == p) | g).sum() for p in pids]
        if not ious or max(ious) == 0:
            u += g.sum()
            continue
        p = pids[int(np.argmax(ious))]
        s = pred == p
        c += (g & s).sum()
        u += (g | s).sum()
        used.add(p)
    u += sum((pred == p).sum() for p in pids if p not in used)
    return c / u if u else 1.0


# ---------------------------------------------------------------- overlaps
@pytest.mark.parametrize("k", range(len(PAIRS)))
def test_instance_iou_matches_brute_force(k):
    pred, ref = PAIRS[k]
    rng = np.random.default_rng(k)
    pred, ref = scramble(pred, rng), scramble(ref, rng)
    got, pids, rids = instance_iou(pred, ref)
    exp, epids, erids = brute_iou(pred, ref)
    np.testing.assert_array_equal(pids, epids)
    np.testing.assert_array_equal(rids, erids)
    np.testing.assert_allclose(got, exp, rtol=0, atol=1e-15)


def test_instance_iou_hand_and_empty():
    got, pids, rids = instance_iou(PRED6, REF6)
    np.testing.assert_array_equal(pids, [5, 7, 8, 9])
    np.testing.assert_array_equal(rids, [1, 2, 3])
    exp = np.zeros((4, 3))
    exp[0, 0], exp[1, 1], exp[3, 2] = 1.0, 0.5, 2 / 3
    np.testing.assert_allclose(got, exp)
    got, pids, rids = instance_iou(np.zeros_like(REF6), REF6)
    assert got.shape == (0, 3) and pids.size == 0


def test_instance_iou_huge_label_values_use_unique_path():
    ref = REF6.astype(np.uint64) * np.uint64(2**40)
    pred = PRED6.astype(np.uint64) * np.uint64(2**41)
    got, pids, rids = instance_iou(pred, ref)
    np.testing.assert_allclose(got, instance_iou(PRED6, REF6)[0])
    assert rids[0] == 2**40


# ---------------------------------------------------------------- cellpose reference
@pytest.mark.parametrize("k", range(len(PAIRS)))
def test_average_precision_matches_cellpose(k):
    pred, ref = PAIRS[k]
    thresholds = list(MAP_THRESHOLDS) + [0.1, 0.2, 0.3, 0.4]
    ap, tp, fp, fn = cp_average_precision(
        ref.astype(np.int64), pred.astype(np.int64), threshold=thresholds
    )
    np.testing.assert_allclose(average_precision(pred, ref, thresholds=thresholds), ap, rtol=1e-6)
    for t, etp, efp, efn in zip(thresholds, tp, fp, fn):
        m = match_instances(pred, ref, threshold=t)
        assert (m.tp, m.fp, m.fn) == (etp, efp, efn), t
    assert mean_average_precision(pred, ref) == pytest.approx(np.mean(ap[:10]), rel=1e-6)


def test_low_threshold_assignment_matches_cellpose_lsa():
    # Crowded objects and a coarse shift make many objects ambiguous at low IoU.
    rng = np.random.default_rng(3)
    ref = random_disks((64, 64), 60, rng, rmin=2, rmax=7)
    pred = np.roll(ref, (3, 3), axis=(0, 1))
    mat, _, _ = instance_iou(pred, ref)
    for t in (0.05, 0.1, 0.2, 0.3, 0.5):
        assert match_instances(pred, ref, threshold=t).tp == cp_true_positive(mat.T, t)


@pytest.mark.parametrize("k", range(len(PAIRS)))
def test_label_values_do_not_matter(k):
    pred, ref = PAIRS[k]
    rng = np.random.default_rng(100 + k)
    a = instance_scores(pred, ref)
    b = instance_scores(scramble(pred, rng), scramble(ref, rng))
    for key in ("map", "ap50", "precision", "recall", "f1", "error_rate", "pq", "aji"):
        assert a[key] == pytest.approx(b[key], abs=1e-12), key


# ---------------------------------------------------------------- hand case
def test_matching_hand_case():
    m = match_instances(PRED6, REF6, threshold=0.5)
    assert (m.tp, m.fp, m.fn, m.n_pred, m.n_ref) == (3, 1, 0, 4, 3)
    np.testing.assert_array_equal(m.pairs, [[5, 1], [7, 2], [9, 3]])
    np.testing.assert_allclose(m.ious, [1.0, 0.5, 2 / 3])
    m = match_instances(PRED6, REF6, threshold=0.55)
    assert (m.tp, m.fp, m.fn) == (2, 2, 1)


def test_ap_hand_case():
    ap = average_precision(PRED6, REF6, thresholds=[0.5, 0.55, 0.7, 1.0])
    np.testing.assert_allclose(ap, [3 / 4, 2 / 5, 1 / 6, 1 / 6])


def test_prf_error_rate_pq_aji_hand_case():
    p, r, f1 = precision_recall_f1(PRED6, REF6)
    assert (p, r, f1) == pytest.approx((3 / 4, 1.0, 6 / 7))
    assert error_rate(PRED6, REF6) == pytest.approx(1 / 3)
    pq = panoptic_quality(PRED6, REF6)
    s = 1 + 0.5 + 2 / 3
    assert pq["pq"] == pytest.approx(s / 3.5)
    assert pq["sq"] == pytest.approx(s / 3)
    assert pq["rq"] == pytest.approx(3 / 3.5)
    assert aggregated_jaccard_index(PRED6, REF6) == pytest.approx(8 / 13)


def test_aji_shared_prediction_and_unpaired_reference():
    # Two references share their best prediction (4); reference 3 touches nothing.
    ref = np.array([[1, 1, 2, 2, 0, 3]])
    pred = np.array([[4, 4, 4, 4, 5, 0]])
    # C = 2 + 2, U = 4 + 4 + |ref3| + |pred5| = 10
    assert aggregated_jaccard_index(pred, ref) == pytest.approx(4 / 10)


@pytest.mark.parametrize("k", range(len(PAIRS)))
def test_aji_matches_brute_force(k):
    pred, ref = PAIRS[k]
    assert aggregated_jaccard_index(pred, ref) == pytest.approx(brute_aji(pred, ref), rel=1e-12)


def test_pq_is_sq_times_rq_and_prf_consistent():
    for pred, ref in PAIRS:
        s = instance_scores(pred, ref)
        assert s["pq"] == pytest.approx(s["sq"] * s["rq"])
        assert s["f1"] == pytest.approx(s["rq"])  # RQ is the F1 of the detection
        assert s["ap50"] == pytest.approx(s["ap"][0])
        assert s["error_rate"] == pytest.approx((s["fp"] + s["fn"]) / s["n_ref"])


# ---------------------------------------------------------------- empty inputs
def test_both_empty_is_perfect():
    z = np.zeros((5, 5), dtype=np.uint32)
    s = instance_scores(z, z)
    np.testing.assert_array_equal(s["ap"], np.ones(10))
    for key in ("map", "ap50", "precision", "recall", "f1", "pq", "sq", "rq", "aji"):
        assert s[key] == 1.0, key
    assert s["error_rate"] == 0.0
    assert (s["n_pred"], s["n_ref"], s["tp"]) == (0, 0, 0)


def test_one_side_empty():
    z = np.zeros_like(REF6)
    s = instance_scores(z, REF6)
    assert (s["map"], s["precision"], s["recall"], s["f1"], s["pq"], s["aji"]) == (0, 0, 0, 0, 0, 0)
    assert s["error_rate"] == 1.0
    s = instance_scores(PRED6, z)
    assert s["map"] == 0.0 and s["aji"] == 0.0
    assert s["error_rate"] == float("inf")


# ---------------------------------------------------------------- min size
def test_min_size_excludes_small_objects_from_both_sides():
    ref = REF6.copy()
    pred = PRED6.copy()
    # min_size=3 drops pred 7, 8, 9 (2 px each); ref objects are 4, 4, 3 px.
    m = match_instances(pred, ref, min_size=3)
    assert (m.tp, m.fp, m.fn) == (1, 0, 2)
    # min_size=4 also drops ref 3.
    s = instance_scores(pred, ref, min_size=4)
    assert (s["n_pred"], s["n_ref"], s["tp"]) == (1, 2, 1)
    assert mean_average_precision(pred, ref, min_size=4) == pytest.approx(0.5)


def test_remove_small_instances_keeps_or_relabels_ids():
    lab = np.array([[7, 7, 0, 3], [7, 0, 0, 0], [0, 9, 9, 0]], dtype=np.uint16)
    kept = remove_small_instances(lab, min_size=2)
    assert kept.dtype == np.uint16
    np.testing.assert_array_equal(kept, np.where(lab == 3, 0, lab))
    rel = remove_small_instances(lab, min_size=2, relabel=True)
    np.testing.assert_array_equal(rel, [[1, 1, 0, 0], [1, 0, 0, 0], [0, 2, 2, 0]])
    np.testing.assert_array_equal(remove_small_instances(lab, min_size=0), lab)


@pytest.mark.parametrize("k", range(len(PAIRS)))
def test_remove_small_instances_matches_loop(k):
    _, ref = PAIRS[k]
    ids, areas = np.unique(ref, return_counts=True)
    small = ids[(areas < 30) & (ids > 0)]
    np.testing.assert_array_equal(
        remove_small_instances(ref, min_size=30), np.where(np.isin(ref, small), 0, ref)
    )


# ---------------------------------------------------------------- labelling
@pytest.mark.parametrize("connectivity", [1, 2])
def test_label_instances_matches_skimage(connectivity):
    blobs = binary_blobs(length=96, blob_size_fraction=0.05, volume_fraction=0.4, rng=1)
    got = label_instances(blobs, connectivity=connectivity)
    assert got.dtype == np.uint32
    np.testing.assert_array_equal(got, sk_label(blobs, connectivity=connectivity))


def test_label_instances_min_size_and_classes():
    sem = np.array(
        [
            [1, 1, 2, 0, 1],
            [1, 1, 2, 0, 0],
            [0, 0, 0, 0, 2],
            [2, 2, 2, 0, 2],
        ],
        dtype=np.uint8,
    )
    got = label_instances(sem)
    exp = np.array(
        [
            [1, 1, 3, 0, 2],
            [1, 1, 3, 0, 0],
            [0, 0, 0, 0, 4],
            [5, 5, 5, 0, 4],
        ]
    )
    np.testing.assert_array_equal(got, exp)
    got = label_instances(sem, min_size=3)
    exp3 = np.array(
        [
            [1, 1, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [0, 0, 0, 0, 0],
            [2, 2, 2, 0, 0],
        ]
    )
    np.testing.assert_array_equal(got, exp3)
    only2 = label_instances(sem, classes=[2])
    assert set(np.unique(only2)) == {0, 1, 2, 3}
    assert (only2[sem == 1] == 0).all()


def test_label_instances_rejects_bad_connectivity():
    with pytest.raises(ValueError, match="connectivity"):
        label_instances(np.ones((3, 3), np.uint8), connectivity=3)


# ---------------------------------------------------------------- validation
def test_threshold_validation():
    with pytest.raises(ValueError, match="threshold"):
        match_instances(PRED6, REF6, threshold=0)
    with pytest.raises(ValueError, match="threshold"):
        average_precision(PRED6, REF6, thresholds=[0.5, 1.5])


def test_shape_and_dtype_validation():
    with pytest.raises(ValueError, match="shapes differ"):
        instance_iou(PRED6, REF6[:5])
    with pytest.raises(ValueError, match="integer"):
        instance_scores(PRED6.astype(float), REF6)


# ---------------------------------------------------------------- relative performance
@pytest.mark.parametrize(
    ("score", "experts", "higher", "expected"),
    [
        (0.9, [0.8, 0.85], True, RELATIVE_PERFORMANCE[2]),
        (0.7, [0.8, 0.85], True, RELATIVE_PERFORMANCE[0]),
        (0.8, [0.8, 0.85], True, RELATIVE_PERFORMANCE[1]),
        (0.85, [0.8, 0.85], True, RELATIVE_PERFORMANCE[1]),
        (0.1, [0.2, 0.5], False, RELATIVE_PERFORMANCE[2]),
        (0.6, [0.2, 0.5], False, RELATIVE_PERFORMANCE[0]),
        (0.3, [0.2, 0.5], False, RELATIVE_PERFORMANCE[1]),
    ],
)
def test_relative_performance(score, experts, higher, expected):
    assert relative_performance(score, experts, higher_is_better=higher) == expected


def test_relative_performance_wording_and_errors():
    assert RELATIVE_PERFORMANCE == (
        "below the worst expert",
        "within the expert range",
        "above the best expert",
    )
    with pytest.raises(ValueError, match="empty"):
        relative_performance(0.5, [])
    with pytest.raises(ValueError, match="NaN"):
        relative_performance(float("nan"), [0.5])
