"""`scaleseg select`: the most uncertain unannotated images, exported so that corrected masks
come back through `scaleseg convert --masks` as expert labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import binary_fill_holes
from test_qa import shared_prediction, tree_digest

from scaleseg import io
from scaleseg.cli import main
from scaleseg.qa import annotation_candidates


@pytest.fixture(scope="module")
def prediction(tmp_path_factory):
    """The shared QA prediction, plus an expert annotation of img1 in its input archive."""
    data = shared_prediction(tmp_path_factory)
    url = data["collection"] / "img1.zarr"
    if "expert_anna" not in io.list_labels(url):
        io.write_labels(url, "expert_anna", np.ones((96, 96), np.uint8))
    return data


def test_candidates_order_and_skips():
    t = pd.DataFrame(
        {
            "image": ["p", "q", "r", "s", "t"],
            "status": ["ok", "ok", "ok", "failed", "ok"],
            "U": [0.2, np.nan, 0.5, 0.9, 0.4],
            "U_reason": ["", "no foreground predicted", "", "", ""],
        }
    )
    sel, skipped = annotation_candidates(
        t, n=2, annotated=["r"], has_annotation=lambda row: row["image"] == "q"
    )
    assert sel["image"].tolist() == ["t", "p"] and sel["selection_rank"].tolist() == [1, 2]
    assert skipped.set_index("image")["reason"].to_dict() == {
        "q": "has expert annotations in the input",
        "r": "listed as annotated",
    }
    sel, _ = annotation_candidates(t, n=10)
    assert sel["image"].tolist() == ["q", "r", "t", "p"]  # undefined first; failed never
    assert sel["reason"].iloc[0] == "U undefined (no foreground predicted)"
    with pytest.raises(ValueError, match="no column 'ood_distance'"):
        annotation_candidates(t, n=1, by="ood_distance")
    with pytest.raises(ValueError, match="all NaN"):
        annotation_candidates(t.assign(ood_distance=np.nan), n=1, by="ood_distance")


def test_select_exports_and_convert_round_trip(prediction, tmp_path, capsys):
    pred, col = prediction["pred"], prediction["collection"]
    before = tree_digest(pred)
    annotated = tmp_path / "done.txt"
    annotated.write_text("img0\n")
    out = tmp_path / "annotate"
    args = ["select", str(pred), "-o", str(out), "--n", "5", "--annotated", str(annotated)]
    assert main([*args, "--expert", "me"]) == 0
    assert "only 3 unannotated image(s) left" in capsys.readouterr().out
    assert tree_digest(pred) == before
    sel = pd.read_csv(out / "selected.csv")
    assert set(sel["image"]) == {"img2", "img3", "ood0"}  # img0 listed, img1 annotated
    table = pd.read_parquet(pred / "images.parquet").set_index("image")
    assert sel["image"].iloc[0] == "img3"  # undefined U first
    assert (out / "README.md").read_text().count("scaleseg convert") == 1

    # corrected masks re-enter as expert labels through `scaleseg convert --masks`
    new = tmp_path / "corrected"
    assert main(["convert", str(out / "images"), str(new), "--masks", str(out / "masks")]) == 0
    for name in ("img2", "img3"):
        url = new / f"{name}.zarr"
        assert io.list_labels(url) == ["expert_me"]
        semantic = io.open_labels(table.loc[name, "output"], "semantic").values
        np.testing.assert_array_equal(io.open_labels(url, "expert_me").values, semantic)
        original = io.to_cyx(io.open_image(col / f"{name}.zarr")).values
        np.testing.assert_array_equal(io.to_cyx(io.open_image(url)).values, original)
        # the ROI set rasterises back onto the image (outer outlines: holes are filled)
        assert (
            main(
                [
                    "rois",
                    "import",
                    str(out / "rois" / f"{name}.zip"),
                    "--image",
                    str(url),
                    "--label",
                    "expert_rois",
                    "--semantic",
                ]
            )
            == 0
        )
        rois = io.open_labels(url, "expert_rois").values
        assert rois.sum() > 0.9 * (semantic > 0).sum()
        assert not (rois.astype(bool) & ~binary_fill_holes(semantic > 0)).any()

    assert main([*args, "--n", "1"]) == 1  # an existing output made with other settings
    assert "config.n: 5 -> 1" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--n", "1", "--no-rois"]) == 0
    assert len(pd.read_csv(out / "selected.csv")) == 1 and not (out / "rois").exists()


def test_select_bad_inputs(prediction, tmp_path, capsys):
    pred = prediction["pred"]
    assert main(["select", str(pred), "-o", str(tmp_path / "o"), "--n", "0"]) == 1
    assert "--n must be at least 1" in capsys.readouterr().err
    rc = main(["select", str(pred), "-o", str(tmp_path / "o"), "--n", "1", "--by", "ood_distance"])
    err = capsys.readouterr().err  # a random test ensemble has no feature statistics
    assert rc == 1 and "'ood_distance' is undefined for every image" in err
    assert "re-run `scaleseg train`" in err
    rc = main(["select", str(pred), "-o", str(tmp_path / "o"), "--n", "1", "--by", "U_novel"])
    err = capsys.readouterr().err
    assert rc == 1 and "'U_novel' is undefined for every image" in err
    assert "no per-cell part (re-run `scaleseg train`" in err
    everything = tmp_path / "all.txt"
    everything.write_text("img0\nimg2\nimg3\nood0\n")
    rc = main(
        ["select", str(pred), "-o", str(tmp_path / "o"), "--n", "1", "--annotated", str(everything)]
    )
    assert rc == 1 and "no unannotated image left" in capsys.readouterr().err
