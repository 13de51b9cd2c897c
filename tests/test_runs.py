"""Runs as objects, tried as a hostile user would: every refusal exits non-zero with a message
naming the problem and leaves every existing file byte-identical; the same request resumes;
post-steps added to a finished run actually run. The same from the CLI and from Python."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_qa import tree_digest

import scaleseg
from scaleseg.cli import main
from scaleseg.runs import LOCK_FILE, OutputError, RunLock, RunLockedError

TRAIN_FLAGS = [
    "--label", "truth", "--encoder", "tu-resnet10t", "--encoder-weights", "none", "--folds", "2",
    "--epochs", "1", "--frozen-epochs", "0", "--tile", "64", "64", "--tiles-per-epoch", "4",
]  # fmt: skip


def run_cli(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A labelled archive, a finished ensemble and a finished prediction (module-wide: the
    refusal tests below only read them, and check that they stay byte-identical)."""
    root = tmp_path_factory.mktemp("runs")
    archive = scaleseg.demo_data(root / "demo", n_images=4, n_ood=0, shape=(96, 96), seed=3,
                                 progress=False)  # fmt: skip
    images = Path(archive.collection)
    ens = root / "ens"
    assert main(["train", str(images), str(ens), *TRAIN_FLAGS]) == 0
    pred = root / "pred"
    assert main(["predict", "--ensemble", str(ens), "--input", str(images), "--output", str(pred),
                 "--tta", "none", "--chunks", "64", "64"]) == 0  # fmt: skip
    return {"root": root, "images": images, "ens": ens, "pred": pred}


def _train(t, out, *extra):
    return ["train", t["images"], out, *TRAIN_FLAGS, *extra]


def _predict(t, out, *extra):
    return ["predict", "--ensemble", t["ens"], "--input", t["images"], "--output", out,
            "--tta", "none", "--chunks", "64", "64", *extra]  # fmt: skip


def _untouched(t) -> dict[str, str]:
    return {k: tree_digest(t[k]) for k in ("images", "ens", "pred")}


# -- outputs that would overwrite or nest inside an input -----------------------------------------
@pytest.mark.parametrize(
    "where, relation",
    [
        (lambda t: t["images"], "is the input"),
        (lambda t: t["images"] / "nested", "lies inside the input"),
        (lambda t: t["images"].parent, "contains the input"),
        (lambda t: t["ens"], "is the ensemble"),
        (lambda t: t["ens"] / "pred", "lies inside the ensemble"),
    ],
)
@pytest.mark.parametrize("overwrite", [False, True])
def test_predict_output_overlapping_an_input_is_refused(
    trained, capsys, where, relation, overwrite
):
    before = _untouched(trained)
    out = where(trained)
    rc, _, err = run_cli(_predict(trained, out, *(["--overwrite"] if overwrite else [])), capsys)
    assert rc == 1 and relation in err and str(out) in err, err
    assert _untouched(trained) == before
    with pytest.raises(OutputError, match=relation):  # the same mistake from Python
        scaleseg.predict(
            trained["images"], trained["ens"], out, overwrite=overwrite, progress=False
        )
    assert _untouched(trained) == before


def test_train_output_is_its_input_or_gt(trained, capsys):
    before = _untouched(trained)
    rc, _, err = run_cli(_train(trained, trained["images"], "--overwrite"), capsys)
    assert rc == 1 and "is the input" in err
    rc, _, err = run_cli(["gt", trained["images"], trained["images"] / "gt", "--overwrite"], capsys)
    assert rc == 1 and "lies inside the collection" in err
    assert _untouched(trained) == before


# -- the same request resumes; another is refused, listing what differs ---------------------------
@pytest.mark.parametrize(
    "extra, difference",
    [
        (["--flows"], "model.n_extra: 0 -> 2"),
        (["--label", "expert_1"], "labels.label: 'truth' -> 'expert_1'"),
        (["--tile", "32", "32"], "config.tile_shape: [64, 64] -> [32, 32]"),
        (["--models", "1"], "config.n_models: None -> 1"),
        (["--epochs", "2"], "config.epochs: 1 -> 2"),
    ],
)
def test_train_rerun_with_another_request_is_refused(trained, capsys, extra, difference):
    before = _untouched(trained)
    rc, _, err = run_cli(_train(trained, trained["ens"], *extra), capsys)
    assert rc == 1 and difference in err and "--overwrite" in err, err
    assert _untouched(trained) == before


def test_train_rerun_with_another_image_selection_is_refused(trained, capsys, tmp_path):
    names = sorted(p.stem for p in trained["images"].glob("*.zarr"))
    listed = tmp_path / "some.txt"
    listed.write_text("\n".join(names[:3]) + "\n")
    before = _untouched(trained)
    rc, _, err = run_cli(_train(trained, trained["ens"], "--images-file", listed), capsys)
    assert rc == 1 and f"inputs.images.names: 1 removed ({names[3]})" in err, err
    assert _untouched(trained) == before
    with pytest.raises(OutputError, match="inputs.images.n: 4 -> 3"):  # from Python
        scaleseg.train(trained["images"], trained["ens"], images=names[:3], label="truth",
                       config=_train_config(), progress=False)  # fmt: skip
    assert _untouched(trained) == before


def _train_config(**kw):
    return scaleseg.TrainConfig(encoder="tu-resnet10t", encoder_weights=None, n_folds=2, epochs=1,
                                frozen_epochs=0, tile_shape=(64, 64), tiles_per_epoch=4, **kw)  # fmt: skip


@pytest.mark.parametrize(
    "extra, difference",
    [
        (["--tta", "flips"], "config.tta: 'none' -> 'flips'"),
        (["--tile", "32", "32"], "config.tile_shape: None -> [32, 32]"),
        (["--tile-scale", "1"], "config.tile_scale: 4 -> 1"),
        (["--overlap", "0.5"], "config.overlap: 0.25 -> 0.5"),
        (["--preset", "thorough"], "config.tile_scale: 4 -> 1"),
    ],
)
def test_predict_rerun_with_another_request_is_refused(trained, capsys, extra, difference):
    before = _untouched(trained)
    argv = _predict(trained, trained["pred"])
    if extra[0] == "--tta":
        argv[argv.index("--tta") + 1] = extra[1]
    else:
        argv += extra
    rc, _, err = run_cli(argv, capsys)
    assert rc == 1 and difference in err and "--overwrite" in err, err
    assert _untouched(trained) == before


def test_predict_preset_sits_under_the_explicit_flags(trained, capsys):
    """--preset thorough with --overlap / --tile-scale given: only the preset's other fields
    differ from the stored (default) request."""
    argv = _predict(trained, trained["pred"])
    argv += ["--preset", "thorough", "--overlap", "0.25", "--tile-scale", "4"]
    rc, _, err = run_cli(argv, capsys)
    assert rc == 1 and "config.precision: 'auto' -> 'float32'" in err, err
    assert "config.overlap" not in err and "config.tile_scale" not in err


def test_predict_with_other_models_is_refused(trained, capsys, tmp_path):
    """Another ensemble (other weights) on an existing prediction: refused, checksums listed."""
    other = tmp_path / "ens2"
    assert main(["train", str(trained["images"]), str(other), *TRAIN_FLAGS, "--seed", "1"]) == 0
    before = _untouched(trained)
    argv = _predict(trained, trained["pred"])
    argv[argv.index(trained["ens"])] = other
    rc, _, err = run_cli(argv, capsys)
    assert rc == 1 and "inputs.ensemble" in err and "model.checksums" in err, err
    assert _untouched(trained) == before


def test_predict_spec_records_feature_statistics_and_older_specs_still_resume(
    trained, capsys, tmp_path
):
    """The feature statistics' checksums are part of predict's request (they decide
    ood_distance and U_novel): a run made with other statistics is refused; a run stored before
    the key existed is resumed as that scaleseg resumed it."""
    import shutil

    stored = json.loads((trained["pred"] / "run_spec.json").read_text())
    assert "features" in stored["model"]
    for case in ("older", "other"):
        copy = tmp_path / case
        shutil.copytree(trained["pred"], copy)
        spec = json.loads((copy / "run_spec.json").read_text())
        if case == "older":
            spec["model"].pop("features")
        else:
            spec["model"]["features"] = ["0" * 64] * len(stored["model"]["features"])
        (copy / "run_spec.json").write_text(json.dumps(spec))
        rc, out, err = run_cli(_predict(trained, copy), capsys)
        if case == "older":
            assert rc == 0 and "(0 units run," in out, err
        else:
            assert rc == 1 and "model.features" in err, err


def test_same_request_resumes_and_execution_options_may_change(trained, capsys):
    rc, out, _ = run_cli(_predict(trained, trained["pred"], "--batch-size", "2"), capsys)
    assert rc == 0 and "(0 units run," in out
    rc, out, _ = run_cli(_train(trained, trained["ens"]), capsys)
    assert rc == 0 and "every fold was already trained" in out
    assert json.loads((trained["ens"] / "run.json").read_text())["resumed"] is True


# -- post-steps added to a finished run run, and are recorded ------------------------------------
def test_export_added_to_a_finished_ensemble_runs(trained, capsys, tmp_path):
    import shutil

    ens = tmp_path / "ens"
    shutil.copytree(trained["ens"], ens)
    rc, out, _ = run_cli(_train(trained, ens, "--export", "torchscript"), capsys)
    assert rc == 0 and "exported" in out
    assert sorted(p.name for p in (ens / "export").iterdir()) == [
        "fold_0.torchscript.pt", "fold_1.torchscript.pt"
    ]  # fmt: skip
    spec = json.loads((ens / "run_spec.json").read_text())
    assert spec["post_steps"] == ["export:torchscript"]
    run = json.loads((ens / "run.json").read_text())
    assert run["summary"]["exported"] and run["summary"]["folds_trained"] == []


def test_instances_added_to_a_finished_prediction_run(trained, capsys, tmp_path):
    import shutil

    import pandas as pd

    pred = tmp_path / "pred"
    shutil.copytree(trained["pred"], pred)
    images_before = (pred / "images.parquet").read_bytes()
    rc, out, _ = run_cli(_predict(trained, pred, "--instances", "components"), capsys)
    assert rc == 0 and "(0 units run," in out and "instances in 4 images" in out
    per_image = pd.read_parquet(pred / "instances_images.parquet")
    assert (per_image["instance_method"] == "components").all()
    assert (pred / "images.parquet").read_bytes() == images_before  # predict's table untouched
    assert json.loads((pred / "run_instances.json").read_text())["status"] == "ok"
    # another method on the same prediction: refused without --overwrite
    rc, _, err = run_cli(["instances", pred, "--method", "watershed"], capsys)
    assert rc == 1 and "config.method: 'components' -> 'watershed'" in err


# -- one run per output at a time ----------------------------------------------------------------
def test_concurrent_second_run_is_refused(trained, capsys):
    before = _untouched(trained)
    with RunLock(trained["pred"]):  # another live run holds the prediction folder
        rc, _, err = run_cli(_predict(trained, trained["pred"]), capsys)
        assert rc == 1 and "in use by another run" in err
        assert f"pid {os.getpid()}" in err and socket.gethostname() in err
        with pytest.raises(RunLockedError):
            scaleseg.segment_instances(trained["pred"], progress=False)
    assert not (trained["pred"] / LOCK_FILE).exists()
    assert _untouched(trained) == before


_TERMINATED_PREDICT = r"""
import os, signal, sys, time
import scaleseg.inference._run as predict_run
from scaleseg.cli import main

def terminated(*args, **kwargs):  # SIGTERM arrives while the units run
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # the handler raises in here
    raise AssertionError("SIGTERM was not handled")

predict_run.map_units = terminated
before = signal.getsignal(signal.SIGTERM)
rc = main(sys.argv[1:])
assert signal.getsignal(signal.SIGTERM) == before, "the handler from before is not back"
sys.exit(rc)
"""


def test_sigterm_is_handled_like_ctrl_c(trained, capsys, tmp_path):
    """kill, scancel and container stops send SIGTERM: the command ends with 143 and says so,
    the lock is released (not left for a stale takeover), run.json says interrupted, the
    handler before the command is back, and the same command then runs to the end. (In a
    fresh process, as a user's command runs: pytest's own process has handlers of its own.)"""
    out = tmp_path / "pred"
    argv = [str(a) for a in _predict(trained, out)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-c", _TERMINATED_PREDICT, *argv], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 143, (proc.returncode, proc.stderr[-2000:])
    assert "scaleseg predict: terminated (SIGTERM)" in proc.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert not (out / LOCK_FILE).exists()
    rc, _, _ = run_cli(_predict(trained, out), capsys)
    assert rc == 0 and json.loads((out / "run.json").read_text())["status"] == "ok"
    assert (out / "complete").exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_locks_are_taken_over_live_ones_not(tmp_path):
    import logging

    folder = tmp_path / "out"
    folder.mkdir()
    lock = folder / LOCK_FILE
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("scaleseg.runs").addHandler(handler)
    try:  # a dead process of this host
        lock.write_text(
            json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "token": "x"})
        )
        with RunLock(folder) as held:
            assert held.taken_over["token"] == "x"
            assert json.loads(lock.read_text())["token"] == held.token
    finally:
        logging.getLogger("scaleseg.runs").removeHandler(handler)
    assert any("taking over a stale lock" in m for m in messages) and not lock.exists()
    # another host, heartbeat fresh: refused; heartbeat older than stale_after: taken over
    lock.write_text(json.dumps({"host": "node-17", "pid": 4242, "started": "x", "token": "y"}))
    with pytest.raises(RunLockedError, match="host node-17, pid 4242"):
        RunLock(folder, heartbeat=1.0).acquire()
    old = time.time() - 30
    os.utime(lock, (old, old))
    with RunLock(folder, heartbeat=1.0) as held:  # stale after 6 s without a heartbeat
        assert held.taken_over["host"] == "node-17"
        first = lock.stat().st_mtime
        time.sleep(1.5)
        assert lock.stat().st_mtime > first  # the holder's heartbeat
    assert not lock.exists()


# -- the public API is light and complete --------------------------------------------------------
def test_import_scaleseg_is_light():
    code = (
        "import sys, scaleseg; scaleseg.__version__; scaleseg.TrainConfig; "
        "print(sorted(m for m in ('torch', 'distributed', 'cellpose', 'dask', 'zarr', 'timm') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_every_stage_has_a_public_entry_point():
    for name in ("convert", "demo_data", "estimate_gt", "train", "predict", "segment_instances",
                 "evaluate", "check_quality", "select_for_annotation", "export_roi_sets",
                 "import_roi_set", "predict_lazy"):  # fmt: skip
        assert callable(getattr(scaleseg, name)), name
        assert name in scaleseg.__all__
