"""Fault tolerance on a LocalCluster with worker processes.

* a worker process killed (SIGKILL) in the middle of predict and of train: the command completes
  and its outputs equal an undisturbed run;
* the command interrupted (SIGINT): a re-run resumes from the manifest / finished folds and ends
  with identical outputs;
* a unit that fails deterministically is retried the configured number of times, recorded as
  failed, and the rest finish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaleseg import io
from scaleseg.cli import main

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parent.parent
N_IMAGES, SHAPE, BLOCK = 3, (128, 128), 64
N_UNITS = N_IMAGES * (SHAPE[0] // BLOCK) * (SHAPE[1] // BLOCK)


@pytest.fixture(scope="module")
def cluster_client(client):
    """The session cluster (its workers are warm): a killed worker process is restarted by its
    nanny, and the cluster is back to full size before other tests use it."""
    yield client
    client.wait_for_workers(2, timeout=120)


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    from conftest import make_random_ensemble

    return make_random_ensemble(tmp_path_factory.mktemp("fault-ens") / "ens")


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault-col") / "col"
    rng = np.random.default_rng(5)
    for i in range(N_IMAGES):
        img = (rng.random((1, *SHAPE)) * 255).astype(np.uint8)
        io.write_image(root / f"fimg{i}.zarr", img, chunks=(32, 32), n_levels=1)
    return root


def _predict_argv(ensemble, collection, out, *extra):
    return [
        "predict", "--ensemble", str(ensemble), "--input", str(collection), "--output", str(out),
        "--chunks", "32", "32", "--block", str(BLOCK), str(BLOCK), "--tta", "none", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(cluster_client, ensemble, collection, tmp_path_factory):
    """The undisturbed prediction (also warms the workers up)."""
    out = tmp_path_factory.mktemp("fault-ref") / "pred"
    argv = _predict_argv(ensemble, collection, out, "--scheduler", cluster_client.scheduler.address)
    assert main(argv) == 0
    return out


def _outputs(out: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for i in range(N_IMAGES):
        url = out / "images" / f"fimg{i}.zarr"
        arrays[f"fimg{i}/u"] = io.open_image(url).values
        arrays[f"fimg{i}/p"] = io.open_image(url / "probabilities").values
        arrays[f"fimg{i}/labels"] = io.open_labels(url, "semantic").values
    return arrays


def _table(out: Path) -> pd.DataFrame:
    t = pd.read_parquet(out / "images.parquet")
    return t.drop(columns=[c for c in t if c.startswith("seconds")]).sort_values("image")


def assert_same_prediction(out: Path, ref: Path) -> None:
    a, b = _outputs(out), _outputs(ref)
    for key in b:
        if key.endswith("labels"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:  # same kernels, one torch thread each: equal up to float32 rounding
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6, err_msg=key)
    pd.testing.assert_frame_equal(
        _table(out).drop(columns=["path", "output"]).reset_index(drop=True),
        _table(ref).drop(columns=["path", "output"]).reset_index(drop=True),
    )
    assert (out / "complete").exists()


def _units_done(out: Path) -> int:
    from scaleseg.unitlog import UnitLog

    return sum(1 for key in UnitLog(out / "manifest").read() if key[1])


class Killer(threading.Thread):
    """SIGKILL one worker process of ``client`` once ``ready()`` holds."""

    def __init__(self, client, ready, *, busy_only=False, timeout=120):
        super().__init__(daemon=True)
        self.client, self.ready, self.busy_only, self.timeout = client, ready, busy_only, timeout
        self.killed: tuple[str, int] | None = None
        self.state_at_kill = None

    def run(self):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            state = self.ready()
            if state:
                pids = self.client.run(os.getpid)
                addrs = sorted(pids)
                if self.busy_only:
                    busy = [a for a, ks in self.client.processing().items() if ks and a in pids]
                    if not busy:
                        time.sleep(0.05)
                        continue
                    addrs = busy
                addr = addrs[0]
                os.kill(pids[addr], signal.SIGKILL)
                self.killed, self.state_at_kill = (addr, pids[addr]), state
                return
            time.sleep(0.02)


def test_worker_killed_during_predict(cluster_client, ensemble, collection, reference, tmp_path):
    out = tmp_path / "pred"
    killer = Killer(cluster_client, lambda: _units_done(out) >= 2 and _units_done(out))
    killer.start()
    argv = _predict_argv(ensemble, collection, out, "--scheduler", cluster_client.scheduler.address)
    assert main(argv) == 0
    killer.join()
    assert killer.killed, "no worker was killed"
    assert killer.state_at_kill < N_UNITS  # the kill happened mid-run
    # the nanny brought up a fresh worker process
    cluster_client.wait_for_workers(2, timeout=60)
    assert killer.killed[1] not in cluster_client.run(os.getpid).values()
    assert _units_done(out) == N_UNITS
    assert_same_prediction(out, reference)


def _wait_for(predicate, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _env():
    return dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        NO_ALBUMENTATIONS_UPDATE="1",
        MPLBACKEND="Agg",
        PYTHONPATH=str(ROOT),
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
)
def test_sigint_during_predict_then_resume(
    cluster_client, ensemble, collection, reference, tmp_path, sig, code, said
):
    """The whole command (its own LocalCluster included) is interrupted -- Ctrl-C, or SIGTERM
    as kill / scancel send it: the lock is released, run.json says so, the re-run resumes."""
    out = tmp_path / "pred"
    argv = _predict_argv(ensemble, collection, out, "--cluster", "local", "--workers", "1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaleseg", *argv],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _wait_for(lambda: _units_done(out) >= 1, 180, proc), proc.communicate()
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = _units_done(out)
    assert proc.returncode == code, (proc.returncode, stderr[-2000:])
    assert f"scaleseg predict: {said}" in stderr
    assert 1 <= done < N_UNITS and not (out / "complete").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert not (out / ".scaleseg-lock").exists()  # released, not left for a takeover
    # the re-run (here on the shared cluster) runs only what is missing
    import contextlib
    import io as _io

    buf = _io.StringIO()
    rerun = _predict_argv(
        ensemble, collection, out, "--scheduler", cluster_client.scheduler.address
    )
    with contextlib.redirect_stdout(buf):
        assert main(rerun) == 0
    assert f"({N_UNITS - done} units run, {done} resumed)" in buf.getvalue()
    assert_same_prediction(out, reference)
    run = json.loads((out / "run.json").read_text())
    assert run["summary"]["units_resumed"] == done


def _processing_attempts(client, prefix: str) -> dict[str, int]:
    """How often each task whose key starts with ``prefix`` was sent to a worker."""

    def count(dask_scheduler, prefix=prefix):
        n = {}
        for entry in dask_scheduler.transition_log:
            key, finish = entry[0], entry[2]
            if isinstance(key, str) and key.startswith(prefix) and finish == "processing":
                n[key] = n.get(key, 0) + 1
        return n

    return client.run_on_scheduler(count)


@pytest.mark.parametrize("retries", [1])
def test_deterministic_failure_is_retried_then_recorded(
    cluster_client, ensemble, collection, reference, tmp_path, capsys, retries
):
    import shutil

    col = tmp_path / "col"
    shutil.copytree(collection, col)
    # corrupt one stored chunk of img1: its metadata stays valid, reading those pixels fails
    chunk = next(
        p
        for p in sorted((col / "fimg1.zarr" / "s0").rglob("*"))
        if p.is_file() and p.name != "zarr.json"
    )
    chunk.write_bytes(b"\x00garbage" * 3)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"predict": {"retries": retries}}))
    out = tmp_path / "pred"
    argv = _predict_argv(ensemble, col, out, "--scheduler", cluster_client.scheduler.address)
    assert main([*argv, "--config", str(config)]) == 3  # some images failed
    table = pd.read_parquet(out / "images.parquet").set_index("image")
    assert table.loc["fimg1", "status"] == "failed" and table.loc["fimg1", "error"]
    assert (table.loc[["fimg0", "fimg2"], "status"] == "ok").all()
    attempts = _processing_attempts(cluster_client, "predict-fimg1-")
    failed_units = {k: n for k, n in attempts.items() if n > 1}
    assert failed_units, attempts
    assert set(failed_units.values()) == {retries + 1}  # tried once, then retried `retries` times
    # every unit of img1 that did not touch the broken chunk finished and is in the manifest
    from scaleseg.unitlog import UnitLog

    finished = sum(1 for k in UnitLog(out / "manifest").read() if k[0] == "fimg1" and k[1])
    assert finished == (SHAPE[0] // BLOCK) * (SHAPE[1] // BLOCK) - len(failed_units)
    # the good images equal the undisturbed run
    ref = _outputs(reference)
    got = {k: v for k, v in _outputs_some(out, ["fimg0", "fimg2"]).items()}
    for key, value in got.items():
        np.testing.assert_allclose(value, ref[key], rtol=0, atol=1e-6, err_msg=key)
    err = capsys.readouterr().out
    assert "failed fimg1" in err


def _outputs_some(out: Path, names) -> dict[str, np.ndarray]:
    arrays = {}
    for name in names:
        url = out / "images" / f"{name}.zarr"
        arrays[f"{name}/u"] = io.open_image(url).values
        arrays[f"{name}/labels"] = io.open_labels(url, "semantic").values
    return arrays


# -- training ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from scaleseg.datasets import write_demo_archive

    out = tmp_path_factory.mktemp("fault-train") / "demo"
    write_demo_archive(out, n_images=4, n_ood=0, shape=(96, 96), seed=3)
    return out


def _train_argv(archive, out, *extra):
    return [
        "train", str(archive / "images"), str(out), "--label", "truth",
        "--encoder", "tu-resnet10t", "--encoder-weights", "none", "--folds", "3",
        "--epochs", "2", "--frozen-epochs", "1", "--tile", "64", "64",
        "--tiles-per-epoch", "8", "--batch-size", "4", "--augment", "flip", "rotate90", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def train_reference(cluster_client, archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("fault-train-ref") / "ens"
    assert main(_train_argv(archive, out, "--scheduler", cluster_client.scheduler.address)) == 0
    return out


def _folds(ens: Path) -> list[dict]:
    manifest = json.loads((ens / "ensemble.json").read_text())
    keep = ("fold", "path", "sha256", "valid_dice", "best_epoch", "train_images", "valid_images")
    return [{k: f[k] for k in keep} for f in manifest["folds"]]


def assert_same_ensemble(ens: Path, ref: Path) -> None:
    assert _folds(ens) == _folds(ref)
    for f in _folds(ref):
        assert (ens / f["path"]).read_bytes() == (ref / f["path"]).read_bytes()
        h1 = pd.read_csv(ens / f"fold_{f['fold']}" / "history.csv").drop(columns="seconds")
        h2 = pd.read_csv(ref / f"fold_{f['fold']}" / "history.csv").drop(columns="seconds")
        pd.testing.assert_frame_equal(h1, h2)


@pytest.mark.slow
def test_worker_killed_during_train(cluster_client, archive, train_reference, tmp_path):
    out = tmp_path / "ens"

    def training() -> bool:  # a fold is being written (its partial folder exists)
        return out.is_dir() and any(out.glob(".fold_*.partial-*"))

    killer = Killer(cluster_client, training, busy_only=True)
    killer.start()
    assert main(_train_argv(archive, out, "--scheduler", cluster_client.scheduler.address)) == 0
    killer.join()
    assert killer.killed, "no worker was killed"
    assert_same_ensemble(out, train_reference)
    assert not list(out.glob(".fold_*.partial-*"))  # the retried fold removed the dead attempt
    cluster_client.wait_for_workers(2, timeout=60)


@pytest.mark.slow
def test_sigint_during_train_then_resume(cluster_client, archive, train_reference, tmp_path):
    out = tmp_path / "ens"
    argv = _train_argv(archive, out, "--cluster", "local", "--workers", "1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaleseg", *argv],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ok = _wait_for(lambda: any(out.glob("fold_*/fold.json")), 300, proc)
        assert ok, proc.communicate(timeout=60)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    # the fold running at the interrupt may still finish while the cluster shuts down
    finished = sorted(out.glob("fold_*/fold.json"))
    assert 1 <= len(finished) < 3 and not (out / "ensemble.json").exists(), finished
    kept = [f.read_bytes() for f in finished]
    assert main(_train_argv(archive, out, "--scheduler", cluster_client.scheduler.address)) == 0
    assert [f.read_bytes() for f in finished] == kept  # finished folds kept, not retrained
    assert_same_ensemble(out, train_reference)
