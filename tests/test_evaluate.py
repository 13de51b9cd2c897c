"""scaleseg.evaluation and `scaleseg evaluate`: tiny collections and mask folders in tmp_path."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest

from scaleseg import io, metrics
from scaleseg.evaluation import evaluate, resolve_source, score_maps, write_evaluation

SHAPE = (24, 30)


def _ref_map(seed: int) -> np.ndarray:
    """Two classes of rectangles at seed-dependent places."""
    rng = np.random.default_rng(seed)
    m = np.zeros(SHAPE, np.uint8)
    for cls in (1, 1, 2):
        y, x = rng.integers(1, 14), rng.integers(1, 20)
        m[y : y + rng.integers(4, 9), x : x + rng.integers(4, 9)] = cls
    return m


def _maps(seed: int) -> dict[str, np.ndarray]:
    ref = _ref_map(seed)
    return {
        "est_gt": ref,
        "semantic": np.roll(ref, 1, axis=1),  # the prediction: shifted by one pixel
        "expert_a": np.roll(ref, (1, 1), axis=(0, 1)),
        "expert_b": np.roll(ref, -2, axis=0),
    }


NAMES = ("img0", "img1", "img2")
DATA = {name: _maps(i) for i, name in enumerate(NAMES)}


def _collection(root, data: dict[str, dict[str, np.ndarray]]):
    root.mkdir(parents=True, exist_ok=True)
    for name, labels in data.items():
        shape = next(iter(labels.values())).shape if labels else SHAPE
        url = io.write_image(
            root / f"{name}.zarr", np.zeros((1, *shape), np.uint8), chunks=(16, 16), n_levels=1
        )
        for label, arr in labels.items():
            io.write_labels(url, label, arr, chunks=(16, 16))
    return root


def _folder(root, data: dict[str, np.ndarray], suffix: str = ""):
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in data.items():
        iio.imwrite(root / f"{name}{suffix}.png", arr)
    return root


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    return _collection(tmp_path_factory.mktemp("ev") / "coll", DATA)


def test_values_equal_metric_kernels(coll):
    res = evaluate(coll, coll, kind="both", min_size=3)
    df = res["per_image"].set_index("image")
    assert list(df.index) == list(NAMES) and set(df["reference"]) == {"est_gt"}
    assert df["missing"].isna().all() and res["warnings"] == []
    for name in NAMES:
        p, r = DATA[name]["semantic"], DATA[name]["est_gt"]
        row = df.loc[name]
        assert row["dice"] == pytest.approx(metrics.dice(p, r, n_classes=2), abs=1e-12)
        assert row["iou"] == pytest.approx(metrics.iou(p, r, n_classes=2), abs=1e-12)
        pc = metrics.dice_per_class(p, r, n_classes=2)
        assert [row["dice_class_1"], row["dice_class_2"]] == pytest.approx(pc, abs=1e-12)
        s = metrics.instance_scores(
            metrics.label_instances(p), metrics.label_instances(r), min_size=3
        )
        for key in ("map", "ap50", "precision", "recall", "f1", "error_rate", "pq", "aji"):
            assert row[key] == pytest.approx(s[key], abs=1e-12), key
        assert [row[f"ap_{t:.2f}"] for t in metrics.MAP_THRESHOLDS] == pytest.approx(s["ap"])
        assert (row["height"], row["width"]) == SHAPE
    summ = res["summary"].set_index("metric")
    assert summ.loc["dice", "mean"] == pytest.approx(df["dice"].mean())
    assert summ.loc["dice", "median"] == pytest.approx(df["dice"].median())
    assert summ.loc["dice", "std"] == pytest.approx(df["dice"].std())
    assert summ.loc["map", "n"] == 3


def test_folder_sources_equal_collection(coll, tmp_path):
    pred = _folder(tmp_path / "pred", {n: DATA[n]["semantic"] for n in NAMES}, suffix="_pred")
    iio.imwrite(pred / "img0_uncertainty.png", np.zeros(SHAPE, np.uint8))  # ignored: no suffix
    ref = _folder(tmp_path / "ref", {n: DATA[n]["est_gt"] for n in NAMES})
    a = evaluate(resolve_source(pred, label=None, suffix="_pred"), ref, kind="both")
    b = evaluate(coll, coll, kind="both", experts=False)
    cols = [c for c in b["per_image"].columns if c != "reference"]
    pd.testing.assert_frame_equal(a["per_image"][cols], b["per_image"][cols])
    assert set(a["per_image"]["reference"]) == {"masks"}


def test_per_expert_rows(coll):
    res = evaluate(coll, resolve_source(coll, label="experts"))
    df = res["per_image"]
    assert len(df) == 6 and set(df["reference"]) == {"expert_a", "expert_b"}
    for _, row in df.iterrows():
        p, e = DATA[row["image"]]["semantic"], DATA[row["image"]][row["reference"]]
        assert row["dice"] == pytest.approx(metrics.dice(p, e, n_classes=2))
        # the range holds the other expert only
        other = "expert_b" if row["reference"] == "expert_a" else "expert_a"
        d = metrics.dice(DATA[row["image"]][other], e, n_classes=2)
        assert row["n_experts"] == 1 and row["expert_min"] == row["expert_max"] == pytest.approx(d)
    assert set(res["summary"]["reference"]) == {"expert_a", "expert_b"}


def test_expert_range_better_and_worse(tmp_path):
    """Reference in a GT-like collection, experts from another one (the --experts case)."""
    gt = _collection(tmp_path / "gt", {n: {"est_gt": DATA[n]["est_gt"]} for n in NAMES})
    experts = _collection(
        tmp_path / "experts",
        {n: {k: DATA[n][k] for k in ("expert_a", "expert_b")} for n in NAMES},
    )
    perfect = _folder(tmp_path / "perfect", {n: DATA[n]["est_gt"] for n in NAMES})
    res = evaluate(perfect, gt, experts=experts, kind="semantic")
    df = res["per_image"]
    assert (df["relative_performance"] == "above the best expert").all()
    assert (df["dice"] == 1.0).all() and (df["expert_metric"] == "dice").all()
    for _, row in df.iterrows():
        maps = DATA[row["image"]]
        d = [metrics.dice(maps[k], maps["est_gt"], n_classes=2) for k in ("expert_a", "expert_b")]
        assert row["expert_min"] == pytest.approx(min(d)) and row["n_experts"] == 2
    assert len(res["experts"]) == 6 and set(res["experts"]["expert"]) == {"expert_a", "expert_b"}
    # the same experts as mask folders (<folder>/<expert>/<image>.png, as `convert` reads them)
    for k in ("a", "b"):
        _folder(tmp_path / "masks" / k, {n: DATA[n][f"expert_{k}"] for n in NAMES})
    folder_experts = resolve_source(tmp_path / "masks", label="experts")
    same = evaluate(perfect, gt, experts=folder_experts, kind="semantic")
    pd.testing.assert_frame_equal(same["per_image"], df)
    empty = _folder(tmp_path / "empty", {n: np.zeros(SHAPE, np.uint8) for n in NAMES})
    res = evaluate(empty, gt, experts=experts, kind="instance")
    df = res["per_image"]
    assert (df["expert_metric"] == "map").all() and (df["map"] == 0).all()
    assert (df["relative_performance"] == "below the worst expert").all()
    out = write_evaluation(res, tmp_path / "out", ["csv"])
    assert {"per_image", "summary", "experts", "scores", "expert_range"} <= set(out)
    # without experts anywhere: no range columns, no expert plot
    res = evaluate(perfect, gt)
    assert "expert_min" not in res["per_image"] and res["experts"].empty


def test_missing_images_are_reported(tmp_path):
    pred = _collection(
        tmp_path / "pred",
        {"img0": {"semantic": DATA["img0"]["semantic"]}, "img1": {}, "only_pred": DATA["img2"]},
    )
    ref = _collection(
        tmp_path / "ref",
        {
            "img0": {"est_gt": DATA["img0"]["est_gt"]},
            "img1": {"est_gt": DATA["img1"]["est_gt"]},
            "only_pred": {"other": DATA["img2"]["est_gt"]},
            "only_ref": {"est_gt": DATA["img2"]["est_gt"]},
        },
    )
    res = evaluate(pred, ref)
    df = res["per_image"].set_index("image")
    assert list(df.index) == ["img0", "img1", "only_pred", "only_ref"]
    assert pd.isna(df.loc["img0", "missing"]) and np.isfinite(df.loc["img0", "dice"])
    assert "no label image 'semantic'" in df.loc["img1", "missing"]
    assert df.loc["only_pred", "missing"].startswith("reference: no label image 'est_gt'")
    assert df.loc["only_ref", "missing"].startswith("prediction: not in")
    assert df.loc[["img1", "only_pred", "only_ref"], "dice"].isna().all()
    assert len(res["warnings"]) == 3 and any("only_ref" in w for w in res["warnings"])
    assert res["summary"].set_index("metric").loc["dice", "n"] == 1


def test_shape_mismatch_names_image_and_shapes(coll, tmp_path):
    data = {n: DATA[n]["semantic"] for n in NAMES} | {"img1": np.zeros((20, 30), np.uint8)}
    pred = _folder(tmp_path / "pred", data)
    with pytest.raises(ValueError, match=r"img1.*\(24, 30\).*\(20, 30\)"):
        evaluate(pred, coll)


def test_instances_given_are_not_relabelled():
    ref = np.zeros((6, 8), np.uint32)
    ref[1:5, 1:3], ref[1:5, 3:5] = 1, 2  # two touching objects: one component as semantic
    s = score_maps(ref, ref, kind="both", pred_instances=True, ref_instances=True)
    assert s["n_pred"] == 2 and s["map"] == 1.0 and s["dice_pc"].tolist() == [1.0]
    s = score_maps((ref > 0).astype(np.uint8), ref, kind="instance", ref_instances=True)
    assert s["n_pred"] == 1 and s["n_ref"] == 2


def test_client_matches_in_process(coll, client):
    a = evaluate(coll, coll, kind="both", client=client)
    b = evaluate(coll, coll, kind="both")
    pd.testing.assert_frame_equal(a["per_image"], b["per_image"])
    pd.testing.assert_frame_equal(a["experts"], b["experts"])


@pytest.fixture
def cli_main(monkeypatch):
    import scaleseg.cli

    if "_evaluate" not in scaleseg.cli._COMMANDS:
        monkeypatch.setattr(scaleseg.cli, "_COMMANDS", (*scaleseg.cli._COMMANDS, "_evaluate"))
    return scaleseg.cli.main


def test_cli_writes_outputs_and_protects_them(coll, tmp_path, cli_main, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", str(coll), str(coll), "-o", str(out), "--kind", "both"]
    assert cli_main([*argv, "--formats", "parquet", "csv"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"per_image.parquet", "per_image.csv", "summary.csv", "experts.csv"} <= names
    assert {"scores.png", "expert_range.png", "run.json"} <= names
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "ok" and run["summary"]["images"] == 3
    assert run["summary"]["headline"] == "dice" and "pred" in run["inputs"]
    df = pd.read_parquet(out / "per_image.parquet")
    direct = evaluate(coll, coll, kind="both")["per_image"]
    assert df["dice"].tolist() == pytest.approx(direct["dice"].tolist())
    assert "mean dice" in capsys.readouterr().out
    before = (out / "per_image.csv").read_text()
    assert cli_main([*argv, "--formats", "parquet", "csv"]) == 0  # the same request: run again
    assert (out / "per_image.csv").read_text() == before
    assert json.loads((out / "run.json").read_text())["resumed"] is True
    record = (out / "run.json").read_text()
    assert cli_main([*argv, "--no-experts"]) == 1  # another request, no --overwrite: refused
    err = capsys.readouterr().err
    assert "config.experts: True -> False" in err and "--overwrite" in err
    assert (out / "run.json").read_text() == record  # nothing touched
    assert cli_main([*argv, "--overwrite", "--no-experts", "--formats", "csv"]) == 0
    names = {p.name for p in out.iterdir()}
    assert "expert_range.png" not in names and "per_image.parquet" not in names
    # nothing to compare (a wrong label name) is a one-line error
    assert cli_main([*argv, "--overwrite", "--ref-label", "nope"]) == 1
    assert "no label image 'nope'" in capsys.readouterr().err
