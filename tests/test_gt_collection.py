"""GT estimation over collections and mask folders, and the `scaleseg gt` command."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest

from scaleseg import io
from scaleseg.cli import main
from scaleseg.gt import majority_vote, staple
from scaleseg.gt._collection import mask_sets
from scaleseg.gt._outputs import run_gt


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from scaleseg.datasets import write_demo_archive

    out = tmp_path_factory.mktemp("gt") / "demo"
    write_demo_archive(out, n_images=3, n_ood=1, shape=(64, 72), n_experts=3, seed=1)
    return out / "images"


def _experts(ref):
    return {
        n: io.open_labels(ref, n).values for n in io.list_labels(ref) if n.startswith("expert_")
    }


@pytest.mark.parametrize("method", ["staple", "majority_vote"])
def test_collection_gt_equals_kernel(archive, tmp_path, method):
    refs = io.open_collection(archive)
    res = run_gt(refs, tmp_path / "gt", method=method, chunks=(32, 32))
    kernel = staple if method == "staple" else majority_vote
    for ref in refs:
        expected, _ = kernel(_experts(ref))
        got = io.open_labels(tmp_path / "gt" / "images" / f"{ref.name}.zarr", "est_gt").values
        np.testing.assert_array_equal(got, expected)
        agreement = io.open_image(tmp_path / "gt" / "images" / f"{ref.name}.zarr").values[0]
        stack = np.stack(list(_experts(ref).values()))
        np.testing.assert_allclose(agreement, (stack == expected).mean(0), atol=1e-6)
    scores = pd.read_parquet(tmp_path / "gt" / "expert_scores.parquet")
    assert len(scores) == len(refs) * 3
    assert scores["dice"].between(0, 1).all()
    assert res["dataset"]["estimated"] == len(refs)
    for f in ("expert_scores.png", "expert_agreement.png", "expert_scores.xlsx", "gt_summary.json"):
        assert (tmp_path / "gt" / f).exists()
    mat = pd.read_csv(tmp_path / "gt" / "expert_agreement.csv", index_col=0)
    np.testing.assert_allclose(mat.to_numpy(), mat.to_numpy().T)


def test_cluster_equals_in_process(archive, tmp_path, client):
    refs = io.open_collection(archive)
    a = run_gt(refs, tmp_path / "a", chunks=(32, 32))
    b = run_gt(refs, tmp_path / "b", chunks=(32, 32), client=client)
    pd.testing.assert_frame_equal(a["scores"], b["scores"])
    for ref in refs:
        np.testing.assert_array_equal(
            io.open_labels(tmp_path / "a" / "images" / f"{ref.name}.zarr", "est_gt").values,
            io.open_labels(tmp_path / "b" / "images" / f"{ref.name}.zarr", "est_gt").values,
        )


def test_mask_folders_missing_experts_and_single_expert(tmp_path, rng):
    masks = tmp_path / "masks"
    base = np.zeros((30, 30), np.uint8)
    base[5:15, 5:15] = 1
    base[18:26, 18:28] = 1
    for e in ("a", "b", "c"):
        (masks / e).mkdir(parents=True)
        iio.imwrite(masks / e / "img1.png", np.roll(base, rng.integers(-1, 2), axis=0))
    iio.imwrite(masks / "a" / "img2.png", base)  # img2: two experts only
    iio.imwrite(masks / "b" / "img2.png", base)
    iio.imwrite(masks / "c" / "img3.png", base)  # img3: a single expert -> skipped, with reason
    sets = mask_sets(masks)
    assert [s.name for s in sets] == ["img1", "img2", "img3"]
    assert sorted(sets[0].masks) == ["expert_a", "expert_b", "expert_c"]
    res = run_gt(sets, tmp_path / "gt")
    images = res["images"].set_index("image")
    assert images.loc["img2", "n_experts"] == 2 and images.loc["img2", "status"] == "ok"
    assert images.loc["img3", "status"] == "skipped" and "1 expert" in images.loc["img3", "reason"]
    assert not (tmp_path / "gt" / "images" / "img3.zarr").exists()
    np.testing.assert_array_equal(
        io.open_labels(tmp_path / "gt" / "images" / "img2.zarr", "est_gt").values, base
    )


def test_only_single_experts_is_an_error(tmp_path):
    (tmp_path / "m" / "a").mkdir(parents=True)
    iio.imwrite(tmp_path / "m" / "a" / "x.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="no image has at least 2 expert masks"):
        run_gt(mask_sets(tmp_path / "m"), tmp_path / "gt")
    assert not (tmp_path / "gt").exists()


def test_dice_only_equals_full_run(archive, tmp_path, capsys):
    """--no-instance-scores: the same GT, Dice and agreement; no mAP / consensus bound."""
    refs = io.open_collection(archive)
    full = run_gt(refs, tmp_path / "full", chunks=(32, 32))
    out = tmp_path / "dice"
    assert main(["gt", str(archive), str(out), "--no-instance-scores"]) == 0
    assert "no instance scores" in capsys.readouterr().out
    for ref in refs:
        np.testing.assert_array_equal(
            io.open_labels(out / "images" / f"{ref.name}.zarr", "est_gt").values,
            io.open_labels(tmp_path / "full" / "images" / f"{ref.name}.zarr", "est_gt").values,
        )
    scores = pd.read_parquet(out / "expert_scores.parquet")
    np.testing.assert_allclose(scores["dice"], full["scores"]["dice"], atol=1e-12)
    assert scores["map"].isna().all() and scores["ap50"].isna().all()
    assert full["scores"]["map"].notna().all()
    summary = json.loads(
        (out / "gt_summary.json").read_text(),
        parse_constant=lambda c: pytest.fail(f"gt_summary.json holds {c}"),
    )
    assert summary["instance_scores"] is False
    assert summary["consensus_bound"] is None and summary["expert_map_range"] is None
    assert summary["mean_pairwise_expert_dice"] == pytest.approx(
        full["dataset"]["mean_pairwise_expert_dice"]
    )
    assert (out / "expert_scores.png").exists()
    assert json.loads((out / "run.json").read_text())["config"]["instance_scores"] is False


def test_shape_mismatch_names_the_image(tmp_path):
    for e, shape in (("a", (8, 8)), ("b", (8, 9))):
        (tmp_path / "m" / e).mkdir(parents=True)
        iio.imwrite(tmp_path / "m" / e / "x.png", np.zeros(shape, np.uint8))
    with pytest.raises(ValueError, match=r"x\.png.*shape"):
        run_gt(mask_sets(tmp_path / "m"), tmp_path / "gt")


def test_gt_cli(archive, tmp_path, capsys):
    out = tmp_path / "gt"
    assert main(["gt", str(archive), str(out), "--method", "majority_vote"]) == 0
    text = capsys.readouterr().out
    assert "consensus bound" in text and "expert_1" in text
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["method"] == "majority_vote" and run["status"] == "ok"
    before = (out / "gt_summary.json").read_text()
    assert (
        main(["gt", str(archive), str(out)]) == 1
    )  # another method: untouched without --overwrite
    assert "config.method: 'majority_vote' -> 'staple'" in capsys.readouterr().err
    assert (out / "gt_summary.json").read_text() == before
    assert main(["gt", str(archive), str(out), "--overwrite"]) == 0
    assert main(["gt", str(out / "x"), "--masks", str(tmp_path)]) == 1


@pytest.mark.shared_data
def test_pv_hc_mask_folders(tmp_path):
    from scaleseg.datasets import shared_data_dir

    try:
        root = shared_data_dir() / "pv_hc_multiexpert_deepflash_temp" / "labels"
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    sets = [s for s in mask_sets(root, suffix="_Parv")][:3]
    assert all(len(s.masks) == 5 for s in sets)
    res = run_gt(sets, tmp_path / "gt", chunks=(256, 256))
    assert res["dataset"]["estimated"] == 3
    assert 0.6 < res["dataset"]["mean_pairwise_expert_dice"] < 0.9
