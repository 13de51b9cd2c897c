"""scaleseg end to end on a real SLURM (marker ``slurm``; the single-node cluster of
tests/slurm_fixture.py, skipped where it cannot start).

The cluster recipe is the shipped ``deploy/slurm/jobqueue.yaml`` with the site file
``tests/slurm_site.yaml`` laid over it (partition, cores, memory: what the README tells users to
change). Every run is compared with the same command on a LocalCluster with the same torch threads
per worker: labels exact, floats within 1e-6, fold weights byte-identical.

* ``train`` (2 folds) and ``predict --instances`` submit worker jobs with the recipe's resources
  (GPU GRES, ``--resources GPU=1``, lifetime, walltime); ``squeue`` is empty afterwards;
* adaptive scaling submits jobs for queued work and releases them when idle, client still open;
* faults: a worker job cancelled (``scancel``) mid-predict; worker jobs reaching their lifetime
  mid-predict; the whole batch job (``deploy/slurm/predict.sbatch``) cancelled, then submitted
  again: each run completes with identical outputs, every unit once in the manifest.

The jobs and recovery times are printed at the end of the session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from slurm_fixture import report
from test_faults import assert_same_ensemble

from scaleseg import io
from scaleseg.cli import main
from scaleseg.instances import read_instances
from scaleseg.unitlog import UnitLog

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "deploy" / "slurm" / "jobqueue.yaml"
SITE = Path(__file__).resolve().parent / "slurm_site.yaml"
# 4 images of 3 x 3 blocks (corner, edge and centre blocks, stitched instances): 36 units, more
# than two worker lives' worth in the lifetime test on a quiet machine (3 images left too thin a
# margin: a faster machine could finish them within one life)
N_IMAGES, SHAPE, BLOCK = 4, (384, 384), 128
N_UNITS = N_IMAGES * (SHAPE[0] // BLOCK) * (SHAPE[1] // BLOCK)
PREDICT_FLAGS = ["--chunks", "64", "64", "--block", str(BLOCK), str(BLOCK), "--tta", "flips",
                 "--instances", "components", "--min-size", "0"]  # fmt: skip
TRAIN_FLAGS = [
    "--label", "truth", "--encoder", "tu-resnet10t", "--encoder-weights", "none", "--folds", "2",
    "--epochs", "1", "--frozen-epochs", "0", "--tile", "64", "64", "--tiles-per-epoch", "8",
    "--batch-size", "4",
]  # fmt: skip


def _recipe(*extra: Path) -> list[str]:
    out = ["--cluster", str(RECIPE), "--cluster", str(SITE)]
    for path in extra:
        out += ["--cluster", str(path)]
    return out


def _adapt_every_second(folder: Path) -> Path:
    """A site file checking adaptive scaling every second instead of the recipe's 10 s: the
    first worker job is otherwise asked for only 10 s after the cluster starts. For runs that
    test something other than the shipped adapt settings (the predict run keeps them; the
    recipe's adapt values are also read and checked offline in test_deploy)."""
    path = folder / "adapt-every-second.yaml"
    path.write_text("scaleseg:\n  cluster:\n    slurm:\n      adapt:\n        interval: 1s\n")
    return path


class Jobs(threading.Thread):
    """Watches ``squeue`` while a command runs: every job seen, its ``scontrol`` record and
    batch script (taken when first seen), when it was first seen running and the most jobs
    queued at once."""

    def __init__(self, slurm, period: float = 0.3):
        super().__init__(daemon=True)
        self.slurm, self.period = slurm, period
        self.seen: dict[int, dict] = {}
        self.running_at: dict[int, float] = {}
        self.most = 0
        self._stop_event = threading.Event()

    def _poll(self) -> None:
        out = subprocess.run(
            ["squeue", "-h", "-o", "%i %T"], env=self.slurm.env, capture_output=True, text=True
        ).stdout.split("\n")
        rows = [line.split() for line in out if line.strip()]
        self.most = max(self.most, len(rows))
        for job, state in rows:
            job = int(job)
            if job not in self.seen:
                record = self.slurm.job(job)
                script = subprocess.run(
                    ["scontrol", "write", "batch_script", str(job), "-"],
                    env=self.slurm.env,
                    capture_output=True,
                    text=True,
                ).stdout
                self.seen[job] = {**record, "script": script}
            if state == "RUNNING" and job not in self.running_at:
                self.running_at[job] = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self._poll()
            except Exception:  # a job that left between squeue and scontrol
                pass
            self._stop_event.wait(self.period)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self._stop_event.set()
        self.join(timeout=30)


def assert_recipe_resources(jobs: Jobs, slurm) -> None:
    """The worker jobs asked for what the recipe (with the site file) says."""
    assert jobs.seen, "no worker job was submitted"
    for job, rec in jobs.seen.items():
        assert rec["JobName"] == "scaleseg-worker", (job, rec["JobName"])
        assert rec["Partition"] == slurm.partition
        assert rec["TresPerNode"] == "gres:gpu:1"  # the recipe's --gres=gpu:1
        assert rec["NumCPUs"] == "1" and rec["MinMemoryNode"] in ("4G", "3815M")
        assert rec["TimeLimit"] == "02:00:00"
        script = rec["script"]
        assert "--resources GPU=1" in script and "--lifetime 110m" in script
        assert sys.executable in script  # the workers import this very environment


# -- the work -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from scaleseg.datasets import write_demo_archive

    out = tmp_path_factory.mktemp("slurm-train") / "demo"
    write_demo_archive(out, n_images=4, n_ood=0, shape=(96, 96), seed=3)
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Random images (blocks stitched for instances) and a small random ensemble."""
    from conftest import make_random_ensemble

    root = tmp_path_factory.mktemp("slurm-predict")
    rng = np.random.default_rng(5)
    for i in range(N_IMAGES):
        img = (rng.random((1, *SHAPE)) * 255).astype(np.uint8)
        io.write_image(root / "col" / f"img{i}.zarr", img, chunks=(64, 64), n_levels=1)
    return {"col": root / "col", "ens": make_random_ensemble(root / "ens")}


def _predict(work, out, *extra) -> int:
    return main(["predict", "--ensemble", str(work["ens"]), "--input", str(work["col"]),
                 "--output", str(out), *PREDICT_FLAGS, *map(str, extra)])  # fmt: skip


@pytest.fixture(scope="module")
def reference(work, client, tmp_path_factory):
    """The same prediction on a LocalCluster: 2 workers x 1 thread, torch threads 1 -- the
    session's (conftest ``client``, shared with the train test's reference and warm when other
    tests ran before) rather than a fresh one (worker start-up and imports each time)."""
    out = tmp_path_factory.mktemp("slurm-ref") / "pred"
    assert _predict(work, out, "--scheduler", client.scheduler.address) == 0
    return out


def _units(out: Path) -> int:
    return sum(1 for key in UnitLog(out / "manifest").read() if key[1])


def assert_same_prediction(out: Path, ref: Path) -> None:
    assert (out / "complete").exists()
    for i in range(N_IMAGES):
        a, b = out / "images" / f"img{i}.zarr", ref / "images" / f"img{i}.zarr"
        for name in ("semantic", "instances"):
            np.testing.assert_array_equal(
                io.open_labels(a, name).values, io.open_labels(b, name).values, err_msg=name
            )
        for sub in ("", "probabilities"):
            np.testing.assert_allclose(
                io.open_image(a / sub).values, io.open_image(b / sub).values, rtol=0, atol=1e-6
            )

    def table(path):
        t = pd.read_parquet(path)
        drop = [c for c in t if c.startswith("seconds") or c in ("path", "output")]
        return t.drop(columns=drop).sort_values("image", ignore_index=True)

    pd.testing.assert_frame_equal(table(out / "images.parquet"), table(ref / "images.parquet"))
    inst = [
        read_instances(p).sort_values(["image", "label"], ignore_index=True) for p in (out, ref)
    ]
    assert len(inst[1]) > 0
    pd.testing.assert_frame_equal(*inst)
    # the folded manifest: every unit exactly once
    lines = (out / "manifest" / "units.jsonl").read_text().splitlines()
    keys = [(r["image"], tuple(r.get("block") or ())) for r in map(json.loads, lines)]
    assert len(keys) == len(set(keys)) and _units(out) == N_UNITS


# -- end to end ---------------------------------------------------------------------------------


def test_train_two_folds_on_slurm_equals_local(slurm, archive, client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # dask-jobqueue writes the workers' slurm-<id>.out here
    ref = tmp_path / "ens-local"  # on the session's LocalCluster: 2 workers x 1 thread
    assert main(["train", str(archive / "images"), str(ref), *TRAIN_FLAGS,
                 "--scheduler", client.scheduler.address]) == 0  # fmt: skip
    out = tmp_path / "ens-slurm"
    with Jobs(slurm) as jobs:
        t0 = time.monotonic()
        assert main(["train", str(archive / "images"), str(out), *TRAIN_FLAGS,
                     *_recipe(_adapt_every_second(tmp_path))]) == 0  # fmt: skip
        seconds = time.monotonic() - t0
    assert_recipe_resources(jobs, slurm)
    slurm.wait_for_empty_queue()  # every worker job released
    assert_same_ensemble(out, ref)
    report(f"SLURM train 2 folds: {len(jobs.seen)} worker jobs, {seconds:.0f} s")


def test_predict_with_instances_on_slurm_equals_local(
    slurm, work, reference, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "pred"
    with Jobs(slurm) as jobs:
        t0 = time.monotonic()
        assert _predict(work, out, *_recipe()) == 0
        seconds = time.monotonic() - t0
    assert_recipe_resources(jobs, slurm)
    assert jobs.most >= 2  # adaptive scaling asked for more than one job for the queued units
    slurm.wait_for_empty_queue()
    assert_same_prediction(out, reference)
    report(
        f"SLURM predict --instances: {len(jobs.seen)} worker jobs submitted "
        f"(at most {jobs.most} queued), {seconds:.0f} s"
    )


def test_adaptive_scaling_releases_idle_worker_jobs(slurm, tmp_path, monkeypatch):
    """The recipe's adaptive scaling, with a short idle wait (an extra site file): jobs are
    submitted for queued tasks and released when idle while the client stays open."""
    from scaleseg.cluster import cluster_session

    monkeypatch.chdir(tmp_path)
    fast = tmp_path / "fast-adapt.yaml"
    fast.write_text("scaleseg:\n  cluster:\n    slurm:\n      adapt:\n"
                    "        wait-count: 2\n        interval: 1s\n")  # fmt: skip
    with cluster_session([str(RECIPE), str(SITE), str(fast)]) as client:
        assert slurm.queue() == []  # minimum 0: nothing submitted before there is work
        t0 = time.monotonic()
        futures = client.map(lambda x: (time.sleep(1.0), x * x)[1], range(8))
        assert client.gather(futures) == [x * x for x in range(8)]
        up = time.monotonic() - t0
        del futures
        assert slurm.queue() or client.scheduler_info()["workers"]
        t1 = time.monotonic()
        deadline = t1 + 90
        while (slurm.queue() or client.scheduler_info()["workers"]) and time.monotonic() < deadline:
            time.sleep(0.5)
        down = time.monotonic() - t1
        assert slurm.queue() == [], "idle worker jobs were not released"
        assert not client.scheduler_info()["workers"]
    report(f"SLURM adaptive: work done {up:.0f} s after submit; released {down:.0f} s idle")


def test_a_worker_job_slurm_refuses_fails_the_command_at_once(slurm, work, tmp_path, capsys,
                                                              monkeypatch):  # fmt: skip
    """A wrong partition in the site file: sbatch --test-only refuses the worker job before the
    run asks for any, and the command ends with SLURM's reason (it used to wait forever)."""
    monkeypatch.chdir(tmp_path)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("jobqueue:\n  slurm:\n    queue: nosuch\n")
    t0 = time.monotonic()
    assert _predict(work, tmp_path / "pred", *_recipe(wrong)) != 0
    assert time.monotonic() - t0 < 60
    err = capsys.readouterr().err
    assert "SLURM refuses the worker job" in err and "Invalid partition" in err
    assert slurm.queue() == []


# -- faults -------------------------------------------------------------------------------------


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


class Canceller(threading.Thread):
    """``scancel`` one running worker job once ``out`` has finished units but not all."""

    def __init__(self, slurm, jobs: Jobs, out: Path):
        super().__init__(daemon=True)
        self.slurm, self.jobs, self.out = slurm, jobs, out
        self.cancelled: int | None = None
        self.at: float | None = None
        self.units_at_cancel = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            _wait(lambda: _units(self.out) >= 2, 300, "two finished units")
            running = [j for j, _ in sorted(self.jobs.running_at.items(), key=lambda kv: kv[1])
                       if self.slurm.state(j) == "RUNNING"]  # fmt: skip
            self.cancelled = running[0]
            self.units_at_cancel = _units(self.out)
            self.at = time.monotonic()
            self.slurm.run("scancel", str(self.cancelled))
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_scancel_of_a_worker_job_mid_predict(slurm, work, reference, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "pred"
    with Jobs(slurm) as jobs:
        canceller = Canceller(slurm, jobs, out)
        canceller.start()
        assert _predict(work, out, *_recipe(_adapt_every_second(tmp_path))) == 0
        end = time.monotonic()
        canceller.join(timeout=60)
    assert canceller.error is None, canceller.error
    assert canceller.cancelled is not None and canceller.units_at_cancel < N_UNITS
    assert jobs.seen[canceller.cancelled] and slurm.state(canceller.cancelled) == "CANCELLED"
    replacements = [t for j, t in jobs.running_at.items() if t > canceller.at]
    slurm.wait_for_empty_queue()
    assert_same_prediction(out, reference)
    report(
        f"SLURM scancel worker job {canceller.cancelled} at {canceller.units_at_cancel}/{N_UNITS} "
        f"units: run finished {end - canceller.at:.0f} s later"
        + (
            f", a replacement job running after {min(replacements) - canceller.at:.0f} s"
            if replacements
            else " on the other worker job"
        )  # fmt: skip
    )


def test_worker_jobs_reaching_their_lifetime_mid_predict(
    slurm, work, reference, tmp_path, monkeypatch
):
    """The recipe closes a worker before its walltime (``--lifetime``); here the lifetime is
    20 s and one worker job at a time (adapt maximum 1), so the units cannot all fit into one
    job's life: adaptive scaling submits a fresh job when one leaves, and the run completes.

    The cluster forgets a worker that left after ``distributed.deploy.lost-worker-timeout``
    (15 s by default) and only then asks for its replacement: 2 s here, so that each of the
    job cycles is not 13 s longer than it needs to be (the replacement itself is what is
    tested, not how long the cluster waits before it)."""
    monkeypatch.chdir(tmp_path)
    short = tmp_path / "short-lifetime.yaml"
    short.write_text(
        "scaleseg:\n  cluster:\n    slurm:\n      adapt:\n        maximum: 1\n"
        "        interval: 1s\n"
        "jobqueue:\n  slurm:\n    worker-extra-args: [--resources, GPU=1, --lifetime, 20s, "
        "--lifetime-stagger, 0s]\n"
        "distributed:\n  deploy:\n    lost-worker-timeout: 2s\n"
    )
    out = tmp_path / "pred"
    with Jobs(slurm) as jobs:
        t0 = time.monotonic()
        assert _predict(work, out, *_recipe(short)) == 0
        seconds = time.monotonic() - t0
    slurm.wait_for_empty_queue()
    starts = sorted(jobs.running_at.values())
    workers = {r.get("worker") for r in UnitLog(out / "manifest").read().values()} - {None}
    assert len(jobs.running_at) >= 2 and len(workers) >= 2, (jobs.running_at, workers)
    assert_same_prediction(out, reference)
    report(
        f"SLURM lifetime 20 s, one job at a time: {len(jobs.running_at)} worker jobs ran "
        f"(started at {', '.join(f'{t - starts[0]:.0f}' for t in starts)} s), units by "
        f"{len(workers)} workers, run {seconds:.0f} s"
    )


def test_predict_sbatch_cancelled_then_resubmitted_resumes(slurm, work, reference, tmp_path):
    """``deploy/slurm/predict.sbatch`` as a user submits it (sbatch options on the command line
    for the site: partition, node size, memory): cancelled mid-run, then submitted again, it
    resumes from the manifest and ends with the LocalCluster's outputs."""
    out = tmp_path / "pred"
    env = dict(slurm.env, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    argv = [
        "sbatch", "--parsable", f"--partition={slurm.partition}", "--nodes=1",
        "--ntasks-per-node=2", "--cpus-per-task=1", "--mem-per-cpu=3G", f"--chdir={tmp_path}",
        f"--export=ALL,ENSEMBLE={work['ens']},INPUT={work['col']},OUTPUT={out},"
        f"PREDICT_ARGS={' '.join(PREDICT_FLAGS)}",
        str(ROOT / "deploy" / "slurm" / "predict.sbatch"),
    ]  # fmt: skip

    def submit() -> int:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30,
                              cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return int(proc.stdout.strip().split(";")[0])

    first = submit()
    _wait(lambda: _units(out) >= 2, 300, "two finished units of the first batch job")
    done = _units(out)
    t_cancel = time.monotonic()
    slurm.run("scancel", str(first))
    slurm.wait_for_state(first, "CANCELLED", timeout=60)
    assert done < N_UNITS and not (out / "complete").exists()
    second = submit()
    slurm.wait_for_state(second, "COMPLETED", timeout=600)
    t_end = time.monotonic()
    log = (tmp_path / f"scaleseg-predict-{second}.log").read_text()
    resumed = int(json.loads((out / "run.json").read_text())["summary"]["units_resumed"])
    assert resumed >= done, log[-3000:]
    assert f"({N_UNITS - resumed} units run, {resumed} resumed)" in log
    slurm.wait_for_empty_queue()
    assert not list(tmp_path.glob("dask-scheduler-*.json"))  # both jobs removed their file
    assert_same_prediction(out, reference)
    report(
        f"SLURM predict.sbatch: job {first} cancelled at {done}/{N_UNITS} units; job {second} "
        f"resumed {resumed} units and finished {t_end - t_cancel:.0f} s after the scancel"
    )
