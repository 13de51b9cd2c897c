"""`scaleseg qa` on a real (tiny) prediction: tables, flags, OOD scores, the report, read-only
inputs, coarse-level thumbnails, overwrite protection and bad inputs."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaleseg import io
from scaleseg.cli import main

NAMES = ("img0", "img1", "img2", "img3", "ood0")


def _opts():
    from scaleseg.config import PredictConfig

    return PredictConfig(tile_shape=(64, 64), tta="none", block_shape=(4096, 4096), chunks=(64, 64))


def fitted_ensemble(path: Path, *, n_models: int = 2) -> Path:
    """A tiny ensemble whose heads are fitted by least squares to blob masks (no training):
    random encoders/decoders, so members disagree, but foreground follows the blobs."""
    import torch
    from conftest import make_random_ensemble
    from skimage.data import binary_blobs

    from scaleseg.models import ModelSpec, build_model, save_weights

    path = make_random_ensemble(path, n_models=n_models)
    manifest = json.loads((path / "ensemble.json").read_text())
    spec = ModelSpec.from_dict(manifest["model"])
    for k, fold in enumerate(manifest["folds"]):
        net = build_model(spec, seed=k).eval()
        head = net.segmentation_head[0]
        feats = {}
        hook = head.register_forward_hook(lambda m, i, o, f=feats: f.__setitem__("f", i[0]))
        xs, ys = [], []
        for i in range(2):
            mask = binary_blobs(64, blob_size_fraction=0.2, volume_fraction=0.3, rng=100 + k + i)
            img = 0.02 + 0.08 * mask + 0.02 * np.random.default_rng(i).random((64, 64))
            with torch.no_grad():
                net(torch.tensor(((img - 0.05) / 0.03)[None, None], dtype=torch.float32))
            xs.append(feats["f"][0].reshape(feats["f"].shape[1], -1).T.numpy())
            ys.append(mask.ravel() * 6.0 - 3.0)
        hook.remove()
        a = np.concatenate(xs)
        coef = np.linalg.lstsq(np.c_[a, np.ones(len(a))], np.concatenate(ys), rcond=None)[0]
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()
            c = head.weight.shape[-1] // 2
            head.weight[1, :, c, c] = torch.tensor(coef[:-1], dtype=torch.float32)
            head.bias[1] = float(coef[-1])
        fold["sha256"] = save_weights(net, path / fold["path"])
    (path / "ensemble.json").write_text(json.dumps(manifest))
    return path


def make_prediction(root: Path, ensemble: Path, *, names=NAMES, shape=(96, 96)) -> dict:
    """A 2-level collection with ``truth`` labels, predicted with ``ensemble`` into root/pred.

    Names starting with "ood" are bright variants; the fourth image gets an undefined U in the
    table (as predict writes it for an image without predicted foreground).
    """
    from skimage.data import binary_blobs

    from scaleseg.inference import predict_collection, read_ensemble
    from scaleseg.tables import write_table

    col = root / "col"
    for i, name in enumerate(names):
        mask = binary_blobs(shape[0], blob_size_fraction=0.2, volume_fraction=0.3, rng=i)
        rng = np.random.default_rng(i)
        img = 0.02 + 0.08 * mask + 0.02 * rng.random(shape)
        if name.startswith("ood"):
            img = img * 8 + 0.3
        url = col / f"{name}.zarr"
        io.write_image(url, img[None].astype(np.float32), chunks=(64, 64), n_levels=2)
        io.write_labels(url, "truth", mask.astype(np.uint8), chunks=(64, 64))
    info = read_ensemble(ensemble)
    pred = root / "pred"
    res = predict_collection(io.open_collection(col), info, pred, config=_opts())
    table = res["images"]
    i3 = table.index[table["image"] == names[3]][0]
    table.loc[i3, ["U", "U_epistemic"]] = np.nan
    table.loc[i3, "U_reason"] = "no foreground predicted"
    write_table(table, pred / "images", ["parquet", "csv"])
    labels = root / "labels.csv"
    pd.DataFrame({"name": list(names), "split": ["test"] * (len(names) - 1) + ["ood"]}).to_csv(
        labels, index=False
    )
    return {"collection": col, "pred": pred, "labels": labels}


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def shared_prediction(tmp_path_factory) -> dict:
    """One prediction (+ evaluation against ``truth``) per test session, built on first use
    and shared by the QA, select and notebook tests (they only read it)."""
    root = tmp_path_factory.getbasetemp() / "qa_shared"
    done = root / "paths.json"
    if not done.is_file():
        root.mkdir(exist_ok=True)
        data = make_prediction(root, fitted_ensemble(root / "ensemble"))
        ev = root / "eval"
        pred_images, col = str(data["pred"] / "images"), str(data["collection"])
        args = ["evaluate", pred_images, col, "--ref-label", "truth", "--no-experts", "-o", str(ev)]
        assert main(args) == 0
        data["evaluation"] = ev
        done.write_text(json.dumps({k: str(v) for k, v in data.items()}))
    return {k: Path(v) for k, v in json.loads(done.read_text()).items()}


@pytest.fixture(scope="module")
def prediction(tmp_path_factory):
    return shared_prediction(tmp_path_factory)


def test_qa_cli_end_to_end(prediction, tmp_path, capsys):
    pred, ev = prediction["pred"], prediction["evaluation"]
    before = tree_digest(pred)
    out = tmp_path / "qa"
    args = ["qa", str(pred), "-o", str(out), "--evaluation", str(ev), "--tau", "1.0"]
    args += ["--ood-labels", str(prediction["labels"]), "--top", "3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"Report: {out / 'report.html'}" in printed
    assert tree_digest(pred) == before  # the prediction is only read

    table = pd.read_parquet(out / "images.parquet")
    assert len(table) == len(NAMES)
    assert table["qa_rank"].tolist() == list(range(1, len(NAMES) + 1))
    assert table["image"].iloc[0] == "img3"  # undefined U first, with its reason
    assert table["review_reason"].iloc[0] == "U undefined: no foreground predicted"
    info = json.loads((out / "qa.json").read_text())
    dice = pd.read_parquet(ev / "per_image.parquet").set_index("image")["dice"]
    test = table[table["qa_test"]]
    assert set(test["image"]) == set(NAMES)  # every scored image; Umin ignores undefined U
    below = test[(test["dice"] < 1.0) & test["U"].notna()]
    assert info["umin"] == pytest.approx(below["U"].min()) and info["umin_source"] == "estimated"
    np.testing.assert_allclose(table.set_index("image").loc[dice.index, "dice"], dice)
    defined = table[table["U"].notna()]
    assert (defined["review"] == (defined["U"] >= info["umin"])).all()
    stats = pytest.importorskip("scipy.stats")
    defined_test = test[test["U"].notna()]
    r = stats.pearsonr(defined_test["U"], defined_test["dice"]).statistic
    assert info["pearson_r"] == pytest.approx(r) and info["pearson_n"] == len(NAMES) - 1
    csv = pd.read_csv(out / "images.csv")
    assert list(csv["image"]) == list(table["image"])

    ood = pd.read_csv(out / "ood.csv")
    assert set(ood["score"]) == {"U", "U_epistemic", "review", "review_score"}
    # no distance rule in this ensemble: the review score is U / Umin (undefined U: inf)
    u = table["U"].to_numpy(float)
    np.testing.assert_allclose(
        table["review_score"], np.where(np.isnan(u), np.inf, u / info["umin"])
    )
    assert (ood["n_ood"] == 1).all() and (ood["n_in"] == len(NAMES) - 1).all()

    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert len(re.findall(r"src=\"data:image/png;base64,", html)) == 2 + 3  # figures, thumbs
    assert "Out-of-distribution detection" in html and "Pearson r" in html
    assert len(list((out / "report" / "thumbnails").glob("*.png"))) == 3
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "ok" and run["summary"]["review"] == int(table["review"].sum())

    # the same request runs again; another one is refused without --overwrite, replaced with it
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--tau", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "config.tau: 1.0 -> 0.5" in err and "--overwrite" in err
    assert main([*args, "--tau", "0.5", "--overwrite"]) == 0


def test_qa_table_distance_rule_from_the_ensemble_threshold():
    """The threshold predict recorded (``ood_threshold``) drives the distance rule; the flag is
    scored like the continuous scores (AUROC equals sklearn's on the 0/1 flag)."""
    from sklearn.metrics import roc_auc_score

    from scaleseg.qa import ood_summary, qa_table

    images = pd.DataFrame(
        {
            "image": ["a", "b", "c", "d", "far1", "far2", "near"],
            "status": ["ok"] * 7,
            "error": [""] * 7,
            "U": [0.1, 0.2, 0.3, 0.15, 0.05, 0.04, 0.6],
            "U_reason": [""] * 7,
            "ood_distance": [3.0, 4.0, 5.0, 6.5, 90.0, 40.0, 5.5],
            "ood_threshold": [6.0] * 7,
        }
    )
    scores = pd.Series({"a": 0.9, "b": 0.85, "c": 0.7, "d": 0.9})
    labels = pd.DataFrame(
        {"image": images["image"], "ood": [False] * 4 + [True] * 3,
         "ood_kind": [""] * 4 + ["far", "far", "near"]}
    )  # fmt: skip
    table, info = qa_table(images, scores=scores, tau=0.8, ood=labels)
    assert info["umin"] == 0.3 and info["distance_threshold"] == 6.0
    assert info["distance_threshold_source"] == "ensemble"
    t = table.set_index("image")
    assert t["review_rule"].to_dict() == {
        "a": "", "b": "", "c": "U", "d": "distance", "far1": "distance", "far2": "distance",
        "near": "U",
    }  # fmt: skip
    assert info["n_review"] == 5 and info["n_review_u"] == 2 and info["n_review_distance"] == 3
    ood = ood_summary(table, thresholds={"ood_distance": 6.0, "U": info["umin"]})
    row = ood[(ood["score"] == "review") & (ood["ood_kind"] == "all")].iloc[0]
    flag = t.loc[labels["image"], "review"].astype(bool).to_numpy()
    assert row["auroc"] == pytest.approx(roc_auc_score(labels["ood"], flag))
    assert row["flagged_ood"] == 1.0 and row["flagged_in"] == 2
    dist = ood[(ood["score"] == "ood_distance") & (ood["ood_kind"] == "far")].iloc[0]
    assert dist["flagged_ood"] == 1.0 and dist["flagged_in"] == 1 and dist["auroc"] == 1.0
    # a given threshold wins over the ensemble's
    _, info = qa_table(images, scores=scores, tau=0.8, distance_threshold=100.0)
    assert info["distance_threshold_source"] == "given" and info["n_review_distance"] == 0


def test_qa_without_evaluation_leaves_flags_unknown(prediction, tmp_path, capsys):
    out = tmp_path / "qa"
    assert main(["qa", str(prediction["pred"]), "-o", str(out), "--top", "0"]) == 0
    assert "Umin unknown: no evaluation given" in capsys.readouterr().out
    t = pd.read_parquet(out / "images.parquet").set_index("image")
    assert t.loc["img3", "review"] == True  # noqa: E712 (undefined U is always reviewed)
    others = t.drop("img3")
    assert others["review"].isna().all()
    assert others["review_reason"].str.startswith("Umin unknown").all()
    assert not (out / "ood.csv").read_text().strip().count("\n")  # header only
    out2 = tmp_path / "qa2"
    assert main(["qa", str(prediction["pred"]), "-o", str(out2), "--umin", "0", "--top", "0"]) == 0
    assert pd.read_parquet(out2 / "images.parquet")["review"].all()


def test_thumbnails_read_coarse_levels_only(prediction, tmp_path, monkeypatch):
    from scaleseg.qa import run_qa

    levels = []
    real_image, real_labels = io.open_image, io.open_labels

    def spy_image(ref, *, level=0):
        levels.append(level)
        return real_image(ref, level=level)

    def spy_labels(ref, name, *, level=0):
        levels.append(level)
        return real_labels(ref, name, level=level)

    monkeypatch.setattr(io, "open_image", spy_image)
    monkeypatch.setattr(io, "open_labels", spy_labels)
    res = run_qa(prediction["pred"], tmp_path / "qa", top_n=len(NAMES))
    assert len(levels) == 3 * len(NAMES) and min(levels) >= 1
    assert res["report"].is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--evaluation", "{tmp}/nothing"], "nothing: evaluation not found"),
        (["--ood-labels", "{tmp}/none.csv"], "none.csv: OOD label file not found"),
        (["--test-images", "{tmp}/x.csv"], "--test-images needs --evaluation"),
        (["--evaluation", "{ev}", "--metric", "map"], "no column 'map'"),
        (["-o", "{pred}/qa"], "the output lies inside the prediction"),
    ],
)
def test_qa_bad_inputs_name_the_problem(prediction, tmp_path, capsys, extra, message):
    fill = {"tmp": tmp_path, "ev": prediction["evaluation"], "pred": prediction["pred"]}
    extra = [e.format(**fill) for e in extra]
    args = ["qa", str(prediction["pred"]), "-o", str(tmp_path / "out"), *extra]
    assert main(args) == 1
    assert message in capsys.readouterr().err
    assert not (prediction["pred"] / "qa").exists()


def test_qa_refuses_a_folder_that_is_no_prediction(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["qa", str(tmp_path / "empty"), "-o", str(tmp_path / "qa")]) == 1
    assert "no images.parquet or images.csv" in capsys.readouterr().err


def test_qa_by_u_border_equals_the_whole_image_reference(prediction, tmp_path, capsys):
    """`--score U_border`: read back chunk by chunk with a halo, it equals scipy's erosion on the
    whole image; ranking, Umin, the U rule and Pearson r then use it."""
    from scipy import ndimage as ndi
    from scipy.stats import pearsonr

    pred, ev = prediction["pred"], prediction["evaluation"]
    out = tmp_path / "qa"
    args = ["qa", str(pred), "-o", str(out), "--evaluation", str(ev), "--tau", "1.0"]
    assert main([*args, "--score", "U_border", "--top", "1"]) == 0
    assert "U_border rule" in capsys.readouterr().out
    table = pd.read_parquet(out / "images.parquet").set_index("image")
    for name in NAMES:
        url = pred / "images" / f"{name}.zarr"
        lab = io.open_labels(url, "semantic")
        assert len(lab.data.chunks[0]) > 1  # the halo matters: several chunks per image
        fg = lab.values != 0
        border = fg & ~ndi.binary_erosion(fg, structure=ndi.generate_binary_structure(2, 1),
                                          iterations=2, border_value=0)  # fmt: skip
        u = io.open_image(url).values[0]
        assert table.loc[name, "U_border"] == pytest.approx(
            u[border].astype(np.float64).mean(), rel=1e-12
        )
        assert table.loc[name, "U_border"] != pytest.approx(table.loc[name, "U"], rel=1e-3)
    info = json.loads((out / "qa.json").read_text())
    assert info["score"] == "U_border"
    t = table.reset_index()
    assert t.sort_values("U_border", ascending=False)["image"].tolist() == t["image"].tolist()
    below = t[t["qa_test"] & (t["dice"] < 1.0)]
    assert info["umin"] == pytest.approx(below["U_border"].min())
    assert (t["review"] == (t["U_border"] >= info["umin"])).all()
    assert set(t.loc[t["review"], "review_rule"]) == {"U_border"}
    test = t[t["qa_test"]]
    assert info["pearson_r"] == pytest.approx(pearsonr(test["U_border"], test["dice"]).statistic)
    # a score qa does not know is refused before anything is written
    with pytest.raises(SystemExit):
        main([*args, "--score", "U_max", "--overwrite"])
    assert "invalid choice" in capsys.readouterr().err
    assert info == json.loads((out / "qa.json").read_text())


def test_qa_by_u_novel_uses_predicts_column_or_says_how_to_get_it(prediction, tmp_path, capsys):
    """`--score U_novel` ranks, flags and correlates by the column predict recorded; a
    prediction without it (an ensemble without per-cell statistics) is refused before
    anything is written, saying how to complete the ensemble."""
    import shutil

    from scipy.stats import pearsonr

    from scaleseg.tables import write_table

    pred, ev = prediction["pred"], prediction["evaluation"]
    args = ["--evaluation", str(ev), "--tau", "1.0", "--score", "U_novel"]
    assert main(["qa", str(pred), "-o", str(tmp_path / "refused"), *args]) == 1
    err = capsys.readouterr().err
    assert str(pred) in err and "has no U_novel" in err and "Re-run `scaleseg train`" in err
    assert not (tmp_path / "refused").exists()
    copy = tmp_path / "pred"
    shutil.copytree(pred, copy)
    table = pd.read_parquet(copy / "images.parquet")
    assert table["U_novel"].isna().all()  # predict wrote the column (NaN: no statistics)
    # U_novel >= U, raised most where U is lowest, so the two rankings differ
    table["U_novel"] = table["U"] + 0.5 * table["U"].rank(ascending=False) / len(table)
    assert (table["U_novel"].dropna() >= table["U"].dropna()).all()
    order = table.dropna(subset=["U"]).sort_values
    assert order("U_novel")["image"].tolist() != order("U")["image"].tolist()
    write_table(table, copy / "images", ["parquet", "csv"])
    assert main(["qa", str(copy), "-o", str(tmp_path / "qa"), *args]) == 0
    assert "U_novel rule" in capsys.readouterr().out
    info = json.loads((tmp_path / "qa" / "qa.json").read_text())
    t = pd.read_parquet(tmp_path / "qa" / "images.parquet")
    assert info["score"] == "U_novel"
    ranked = t[t["U_novel"].notna()].sort_values("U_novel", ascending=False)["image"].tolist()
    assert t[t["U_novel"].notna()]["image"].tolist() == ranked
    below = t[t["qa_test"] & (t["dice"] < 1.0)]
    assert info["umin"] == pytest.approx(below["U_novel"].min())
    test = t[t["qa_test"] & t["U_novel"].notna()]
    assert info["pearson_r"] == pytest.approx(pearsonr(test["U_novel"], test["dice"]).statistic)


def test_a_moved_prediction_reads_its_own_maps(prediction, tmp_path, capsys):
    """The images table records where predict wrote each image; a copied folder is read from
    where it is now (here: a broken copy fails, naming the file, while the original is fine)."""
    import shutil

    copy = tmp_path / "moved"
    shutil.copytree(prediction["pred"], copy)
    assert main(["qa", str(copy), "-o", str(tmp_path / "qa"), "--score", "U_border"]) == 0
    capsys.readouterr()
    moved = pd.read_parquet(tmp_path / "qa" / "images.parquet")
    assert all(str(o).startswith(str(copy)) for o in moved["output"])
    shutil.rmtree(copy / "images" / "img1.zarr" / "labels" / "semantic")
    assert main(["qa", str(copy), "-o", str(tmp_path / "qa2"), "--score", "U_border"]) == 1
    err = capsys.readouterr().err
    assert "img1.zarr/labels/semantic" in err and "no such file" in err
