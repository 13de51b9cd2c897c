"""The instance stage on prediction outputs: blocked vs whole image, tables, ROIs, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import scaleseg
from scaleseg import io
from scaleseg.cli import main
from scaleseg.config import InstancesConfig, PredictConfig
from scaleseg.instances import instance_table, read_instances, run_instances


def _bijective(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two label images are the same partition up to a permutation of labels."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[a > 0]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


@pytest.fixture(scope="module")
def predictions(tmp_path_factory, tiny_ensemble):
    root = tmp_path_factory.mktemp("inst")
    rng = np.random.default_rng(5)
    col = root / "col"
    for name, shape in (("p", (150, 133)), ("q", (96, 96))):
        io.write_image(
            col / f"{name}.zarr", (rng.random((1, *shape)) * 255).astype(np.uint8), n_levels=1
        )
    outs = {}
    for tag, block, chunks in (("whole", 4096, 256), ("blocked", 64, 32)):
        opts = PredictConfig(
            tile_shape=(64, 64), tta="none", batch_size=4, block_shape=(block, block),
            chunks=(chunks, chunks), probabilities_dtype="float32",
        )  # fmt: skip
        scaleseg.predict(col, tiny_ensemble, root / tag, config=opts, progress=False)
        outs[tag] = (root / tag, block)
    return outs


def _params(method, halo=16):
    return {"config": InstancesConfig(method=method, min_size=0, halo=halo), "n_classes": 2,
            "has_flows": method == "flows"}  # fmt: skip


def test_components_blocked_equals_whole(predictions):
    (whole, bw), (blocked, bb) = predictions["whole"], predictions["blocked"]
    rw = run_instances(whole, **_params("components"), block_shape=(bw, bw))
    rb = run_instances(blocked, **_params("components"), block_shape=(bb, bb))
    counts_b = rb["images"].set_index("image")["n_instances"]
    for name in ("p", "q"):
        a = io.open_labels(whole / "images" / f"{name}.zarr", "instances").values
        b = io.open_labels(blocked / "images" / f"{name}.zarr", "instances").values
        assert a.max() > 3
        assert _bijective(a, b)
    # the stitched table equals the table of the whole-image labels (same objects, same sums);
    # it is a folder of one Parquet part per image that pandas reads in one call
    assert (
        rb["table"] == blocked / "instances"
        and rb["n_instances"] == rb["images"]["n_instances"].sum()
    )
    assert sorted(p.name for p in rb["table"].iterdir()) == ["part-p.parquet", "part-q.parquet"]
    tb = pd.read_parquet(blocked / "instances")
    lab = io.open_labels(blocked / "images" / "p.zarr", "instances").values
    img = io.open_image(rb["images"].set_index("image").loc["p", "path"]).values
    unc = io.open_image(blocked / "images" / "p.zarr").values[0]
    sem = io.open_labels(blocked / "images" / "p.zarr", "semantic").values
    ref = instance_table(lab, image=img, uncertainty=unc, semantic=sem)
    got = tb[tb["image"] == "p"].drop(columns="image").reset_index(drop=True)
    pd.testing.assert_frame_equal(got[ref.columns], ref, check_dtype=False, atol=1e-6)
    counts = rw["images"].set_index("image")["n_instances"]
    assert counts["p"] == lab.max()
    for name in ("p", "q"):  # whole and blocked: the same objects, row for row up to the labels
        w = read_instances(whole, images=[name]).sort_values(["bbox_y0", "bbox_x0"])
        b = read_instances(blocked, images=[name]).sort_values(["bbox_y0", "bbox_x0"])
        cols = [c for c in w.columns if c != "label"]
        pd.testing.assert_frame_equal(
            w[cols].reset_index(drop=True), b[cols].reset_index(drop=True), check_dtype=False,
            atol=1e-6,
        )  # fmt: skip
    # other readers: dask.dataframe and pyarrow's dataset see the same rows; the small table
    # also has its CSV copy
    import dask.dataframe as dd
    import pyarrow.dataset as pads

    assert len(dd.read_parquet(str(blocked / "instances")).compute()) == len(tb)
    assert pads.dataset(blocked / "instances").count_rows() == len(tb)
    import duckdb  # an SQL engine over the folder, as users query large archives

    glob = str(blocked / "instances" / "*.parquet")
    sql = f"SELECT image, count(*) AS n, sum(area) AS a FROM read_parquet('{glob}') GROUP BY image"
    got_sql = duckdb.sql(sql).df().set_index("image").sort_index()
    want = tb.groupby("image").agg(n=("label", "size"), a=("area", "sum")).sort_index()
    assert (
        got_sql["n"].tolist() == want["n"].tolist() and got_sql["a"].tolist() == want["a"].tolist()
    )
    csv = pd.read_csv(blocked / "instances.csv")
    assert len(csv) == len(tb) and list(csv.columns) == list(tb.columns)
    # a reader asks for one image and two columns: only that part is read
    one = read_instances(blocked, images=["q"], columns=["label", "area"])
    assert list(one.columns) == ["label", "area"] and len(one) == counts_b["q"]
    assert not (blocked / "images" / "p.zarr" / "_instances_provisional").exists()
    assert not (blocked / "manifest_instances").exists()  # the stitch work files are removed


def test_watershed_blocked_close_to_whole(predictions):
    from scaleseg.metrics import match_instances

    (whole, bw), (blocked, bb) = predictions["whole"], predictions["blocked"]
    run_instances(whole, **_params("watershed"), block_shape=(bw, bw), overwrite=True)
    run_instances(blocked, **_params("watershed", halo=24), block_shape=(bb, bb), overwrite=True)
    a = io.open_labels(whole / "images" / "p.zarr", "instances").values
    b = io.open_labels(blocked / "images" / "p.zarr", "instances").values
    m = match_instances(b, a, threshold=0.9)
    assert m.tp / max(m.n_ref, 1) >= 0.9


def test_existing_instances_need_overwrite_and_cellpose_message(predictions, capsys):
    whole, _ = predictions["whole"]
    assert main(["instances", str(whole), "--method", "components"]) == 1
    assert "use --overwrite" in capsys.readouterr().err
    assert (
        main(
            [
                "instances",
                str(whole),
                "--method",
                "cellpose",
                "--overwrite",
                "--cellpose-model",
                "/nonexistent/model",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "no local cellpose model" in err and "Nothing is downloaded" in err


def test_rois_export_import_cli(predictions, tmp_path, capsys):
    whole, _ = predictions["whole"]
    assert main(["instances", str(whole), "--method", "components", "--overwrite"]) == 0
    assert main(["rois", "export", str(whole), "--overwrite"]) == 0
    zips = sorted((whole / "rois").glob("*.zip"))
    assert [z.stem for z in zips] == ["p", "q"]
    img = io.open_collection(pd.read_parquet(whole / "images.parquet")["path"].iloc[0])[0]
    target = tmp_path / "copy.zarr"
    io.write_image(target, io.open_image(img).values, n_levels=1)
    assert (
        main(
            [
                "rois",
                "import",
                str(whole / "rois" / f"{img.name}.zip"),
                "--image",
                str(target),
                "--label",
                "expert_me",
            ]
        )
        == 0
    )
    got = io.open_labels(target, "expert_me").values
    orig = io.open_labels(whole / "images" / f"{img.name}.zarr", "instances").values
    from scipy import ndimage as ndi

    filled = np.zeros_like(orig)  # ROIs carry outer outlines: holes come back filled
    for k in range(1, orig.max() + 1):
        filled[ndi.binary_fill_holes(orig == k)] = k
    assert got.max() == orig.max()
    assert np.mean((got > 0) == (filled > 0)) > 0.99


def test_flows_ensemble_end_to_end(tmp_path):
    """An ensemble with flow outputs: predict writes flows; the flows method builds masks."""
    from conftest import make_random_ensemble

    ens = make_random_ensemble(tmp_path / "ens", n_extra=2, n_models=1)
    col = tmp_path / "col"
    io.write_image(
        col / "f.zarr",
        (np.random.default_rng(0).random((1, 80, 80)) * 255).astype(np.uint8),
        n_levels=1,
    )
    opts = PredictConfig(
        tile_shape=(64, 64), tta="flips", batch_size=4, block_shape=(4096, 4096),
        chunks=(256, 256), probabilities_dtype="float32",
    )  # fmt: skip
    scaleseg.predict(col, ens, tmp_path / "out", config=opts, progress=False)
    flows = io.open_image(tmp_path / "out" / "images" / "f.zarr" / "flows").values
    assert flows.shape == (2, 80, 80) and np.isfinite(flows).all()
    res = run_instances(tmp_path / "out", **_params("flows"))
    lab = io.open_labels(tmp_path / "out" / "images" / "f.zarr", "instances").values
    sem = io.open_labels(tmp_path / "out" / "images" / "f.zarr", "semantic").values
    assert not np.any((lab > 0) & (sem == 0))  # instances only on predicted foreground
    assert res["images"]["n_instances"].iloc[0] == len(np.unique(lab)) - 1
    # in the same pass as prediction (flows from the unit's memory): the same labels and table
    fused = scaleseg.predict(col, ens, tmp_path / "fused", config=opts, progress=False,
                             instances=_params("flows")["config"])  # fmt: skip
    assert fused.instances.in_pass == 1
    got = io.open_labels(tmp_path / "fused" / "images" / "f.zarr", "instances").values
    np.testing.assert_array_equal(got, lab)
    pd.testing.assert_frame_equal(read_instances(tmp_path / "fused"),
                                  read_instances(tmp_path / "out"))  # fmt: skip


def test_instance_table_formats_are_a_recorded_request(predictions, capsys):
    """--formats parquet: no CSV whatever the size; a changed request is refused without
    --overwrite (naming it), and --formats parquet csv writes the CSV equal to the parts."""
    whole, _ = predictions["whole"]
    args = ["instances", str(whole), "--method", "components"]
    assert main([*args, "--overwrite", "--formats", "parquet"]) == 0
    assert (whole / "instances").is_dir() and not (whole / "instances.csv").exists()
    capsys.readouterr()
    assert main([*args, "--formats", "parquet"]) == 0  # the same request: reused
    assert main([*args, "--formats", "parquet", "csv"]) == 1
    err = capsys.readouterr().err
    assert "inputs.formats" in err and "--overwrite" in err
    assert not (whole / "instances.csv").exists()  # nothing changed by the refused run
    assert main([*args, "--formats", "csv", "--overwrite"]) == 0
    csv = pd.read_csv(whole / "instances.csv")
    parts = pd.read_parquet(whole / "instances")
    assert len(csv) == len(parts) > 0 and list(csv.columns) == list(parts.columns)
