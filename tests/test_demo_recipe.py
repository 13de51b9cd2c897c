"""Golden end-to-end test of the demo recipe (``scaleseg/datasets/demo_config.json``): on a
smaller synthetic archive made like the demo's, the recipe trained on the STAPLE GT segments
held-out images within a Dice bound, and the far-OOD images are caught by the distance rule.

The whole demo (``scripts/demo``, about 4 minutes) is run by the slow test below and must meet
every target its summary prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaleseg import io
from scaleseg.datasets import demo_config, demo_summary, write_demo_archive
from scaleseg.gt._outputs import run_gt
from scaleseg.inference import predict_collection, read_ensemble
from scaleseg.models import ModelSpec
from scaleseg.training import items_from_gt, train_ensemble

ROOT = Path(__file__).resolve().parents[1]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * (a & b).sum() / max(1, a.sum() + b.sum())


def test_demo_recipe_golden(tmp_path, client):
    cfg = demo_config()
    arc = write_demo_archive(
        tmp_path / "demo", n_images=12, n_ood=4, snr=(2.0, 48.0), seed=1, client=client
    )
    table = arc["table"]
    refs = {r.name: r for r in io.open_collection(arc["collection"])}
    run_gt(list(refs.values()), tmp_path / "gt", instance_scores=False, client=client)
    train = [refs[n] for n in table.loc[table["split"] == "train", "name"]]
    spec = {
        "arch": cfg.train.arch,
        "encoder": cfg.train.encoder,
        "in_channels": 1,
        "n_classes": 2,
        "n_extra": 0,
        "encoder_weights": cfg.train.encoder_weights,
    }
    manifest = train_ensemble(
        items_from_gt(train, tmp_path / "gt"),
        tmp_path / "ens",
        model=ModelSpec.from_dict(spec),
        config=cfg.train,
        client=client,
    ).model_dump(mode="json")
    assert min(f["valid_dice"] for f in manifest["folds"]) > 0.75
    info = read_ensemble(tmp_path / "ens")
    held_out = [refs[n] for n in table.loc[table["split"] != "train", "name"]]
    opts = cfg.predict.model_copy(update={"chunks": (256, 256), "batch_size": 4})
    res = predict_collection(held_out, info, tmp_path / "pred", config=opts, client=client)
    images = res["images"].set_index("image")
    assert (images["status"] == "ok").all()
    dice = {}
    for name in table.loc[table["split"] == "test", "name"]:
        pred = io.open_labels(tmp_path / "pred" / "images" / f"{name}.zarr", "semantic").values
        gt = io.open_labels(tmp_path / "gt" / "images" / f"{name}.zarr", "est_gt").values
        dice[name] = _dice(pred, gt)
    assert np.mean(list(dice.values())) >= 0.82, dice
    assert min(dice.values()) >= 0.65, dice
    # far OOD (another modality): confidently wrong, caught by the calibrated distance rule
    thr = info.ood_threshold
    assert thr is not None and np.isfinite(thr)
    stain = [n for n in images.index if n.startswith("ood_stain")]
    assert stain and (images.loc[stain, "ood_distance"] >= thr).all()
    assert (images.loc[list(dice), "ood_distance"] < thr).all()


@pytest.mark.slow
def test_the_demo_meets_every_target(tmp_path):
    """``scripts/demo`` end to end (about 4-5 minutes on 2 cores): every target of its
    summary is met, and the summary is the same when recomputed."""
    env = {**os.environ, "SCALESEG_VENV": str(Path(sys.executable).parents[1])}
    out = tmp_path / "demo-output"
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo"), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = demo_summary(out)
    assert summary.all_met, summary.text()
    assert summary.text() in proc.stdout
