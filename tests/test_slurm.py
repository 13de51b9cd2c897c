"""Real SLURM (marker ``slurm``): batch jobs, cancellation, the walltime and a dask-jobqueue
worker job on the single-node cluster of ``slurm_cluster`` (tests/slurm_fixture.py; skipped
where it cannot start: needs root and ``scripts/setup test slurm``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slurm


def test_batch_job_runs_on_the_node_within_its_allocation(slurm, tmp_path):
    result = tmp_path / "result.txt"
    job = slurm.sbatch(
        "--cpus-per-task=1",
        "--mem=100M",
        f"--output={tmp_path / 'job.out'}",
        wrap=f'echo "$SLURM_JOB_ID $SLURM_CPUS_ON_NODE $(nproc) $(hostname -s)" > {result}',
    )
    assert slurm.wait_for_state(job, "COMPLETED", timeout=60) == "COMPLETED"
    job_id, cpus, visible_cpus, host = result.read_text().split()
    assert int(job_id) == job
    assert int(cpus) == 1
    assert int(visible_cpus) == 1  # task/affinity binds the job to its one core
    assert host == slurm.node
    assert slurm.job(job)["ExitCode"] == "0:0"
    slurm.wait_for_empty_queue()


def test_the_node_has_this_machines_cores_and_memory(slurm):
    cpus, memory_mb = slurm.node_resources()
    assert cpus == len(os.sched_getaffinity(0))
    with open("/proc/meminfo") as fh:
        total_mb = int(next(line for line in fh if line.startswith("MemTotal:")).split()[1]) // 1024
    assert 0.8 * total_mb <= memory_mb < total_mb  # headroom left to the system


def test_gpu_requests_get_the_stand_in_gpus(slurm, tmp_path):
    """deploy/slurm asks for ``--gres=gpu:1`` / ``--gpus-per-task=1``: on the test node these
    are stand-ins (no device behind them), handed out one per job like real ones."""
    out = tmp_path / "gpus.txt"
    job = slurm.sbatch(
        "--gres=gpu:1",
        "--mem=100M",
        f"--output={tmp_path / 'job.out'}",
        wrap=f'echo "$CUDA_VISIBLE_DEVICES $SLURM_GPUS_ON_NODE" > {out}',
    )
    slurm.wait_for_state(job, "COMPLETED", timeout=60)
    assert out.read_text().split() == ["0", "1"]
    assert f"Gres=gpu:{slurm.gpus}" in slurm.run("scontrol", "show", "node", slurm.node)


@pytest.mark.parametrize("resource", ["cpus", "memory", "gpus"])
def test_a_job_larger_than_the_node_is_refused(slurm, resource):
    cpus, memory_mb = slurm.node_resources()
    too_much = {
        "cpus": f"--cpus-per-task={cpus + 1}",
        "memory": f"--mem={memory_mb + 1}M",
        "gpus": f"--gres=gpu:{slurm.gpus + 1}",
    }[resource]
    proc = subprocess.run(
        ["sbatch", "--parsable", too_much, "--wrap", "true"],
        env=slurm.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0
    assert "Batch job submission failed" in proc.stderr
    assert not slurm.queue()


def test_scancel_ends_a_running_job(slurm, tmp_path):
    pid_file = tmp_path / "pid"
    job = slurm.sbatch(
        "--mem=100M",
        f"--output={tmp_path / 'job.out'}",
        wrap=f"echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file} && exec sleep 300",
    )
    slurm.wait_for_state(job, "RUNNING", timeout=60)
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = int(pid_file.read_text())
    assert _running(pid)
    slurm.run("scancel", str(job))
    assert slurm.wait_for_state(job, "CANCELLED", timeout=30) == "CANCELLED"
    slurm.wait_for_empty_queue()
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(pid), f"the job's process {pid} outlived scancel"


@pytest.mark.slow
def test_the_walltime_ends_a_job(slurm, tmp_path):
    """``--time=1`` (a minute, SLURM's smallest limit): slurmctld checks limits every 30 s and
    signals the job (SIGTERM, then SIGKILL after ``KillWait``): TIMEOUT 60-95 s after start."""
    out = tmp_path / "job.out"
    job = slurm.sbatch("--mem=100M", "--time=00:01:00", f"--output={out}", wrap="sleep 300")
    slurm.wait_for_state(job, "RUNNING", timeout=60)
    started = time.monotonic()
    assert slurm.wait_for_state(job, "TIMEOUT", timeout=120) == "TIMEOUT"
    assert time.monotonic() - started >= 55
    assert "DUE TO TIME LIMIT" in out.read_text()
    record = next(
        line
        for line in (slurm.root / "log" / "jobcomp.log").read_text().splitlines()
        if line.startswith(f"JobId={job} ")
    )
    assert "JobState=TIMEOUT" in record and "TimeLimit=1 " in record
    slurm.wait_for_empty_queue()


def test_dask_jobqueue_worker_job_runs_a_task(slurm, tmp_path):
    dask_jobqueue = pytest.importorskip("dask_jobqueue")
    from distributed import Client

    with dask_jobqueue.SLURMCluster(
        queue=slurm.partition,
        cores=1,
        processes=1,
        memory="1GB",
        walltime="00:10:00",
        python=sys.executable,  # the worker imports this very environment
        job_script_prologue=["export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1"],
        log_directory=str(tmp_path / "logs"),
        local_directory=str(tmp_path / "scratch"),
        scheduler_options={"dashboard_address": ":0"},
    ) as cluster:
        assert f"#SBATCH -p {slurm.partition}" in cluster.job_script()
        cluster.scale(jobs=1)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=120)
            assert client.submit(lambda: 1 + 1).result(timeout=60) == 2
            (job_id,) = client.run(lambda: os.environ["SLURM_JOB_ID"]).values()
            assert slurm.queue() == [int(job_id)]
            assert slurm.state(int(job_id)) == "RUNNING"
    slurm.wait_for_empty_queue()
    assert slurm.state(int(job_id)) in ("CANCELLED", "COMPLETED")


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
