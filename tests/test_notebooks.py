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
