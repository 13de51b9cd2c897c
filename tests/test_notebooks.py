"""Notebooks run end to end (nbclient) against small outputs made here."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _run(path: Path, cwd: Path, env: dict, monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()


def test_explore_archive(tmp_path, monkeypatch):
    from scaleseg.datasets import write_demo_archive
    from scaleseg.gt._outputs import run_gt
    from scaleseg.io import open_collection

    demo = write_demo_archive(tmp_path / "demo", n_images=2, n_ood=0, shape=(48, 48))
    run_gt(open_collection(demo["collection"]), tmp_path / "gt")
    env = {
        "SCALESEG_ARCHIVE": demo["collection"],
        "SCALESEG_GT": str(tmp_path / "gt"),
        "MPLBACKEND": "Agg",
    }
    _run(NOTEBOOKS / "explore_archive.ipynb", tmp_path, env, monkeypatch)


def test_qa_triage(tmp_path, tmp_path_factory, monkeypatch):
    from test_qa import shared_prediction, tree_digest

    from scaleseg.qa import read_reviews, run_qa

    data = shared_prediction(tmp_path_factory)
    qa_dir = tmp_path / "qa"
    run_qa(data["pred"], qa_dir, evaluation=data["evaluation"], tau=1.0, top_n=2)
    before = tree_digest(data["pred"]), tree_digest(qa_dir)
    env = {
        "SCALESEG_PREDICTION": str(data["pred"]),
        "SCALESEG_QA": str(qa_dir),
        "SCALESEG_REVIEW": str(tmp_path / "review.csv"),
        "SCALESEG_EXPORT": str(tmp_path / "annotate"),
        "SCALESEG_IMAGES": "img2,img0",
        "MPLBACKEND": "Agg",
    }
    _run(NOTEBOOKS / "qa_triage.ipynb", tmp_path, env, monkeypatch)
    assert (tree_digest(data["pred"]), tree_digest(qa_dir)) == before  # outputs untouched
    reviews = read_reviews(tmp_path / "review.csv").set_index("image")["status"].to_dict()
    assert reviews == {"img2": "reviewed", "img0": "annotate"}
    assert (tmp_path / "annotate" / "masks" / "me" / "img0.tif").is_file()
    assert not (tmp_path / "annotate" / "images" / "img2.tif").exists()


def test_quickstart_tiny(tmp_path, monkeypatch):
    import pandas as pd

    env = {
        "SCALESEG_QUICKSTART_TINY": "1",
        "SCALESEG_QUICKSTART_OUT": str(tmp_path / "out"),
        "MPLBACKEND": "Agg",
    }
    _run(NOTEBOOKS / "quickstart.ipynb", tmp_path, env, monkeypatch)
    qa = tmp_path / "out" / "qa"
    assert (qa / "report.html").is_file()
    table = pd.read_parquet(qa / "images.parquet")
    # only the held-out images are predicted: 1 test image + 2 OOD (the 3 train images are not)
    assert len(table) == 3 and table["qa_test"].sum() == 1
    ood = table.set_index("image")["ood"]  # demo.csv: OOD variants, test split
    assert ood.filter(like="ood_").all() and not ood["syn_0003"] and ood.notna().all()
    assert "review_rule" in table
    assert list(pd.read_csv(qa / "ood.csv").columns)[:3] == ["score", "ood_kind", "n_ood"]
