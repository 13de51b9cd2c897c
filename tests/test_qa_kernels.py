"""QA kernels: AUROC / AUPRC, ranks, Pearson r, Umin, review ranking and flags, thumbnails."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from scaleseg import qa
from scaleseg.tables import read_image_list

# -- OOD detection scores ----------------------------------------------------------------------


def test_auroc_analytic_cases():
    assert qa.auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert qa.auroc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    assert qa.auroc([5, 5, 5, 5], [0, 1, 0, 1]) == 0.5
    # pos {2, 3} vs neg {1, 2}: 1 + 0.5 (tie) + 1 + 1 of 4 pairs
    assert qa.auroc([1, 2, 2, 3], [False, True, False, True]) == pytest.approx(0.875)
    assert np.isnan(qa.auroc([1, 2], [1, 1]))
    assert np.isnan(qa.auroc([1, 2], [0, 0]))


def test_undefined_scores_count_as_most_suspicious():
    assert qa.auroc([np.nan, 0.1, 0.2], [1, 0, 0]) == 1.0
    assert qa.auroc([np.nan, np.nan, 0.2], [1, 0, 0]) == pytest.approx(0.75)
    assert qa.average_precision([np.nan, 0.1, 0.2], [1, 0, 0]) == 1.0


def test_average_precision_analytic_cases():
    assert qa.average_precision([3, 2, 1], [1, 1, 0]) == 1.0
    # ranked 1, 0, 1: P@1 = 1 at recall 1/2, P@3 = 2/3 at recall 1
    assert qa.average_precision([3, 2, 1], [1, 0, 1]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # all tied: one threshold, precision = prevalence
    assert qa.average_precision([1, 1, 1, 1], [1, 0, 0, 0]) == pytest.approx(0.25)
    assert np.isnan(qa.average_precision([1, 2], [0, 0]))


def test_bad_labels_and_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        qa.auroc([1, 2, 3], [0, 1])
    with pytest.raises(ValueError, match="0/1"):
        qa.average_precision([1, 2], [0, 2])


@pytest.mark.parametrize("seed", range(5))
def test_auroc_and_ap_match_sklearn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    n = 60
    y = rng.random(n) < 0.3
    y[:2] = [True, False]
    s = np.round(rng.normal(size=n) + y, 1)  # rounding makes ties
    assert qa.auroc(s, y) == pytest.approx(metrics.roc_auc_score(y, s), abs=1e-12)
    assert qa.average_precision(s, y) == pytest.approx(
        metrics.average_precision_score(y, s), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(3))
def test_average_ranks_match_scipy(seed):
    stats = pytest.importorskip("scipy.stats")
    v = np.random.default_rng(seed).integers(0, 6, 40).astype(float)
    np.testing.assert_allclose(qa.average_ranks(v), stats.rankdata(v, method="average"))


# -- Pearson r and Umin -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_pearson_matches_scipy(seed):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    x = rng.random(30)
    y = -0.7 * x + 0.3 * rng.random(30)
    r, n = qa.pearson_r(x, y)
    assert n == 30
    assert r == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    x[[3, 7]] = np.nan
    y[11] = np.inf
    keep = np.isfinite(x) & np.isfinite(y)
    r, n = qa.pearson_r(x, y)
    assert n == 27 and r == pytest.approx(stats.pearsonr(x[keep], y[keep]).statistic, abs=1e-12)


def test_pearson_degenerate():
    assert np.isnan(qa.pearson_r([1.0], [2.0])[0])
    assert np.isnan(qa.pearson_r([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])[0])
    assert qa.pearson_r([1, 2, 3], [2, 4, 6])[0] == pytest.approx(1.0)


def test_umin_is_smallest_u_of_failed_test_images():
    u = [0.10, 0.30, 0.20, 0.50, np.nan, 0.05]
    dice = [0.90, 0.60, 0.70, 0.40, 0.10, np.nan]
    est = qa.estimate_umin(u, dice, tau=0.75)
    assert est == {"umin": 0.20, "n_test": 4, "n_below": 3, "reason": ""}
    est = qa.estimate_umin(u, dice, tau=0.3)
    assert np.isnan(est["umin"]) and "no test image scored below" in est["reason"]
    # a score equal to tau passes (strictly below fails)
    assert np.isnan(qa.estimate_umin([0.1], [0.9], tau=0.9)["umin"])
    assert "no test image has both" in qa.estimate_umin([np.nan], [0.1], tau=0.5)["reason"]
    with pytest.raises(ValueError, match="differ in length"):
        qa.estimate_umin([0.1, 0.2], [0.1], tau=0.5)


# -- ranking and flags --------------------------------------------------------------------------


def test_rank_undefined_first_then_highest():
    u = np.array([0.2, np.nan, 0.5, 0.2, 0.9, np.nan])
    valid = np.array([True, True, True, True, False, True])
    np.testing.assert_array_equal(qa.review_order(u, valid=valid), [1, 5, 2, 0, 3])
    np.testing.assert_array_equal(qa.rank_scores(u, valid=valid), [4, 1, 3, 5, 0, 2])
    np.testing.assert_array_equal(qa.rank_scores([0.1, 0.3]), [2, 1])


def test_review_flags_every_branch():
    u = [0.4, 0.1, np.nan, 0.3, 0.2]
    flags, reasons, rules = qa.review_flags(
        u,
        0.3,
        u_reasons=["", "", "no foreground predicted", "", ""],
        failed=[None, None, None, None, "boom"],
    )
    np.testing.assert_array_equal(flags, [qa.REVIEW, qa.PASS, qa.REVIEW, qa.REVIEW, qa.REVIEW])
    assert reasons[0] == "U 0.4000 >= Umin 0.3000" and reasons[1] == ""
    assert reasons[2] == "U undefined: no foreground predicted"
    assert reasons[4] == "prediction failed: boom"
    assert rules == ["U", "", "U undefined", "U", "failed"]
    flags, reasons, _ = qa.review_flags([0.4, np.nan], None, umin_reason="no evaluation given")
    np.testing.assert_array_equal(flags, [qa.UNKNOWN, qa.REVIEW])
    assert reasons[0] == "Umin unknown: no evaluation given"
    with pytest.raises(ValueError, match="one entry per image"):
        qa.review_flags([0.1, 0.2], 0.1, failed=[None])
    with pytest.raises(ValueError, match="one entry per image"):
        qa.review_flags([0.1, 0.2], 0.1, distance=[1.0])


def test_review_flags_distance_rule():
    """A confidently wrong foreign image (low U, large distance) is flagged by the distance
    rule; the rules combine with OR and each reports itself."""
    u = [0.05, 0.5, 0.5, 0.05, np.nan, 0.05]
    d = [9.0, 9.0, 1.0, 1.0, 1.0, np.nan]
    flags, reasons, rules = qa.review_flags(u, 0.3, distance=d, distance_threshold=4.0)
    np.testing.assert_array_equal(flags, [1, 1, 1, 0, 1, 0])
    assert rules == ["distance", "U+distance", "U", "", "U undefined", ""]
    assert reasons[0] == "feature distance 9 >= 4 (unlike the training images)"
    assert reasons[1].startswith("U 0.5000 >= Umin 0.3000; feature distance 9")
    # Umin unknown: the distance rule still flags; other images stay unknown
    flags, reasons, rules = qa.review_flags(
        u, None, distance=d, distance_threshold=4.0, umin_reason="no evaluation given"
    )
    np.testing.assert_array_equal(flags, [1, 1, -1, -1, 1, -1])
    assert rules[:2] == ["distance", "distance"] and reasons[2].startswith("Umin unknown")
    # no threshold (older ensembles): U alone decides, as before
    flags, _, rules = qa.review_flags(u, 0.3, distance=d, distance_threshold=float("nan"))
    np.testing.assert_array_equal(flags, [0, 1, 1, 0, 1, 0])
    assert "distance" not in "".join(rules)


def test_review_scores_put_every_flag_past_one():
    """One scale for both rules: the score is >= 1 exactly where review_flags fires, for
    random U, distances, thresholds and missing values; its parts are the two ratios."""
    rng = np.random.default_rng(7)
    for _ in range(400):
        n = 12
        u = rng.uniform(0, 1, n)
        u[rng.random(n) < 0.15] = np.nan
        d = rng.gamma(2.0, 2.0, n)
        d[rng.random(n) < 0.15] = np.nan
        d[rng.random(n) < 0.05] = np.inf
        failed = [("boom" if f else None) for f in rng.random(n) < 0.1]
        umin = rng.choice([float(rng.uniform(0.1, 0.9)), 0.0, None, float("nan")])
        thr = rng.choice([float(rng.uniform(1, 8)), 0.0, None, float("nan")])
        flags, _, _ = qa.review_flags(u, umin, distance=d, distance_threshold=thr, failed=failed)
        s = qa.review_scores(u, umin, distance=d, distance_threshold=thr, failed=failed)
        ok = np.array([f is None for f in failed])
        # flagged exactly at >= 1; a pass or an unknown flag (no rule fired) below 1 or NaN
        np.testing.assert_array_equal(s[ok] >= 1, flags[ok] == qa.REVIEW)
        assert np.isnan(s[~ok]).all()  # failed: no score, whichever rules exist
    u = np.array([0.6, 0.1, np.nan, 0.2, 0.1])
    d = np.array([2.0, 12.0, 1.0, np.nan, 1.0])
    s = qa.review_scores(u, 0.4, distance=d, distance_threshold=8.0)
    np.testing.assert_allclose(s, [max(0.6 / 0.4, 2 / 8), 12 / 8, np.inf, 0.2 / 0.4, 0.25])
    # Umin unknown: the distance ratio alone; no distance rule: the U ratio alone
    s = qa.review_scores(u, None, distance=d, distance_threshold=8.0)
    np.testing.assert_allclose(s, [0.25, 1.5, np.inf, np.nan, 0.125])
    s = qa.review_scores(u, 0.4, distance=d, distance_threshold=float("nan"))
    np.testing.assert_allclose(s, [1.5, 0.25, np.inf, 0.5, 0.25])
    # neither rule can be checked: only undefined U (always reviewed) gets a score
    s = qa.review_scores(u, None)
    np.testing.assert_array_equal(np.isinf(s), np.isnan(u))
    assert np.isnan(s[~np.isnan(u)]).all()
    s = qa.review_scores(u, None, failed=["boom", None, "boom", None, None])
    np.testing.assert_array_equal(np.isnan(s), [True, True, True, True, True])
    with pytest.raises(ValueError, match="one entry per image"):
        qa.review_scores(u, 0.4, distance=[1.0])


# -- thumbnails ---------------------------------------------------------------------------------


def test_pick_level_never_full_resolution_with_a_pyramid():
    shapes = [(1024, 1024), (512, 512), (256, 256), (128, 128)]
    assert qa.pick_level(shapes, min_side=200) == 2
    assert qa.pick_level(shapes, min_side=100) == 3
    assert qa.pick_level(shapes, min_side=4000) == 1  # level 1 even when it is small
    assert qa.pick_level([(50, 70)], min_side=96) == 0  # a single level is all there is
    with pytest.raises(ValueError):
        qa.pick_level([])


def test_shrink_resize_outline_display():
    a = np.arange(3 * 10 * 7).reshape(3, 10, 7)
    assert qa.shrink(a, 4).shape == (3, 4, 3)
    assert qa.shrink(a, 10).shape == a.shape
    lab = np.zeros((4, 4), np.uint8)
    lab[1:3, 1:3] = 2
    big = qa.resize_nearest(lab, (8, 8))
    np.testing.assert_array_equal(big, np.kron(lab, np.ones((2, 2), np.uint8)))
    assert set(np.unique(qa.resize_nearest(lab, (3, 5)))) <= {0, 2}
    square = np.zeros((6, 6), np.uint8)
    square[1:5, 1:5] = 1
    edge = qa.outline(square)
    assert edge[1, 1] and edge[1, 3] and not edge[2, 2] and not edge[0, 0]
    gray = qa.to_display(np.linspace(0, 100, 50).reshape(1, 5, 10))
    assert gray.shape == (5, 10) and gray.min() == 0 and gray.max() == 1
    rgb = qa.to_display(np.random.default_rng(0).random((2, 5, 5)))
    assert rgb.shape == (5, 5, 3) and np.all(rgb[..., 2] == 0)
    assert np.all(qa.to_display(np.full((1, 3, 3), 7.0)) == 0)


# -- tables -------------------------------------------------------------------------------------


def _images(n=6):
    rng = np.random.default_rng(0)
    u = rng.random(n)
    u[1] = np.nan
    return pd.DataFrame(
        {
            "image": [f"im{i}" for i in range(n)],
            "status": ["ok"] * (n - 1) + ["failed"],
            "error": [""] * (n - 1) + ["RuntimeError: boom"],
            "U": u,
            "U_epistemic": u / 3,
            "U_reason": ["", "no foreground predicted"] + [""] * (n - 2),
            "fraction_class_0": ([0.9, 1.0, 0.8, 0.7, 0.95] + [0.5] * n)[: n - 1] + [np.nan],
            "fraction_class_1": ([0.1, 0.0, 0.2, 0.3, 0.05] + [0.5] * n)[: n - 1] + [np.nan],
        }
    )


def test_qa_table_estimates_umin_and_flags():
    images = _images()
    dice = pd.Series({"im0": 0.5, "im2": 0.9, "im3": 0.6, "im4": 0.95})
    t, info = qa.qa_table(images, scores=dice, tau=0.75, test_images=["im0", "im2", "im3"])
    u = images.set_index("image")["U"]
    assert info["umin_source"] == "estimated"
    assert info["umin"] == pytest.approx(min(u["im0"], u["im3"]))
    assert info["n_test"] == 3 and info["n_below"] == 2
    assert t["qa_rank"].iloc[0] == 1 and t["image"].iloc[0] == "im1"  # undefined U first
    assert t["image"].iloc[-1] == "im5" and pd.isna(t["qa_rank"].iloc[-1])
    ok = t[t["status"] == "ok"].set_index("image")
    for name, row in ok.iterrows():
        expect = np.isnan(row["U"]) or row["U"] >= info["umin"]
        assert bool(row["review"]) == expect, name
    assert t.set_index("image").loc["im5", "review"]
    assert t.set_index("image").loc["im4", "qa_test"] == False  # noqa: E712 (not in the list)
    # no distance rule here: the review score is U / Umin, >= 1 exactly for the flagged
    np.testing.assert_allclose(
        ok["review_score"], np.where(np.isnan(ok["U"]), np.inf, ok["U"] / info["umin"])
    )
    assert ((ok["review_score"] >= 1) == ok["review"].astype(bool)).all()
    assert np.isnan(t.set_index("image").loc["im5", "review_score"])  # failed
    given, info2 = qa.qa_table(images, scores=dice, umin=0.0)
    assert info2["umin_source"] == "given" and given["review"].all()
    none, info3 = qa.qa_table(images)
    assert info3["umin_source"] == "none" and info3["umin_reason"] == "no evaluation given"
    assert none["review"].isna().sum() == 4 and info3["n_unknown"] == 4


def test_ood_summary_uses_the_kernels_and_skips_all_nan_scores():
    images = _images(8)
    images["ood_distance"] = np.nan  # ensemble without feature statistics
    labels = pd.DataFrame(
        {
            "image": images["image"],
            "ood": pd.array([False, True, False, True, False, True, None, False], "boolean"),
            "ood_kind": ["", "blur", "", "noise", "", "blur", "", ""],
        }
    )
    t, _ = qa.qa_table(images, ood=labels)
    s = qa.ood_summary(t)
    assert set(s["score"]) == {"U", "U_epistemic", "review"}  # review: the flag itself
    assert set(s["ood_kind"]) == {"all", "blur", "noise"}
    lab = t[(t["status"] == "ok") & t["ood"].notna()]
    row = s[(s["score"] == "U") & (s["ood_kind"] == "all")].iloc[0]
    y = lab["ood"].to_numpy(bool)
    assert row["auroc"] == pytest.approx(qa.auroc(lab["U"], y))
    assert row["auprc"] == pytest.approx(qa.average_precision(lab["U"], y))
    assert row["n_ood"] == y.sum() and row["n_undefined"] == 1
    images["ood_distance"] = np.linspace(0, 1, 8)
    t, _ = qa.qa_table(images, ood=labels)
    assert "ood_distance" in set(qa.ood_summary(t)["score"])
    # with both thresholds the review score (both rules on one scale) is scored like the others
    t, info = qa.qa_table(images, ood=labels, umin=0.5, distance_threshold=0.6)
    s = qa.ood_summary(t)
    lab = t[(t["status"] == "ok") & t["ood"].notna()]
    row = s[(s["score"] == "review_score") & (s["ood_kind"] == "all")].iloc[0]
    rs = np.where(lab["U"].isna(), np.inf, np.fmax(lab["U"] / 0.5, lab["ood_distance"] / 0.6))
    np.testing.assert_allclose(lab["review_score"], rs)
    y = lab["ood"].to_numpy(bool)
    finite = np.isfinite(rs)
    ref = roc_auc_score(y, np.where(finite, rs, rs[finite].max() + 1))
    assert row["auroc"] == pytest.approx(ref)
    assert row["flagged_ood"] == pytest.approx(lab.loc[y, "review"].astype(bool).mean())
    # Umin unknown: images without a distance have no review score and no flag -- scored as
    # not flagged, like the flag's own row
    images.loc[images["image"] == "im3", "ood_distance"] = np.nan
    t, _ = qa.qa_table(images, ood=labels, distance_threshold=0.6)
    s = qa.ood_summary(t).set_index(["score", "ood_kind"])
    lab = t[(t["status"] == "ok") & t["ood"].notna()].set_index("image")
    assert np.isnan(lab.loc["im3", "review_score"]) and pd.isna(lab.loc["im3", "review"])
    y = lab["ood"].to_numpy(bool)
    rs = lab["review_score"].fillna(0.0).to_numpy()
    assert s.loc[("review_score", "all"), "auroc"] == pytest.approx(qa.auroc(rs, y))
    assert s.loc[("review_score", "all"), "flagged_ood"] == pytest.approx(
        s.loc[("review", "all"), "flagged_ood"]
    )


def test_class_summary():
    t, _ = qa.qa_table(_images(), umin=0.0)
    c = qa.class_summary(t)
    assert list(c["class"]) == ["class_0", "class_1"]
    assert c.loc[1, "images"] == 4 and c.loc[1, "mean_fraction"] == pytest.approx(0.13)


# -- input files --------------------------------------------------------------------------------


def test_read_ood_labels_rules(tmp_path):
    images = ["syn_0000", "syn_0001", "syn_0002", "ood_blur_0000", "other"]
    demo = tmp_path / "demo.csv"
    pd.DataFrame(
        {
            "name": ["syn_0000", "syn_0001", "syn_0002", "ood_blur_0000"],
            "split": ["train", "test", "test", "ood"],
            "ood": ["", "", "", "blur"],
        }
    ).to_csv(demo, index=False)
    lab = qa.read_ood_labels(demo, images).set_index("image")
    assert lab["ood"].tolist()[1:4] == [False, False, True]
    assert pd.isna(lab.loc["syn_0000", "ood"]) and pd.isna(lab.loc["other", "ood"])
    assert lab.loc["ood_blur_0000", "ood_kind"] == "blur"
    listing = tmp_path / "ood.txt"
    listing.write_text("ood_blur_0000\n")
    lab = qa.read_ood_labels(listing, images).set_index("image")
    assert lab["ood"].sum() == 1 and lab["ood"].notna().all()
    bad = tmp_path / "bad.txt"
    bad.write_text("nope\n")
    with pytest.raises(ValueError, match="bad.txt: none of the listed"):
        qa.read_ood_labels(bad, images)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        qa.read_ood_labels(tmp_path / "missing.csv", images)


def test_read_names_and_evaluation_errors(tmp_path):
    demo = tmp_path / "d.csv"
    pd.DataFrame({"name": ["a", "b", "c"], "split": ["test", "train", "test"]}).to_csv(
        demo, index=False
    )
    assert read_image_list(demo, where="split=test") == ["a", "c"]
    with pytest.raises(ValueError, match="no column 'fold'"):
        read_image_list(demo, where="fold=1")
    ev = tmp_path / "per_image.csv"
    pd.DataFrame(
        {"image": ["a", "a"], "reference": ["est_gt", "truth"], "dice": [0.5, 0.6]}
    ).to_csv(ev, index=False)
    with pytest.raises(ValueError, match="several references"):
        qa.read_evaluation(ev, metric="dice")
    df, ref = qa.read_evaluation(tmp_path, metric="dice", reference="truth")
    assert ref == "truth" and df.loc["a", "dice"] == 0.6
    with pytest.raises(ValueError, match="no column 'map'"):
        qa.read_evaluation(ev, metric="map", reference="truth")


def test_review_records_append_and_latest_wins(tmp_path):
    path = tmp_path / "review.csv"
    qa.record_review(path, ["a", "b"], status="reviewed", reviewer="me")
    qa.record_review(path, "a", status="excluded", note="out of focus", reviewer="me")
    cur = qa.read_reviews(path).set_index("image")
    assert cur.loc["a", "status"] == "excluded" and cur.loc["b", "status"] == "reviewed"
    assert len(pd.read_csv(path)) == 3
    with pytest.raises(ValueError, match="status must be"):
        qa.record_review(path, "a", status="maybe")
    other = tmp_path / "other.csv"
    other.write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="other.csv: not a review CSV"):
        qa.record_review(other, "a", status="reviewed")


def test_object_border_analytic():
    from scaleseg.uncertainty import object_border

    lab = np.zeros((11, 11), np.uint8)
    lab[2:9, 2:9] = 1  # a 7x7 square: all but its 3x3 centre lie within 2 px of background
    b = object_border(lab, 2)
    assert b.sum() == 49 - 9 and not b[4:7, 4:7].any() and b[2, 2] and b[8, 5]
    assert object_border(np.ones((5, 5), np.uint8), 2).sum() == 24  # the image edge counts
    assert object_border(lab, 1).sum() == 49 - 25
    assert not object_border(np.zeros((4, 4), np.uint8)).any()
    with pytest.raises(ValueError, match="width"):
        object_border(lab, 0)
