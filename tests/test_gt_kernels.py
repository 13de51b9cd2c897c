"""Ground-truth kernels against SimpleITK called directly, and hand cases."""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi
from skimage.data import binary_blobs

from scaleseg.gt import (
    consensus_bound,
    estimate_gt,
    expert_scores,
    inter_expert_agreement,
    majority_vote,
    staple,
)
from scaleseg.metrics import dice, mean_average_precision

# 4 binary experts on one row. Foreground votes per pixel: 3, 4, 2, 2, 0, 1, so
# pixels 2 and 3 are ties. On the decided pixels (0, 1, 4, 5; vote 1, 1, 0, 0)
# the Dice of the experts is 1, 4/5, 1, 2/3: experts "a" and "c" are best.
E_A = np.array([[1, 1, 1, 0, 0, 0]], dtype=np.uint8)
E_B = np.array([[1, 1, 0, 0, 0, 1]], dtype=np.uint8)
E_C = np.array([[1, 1, 1, 1, 0, 0]], dtype=np.uint8)
E_D = np.array([[0, 1, 0, 1, 0, 0]], dtype=np.uint8)


def _img(a, dtype=np.uint8):
    return sitk.GetImageFromArray(np.ascontiguousarray(a, dtype=dtype))


def noisy_experts(n, seed=0, n_classes=1, shape=(96, 96)):
    """n experts: one blob mask, each expert with its own boundary shifts and noise."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, dtype=np.uint8)
    for c in range(1, n_classes + 1):
        blobs = binary_blobs(
            length=shape[0], blob_size_fraction=0.12, volume_fraction=0.25, rng=seed + c
        )
        truth[blobs] = c
    out = []
    for _ in range(n):
        e = truth.copy()
        if rng.random() < 0.5:
            e = ndi.grey_dilation(e, size=(3, 3))
        else:
            e = ndi.grey_erosion(e, size=(3, 3))
        flip = rng.random(shape) < 0.05
        e[flip] = rng.integers(0, n_classes + 1, size=int(flip.sum()))
        out.append(e)
    return out


# ---------------------------------------------------------------- binary STAPLE
@pytest.mark.parametrize("n_experts", [2, 3, 5])
def test_binary_staple_matches_simpleitk(n_experts):
    masks = noisy_experts(n_experts, seed=n_experts)
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1)
    prob = sitk.GetArrayFromImage(f.Execute([_img(m) for m in masks]))
    labels, info = staple(masks)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, (prob >= 0.5).astype(np.uint8))
    np.testing.assert_allclose(info["probability"], prob, atol=1e-6)
    np.testing.assert_allclose(list(info["sensitivity"].values()), f.GetSensitivity())
    np.testing.assert_allclose(list(info["specificity"].values()), f.GetSpecificity())
    assert info["experts"] == [str(i) for i in range(n_experts)]
    labels_t, _ = staple(masks, threshold=0.9)
    np.testing.assert_array_equal(labels_t, (prob >= 0.9).astype(np.uint8))


def test_binary_staple_hand_case_and_names():
    masks = {"a": E_A, "b": E_B, "c": E_C}
    labels, info = staple(masks)
    # Pixels 0-1 and 4 are unanimous; STAPLE follows the two-of-three majority elsewhere.
    np.testing.assert_array_equal(labels, [[1, 1, 1, 0, 0, 0]])
    assert set(info["sensitivity"]) == {"a", "b", "c"}


def test_staple_all_empty_and_all_full_do_not_crash():
    z = np.zeros((5, 6), dtype=np.uint8)
    labels, info = staple([z, z, z])
    np.testing.assert_array_equal(labels, z)
    assert info["degenerate"] and np.isnan(info["sensitivity"]["0"])
    labels, info = staple([z + 1, z + 1])
    np.testing.assert_array_equal(labels, z + 1)
    labels, _ = staple([z, z], n_classes=3)
    np.testing.assert_array_equal(labels, z)


# ---------------------------------------------------------------- multi-label STAPLE
@pytest.mark.parametrize("n_experts", [2, 3, 4])
def test_multilabel_staple_matches_simpleitk(n_experts):
    masks = noisy_experts(n_experts, seed=10 + n_experts, n_classes=3)
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetLabelForUndecidedPixels(255)
    ref = sitk.GetArrayFromImage(f.Execute([_img(m) for m in masks]))
    labels, info = staple(masks, n_classes=3, undecided="background")
    decided = ref != 255
    np.testing.assert_array_equal(labels[decided], ref[decided])
    np.testing.assert_array_equal(info["undecided"], ~decided)
    assert (labels[~decided] == 0).all()
    assert info["n_undecided"] == int((~decided).sum())
    np.testing.assert_allclose(
        info["confusion_matrices"]["0"].ravel(), f.GetConfusionMatrix(0), atol=1e-12
    )


def test_multilabel_staple_undecided_resolved_by_best_expert():
    # Two experts disagreeing on column 1 leave it undecided; expert "y" agrees
    # with the estimate on the decided pixels better than "x".
    x = np.array([[0, 1, 2, 2], [0, 1, 2, 0], [0, 1, 2, 0]], dtype=np.uint8)
    y = np.array([[0, 2, 2, 2], [0, 2, 2, 0], [0, 2, 2, 0]], dtype=np.uint8)
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetLabelForUndecidedPixels(255)
    ref = sitk.GetArrayFromImage(f.Execute([_img(x), _img(y)]))
    labels, info = staple({"x": x, "y": y}, undecided="best_expert")
    und = ref == 255
    assert und.any()
    np.testing.assert_array_equal(info["undecided"], und)
    best = info["best_expert"]
    exp = ref.copy()
    exp[und] = {"x": x, "y": y}[best][und]
    np.testing.assert_array_equal(labels, exp)
    scores = info["expert_dice_on_decided"]
    assert scores[best] == max(scores.values())
    assert staple({"x": x, "y": y}, undecided=None)[0].tolist() == labels.tolist()


# ---------------------------------------------------------------- majority vote
@pytest.mark.parametrize("n_experts", [2, 3, 4, 5])
@pytest.mark.parametrize("n_classes", [1, 3])
def test_vote_matches_simpleitk_on_decided_pixels(n_experts, n_classes):
    masks = noisy_experts(n_experts, seed=20 + n_experts, n_classes=n_classes)
    f = sitk.LabelVotingImageFilter()
    f.SetLabelForUndecidedPixels(255)
    ref = sitk.GetArrayFromImage(f.Execute([_img(m) for m in masks]))
    labels, info = majority_vote(masks, n_classes=n_classes)
    decided = ref != 255
    np.testing.assert_array_equal(labels[decided], ref[decided])
    np.testing.assert_array_equal(info["undecided"], ~decided)
    if n_experts % 2 == 1 and n_classes == 1:
        assert info["n_undecided"] == 0
    # Independent check: plurality by counting.
    counts = np.stack([(np.stack(masks) == c).sum(0) for c in range(n_classes + 1)])
    top = counts.max(0)
    unique_top = (counts == top).sum(0) == 1
    np.testing.assert_array_equal(unique_top, decided)
    np.testing.assert_array_equal(labels[decided], counts.argmax(0)[decided])


def test_vote_ties_resolved_by_best_expert_hand_case():
    labels, info = majority_vote({"a": E_A, "b": E_B, "c": E_C, "d": E_D})
    np.testing.assert_array_equal(info["undecided"], [[False, False, True, True, False, False]])
    assert info["expert_dice_on_decided"] == pytest.approx(
        {"a": 1.0, "b": 0.8, "c": 1.0, "d": 2 / 3}
    )
    assert info["best_expert"] == "a"  # ties between best experts: the first one
    np.testing.assert_array_equal(labels, E_A)
    labels, info = majority_vote({"d": E_D, "c": E_C, "b": E_B, "a": E_A})
    assert info["best_expert"] == "c"
    np.testing.assert_array_equal(labels, [[1, 1, 1, 1, 0, 0]])


def test_vote_other_undecided_rules():
    masks = [E_A, E_B, E_C, E_D]
    labels, _ = majority_vote(masks, undecided="background")
    np.testing.assert_array_equal(labels, [[1, 1, 0, 0, 0, 0]])
    labels, _ = majority_vote(masks, undecided=1)
    np.testing.assert_array_equal(labels, [[1, 1, 1, 1, 0, 0]])
    with pytest.raises(ValueError, match="outside 0..n_classes"):
        majority_vote(masks, undecided=2)
    with pytest.raises(ValueError, match="undecided must be"):
        majority_vote(masks, undecided="random")


def test_multiclass_vote_hand_case():
    e0 = np.array([[0, 1, 2], [2, 2, 1]], dtype=np.uint8)
    e1 = np.array([[0, 1, 1], [2, 0, 2]], dtype=np.uint8)
    e2 = np.array([[1, 1, 2], [0, 2, 0]], dtype=np.uint8)
    # Pixel (1, 2) gets 1, 2, 0: a three-way tie. e0 equals the vote on all
    # decided pixels, so it is the best expert and fills the tie with 1.
    labels, info = majority_vote([e0, e1, e2])
    np.testing.assert_array_equal(labels, [[0, 1, 2], [2, 2, 1]])
    assert info["n_undecided"] == 1 and info["best_expert"] == "0"
    labels, _ = majority_vote([e0, e1, e2], undecided="background")
    np.testing.assert_array_equal(labels, [[0, 1, 2], [2, 2, 0]])


def test_vote_all_empty():
    z = np.zeros((3, 4), dtype=np.uint16)
    labels, info = majority_vote([z, z])
    np.testing.assert_array_equal(labels, z)
    assert info["n_undecided"] == 0


def test_estimate_gt_dispatches():
    masks = noisy_experts(3, seed=1)
    np.testing.assert_array_equal(estimate_gt(masks)[0], staple(masks)[0])
    np.testing.assert_array_equal(
        estimate_gt(masks, method="majority_vote", undecided="background")[0],
        majority_vote(masks, undecided="background")[0],
    )
    with pytest.raises(ValueError, match="method"):
        estimate_gt(masks, method="mean")


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("fn", [staple, majority_vote])
def test_input_validation(fn):
    a = np.zeros((4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="at least 2 experts, got 1"):
        fn([a])
    with pytest.raises(
        ValueError, match=r"expert 'b' has shape \(4, 5\), but expert 'a' has shape \(4, 4\)"
    ):
        fn({"a": a, "b": np.zeros((4, 5), np.uint8)})
    with pytest.raises(ValueError, match=r"expert '1' holds label 3, outside 0..n_classes \(2\)"):
        fn([a, a + 3], n_classes=2)
    with pytest.raises(
        ValueError, match="expert '0': mask must have an integer dtype, got float64"
    ):
        fn([a.astype(float), a])
    with pytest.raises(ValueError, match="holds label -1"):
        fn([a.astype(np.int16) - 1, a])


# ---------------------------------------------------------------- expert scores
def test_expert_scores_consistent_with_metrics():
    masks = dict(zip("abc", noisy_experts(3, seed=4)))
    gt, _ = staple(masks)
    rows = expert_scores(masks, gt, min_size=5)
    assert [r["expert"] for r in rows] == ["a", "b", "c"]
    f = sitk.LabelOverlapMeasuresImageFilter()
    for r in rows:
        f.Execute(_img(gt), _img(masks[r["expert"]]))
        assert r["dice"] == pytest.approx(f.GetDiceCoefficient(1), abs=1e-12)
        assert 0.0 <= r["map"] <= r["ap50"] <= 1.0
    # An expert identical to the ground truth scores perfectly.
    perfect = expert_scores({"gt": gt, "a": masks["a"]}, gt)[0]
    assert (perfect["dice"], perfect["map"], perfect["ap50"]) == (1.0, 1.0, 1.0)


def test_expert_scores_hand_instances():
    gt = np.array([[1, 1, 0, 1, 1, 0, 1]], dtype=np.uint8)  # 3 objects (2, 2, 1 px)
    e = np.array([[1, 1, 0, 0, 0, 0, 1]], dtype=np.uint8)
    (row,) = [r for r in expert_scores({"e": e, "g": gt}, gt, min_size=2) if r["expert"] == "e"]
    # min_size=2 drops the 1-px objects: expert has 1 object, gt has 2, one exact match.
    assert row["ap50"] == pytest.approx(1 / 2)
    assert row["map"] == pytest.approx(1 / 2)
    assert row["dice"] == pytest.approx(2 * 3 / (3 + 5))


def test_inter_expert_agreement_symmetric():
    masks = dict(zip(["x", "y", "z"], noisy_experts(3, seed=6, n_classes=2)))
    df = inter_expert_agreement(masks, metric="dice", n_classes=2)
    assert list(df.index) == ["x", "y", "z"] and list(df.columns) == ["x", "y", "z"]
    np.testing.assert_allclose(df.to_numpy(), df.to_numpy().T)
    np.testing.assert_allclose(np.diag(df.to_numpy()), 1.0)
    assert df.loc["x", "z"] == pytest.approx(dice(masks["x"], masks["z"], n_classes=2))
    dm = inter_expert_agreement(masks, metric="map")
    np.testing.assert_allclose(dm.to_numpy(), dm.to_numpy().T)
    with pytest.raises(ValueError, match="metric"):
        inter_expert_agreement(masks, metric="aji")


def test_consensus_bound_hand_case():
    a = np.array([[1, 1, 0, 2, 2, 0, 3]], dtype=np.uint32)
    b = np.array([[5, 5, 0, 6, 0, 0, 0]], dtype=np.uint32)
    out = consensus_bound({"a": a, "b": b}, instances=True)
    # ref a: b matches objects 1 and 2 (IoU 1 and 1/2), misses 3 -> TP 2, FN 1, FP 0: 1/3.
    # ref b: TP 2, FP 1 (a's object 3), FN 0 -> 1/2.
    er = out["pairwise_error_rate"]
    assert er.loc["a", "b"] == pytest.approx(1 / 3)
    assert er.loc["b", "a"] == pytest.approx(1 / 2)
    assert out["mean_pairwise_error_rate"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert out["consensus_error_rate"] == pytest.approx((1 / 3 + 1 / 2) / 4)
    assert out["n_pairs"] == 2
    sem = consensus_bound({"a": (a > 0).astype(np.uint8), "b": (b > 0).astype(np.uint8)})
    assert sem["n_pairs"] == 2 and np.isfinite(sem["mean_pairwise_error_rate"])


def test_expert_scores_requires_mapping():
    with pytest.raises(TypeError, match="mapping"):
        expert_scores([E_A, E_B], E_A)


def test_map_of_identical_instances_is_one():
    masks = noisy_experts(2, seed=8)
    assert mean_average_precision(masks[0], masks[0]) == 1.0
