"""A real single-node SLURM for the tests marked ``slurm`` (a pytest plugin, loaded by conftest).

``slurm_cluster`` (session scope) runs ``scripts/slurm start DIR`` into a fresh temporary folder
-- munged, slurmctld and slurmd, this host being the only node, partition ``debug``, with two
stand-in GPUs (GRES ``gpu``) so the GPU recipes in deploy/slurm schedule on a CPU host -- points
``SLURM_CONF`` at it for the whole session (so ``sbatch`` from dask-jobqueue or from a
subprocess reaches it) and ends with ``scripts/slurm stop DIR``, which stops the three daemons
by their recorded PIDs. It skips, saying why, where the cluster cannot start: not root, SLURM
not installed (``scripts/setup test slurm`` installs it, as root) or a failed start (with the
tail of the daemons' logs). With ``SCALESEG_REQUIRE_SLURM=1`` these are failures instead, for
machines where the SLURM tests must run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "slurm"
GPUS = 2  # stand-in GPUs (scripts/slurm start --gpus)
FINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}
)


@dataclass(frozen=True)
class SlurmCluster:
    """The running test cluster: its folder, ``slurm.conf`` and the client environment."""

    root: Path
    node: str
    partition: str = "debug"
    gpus: int = GPUS
    setup_seconds: float = 0.0

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """``os.environ`` with ``SLURM_CONF``: pass as ``env=`` to subprocesses."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, timeout: float = 30) -> str:
        """Run a SLURM client command; its stdout, or a failure naming its stderr."""
        proc = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(argv)} exited with {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def sbatch(self, *options: str, wrap: str | None = None, script: Path | None = None) -> int:
        """Submit a batch job (``--wrap`` command or a script file); its job id."""
        argv = ["sbatch", "--parsable", *options]
        if wrap is not None:
            argv += ["--wrap", wrap]
        if script is not None:
            argv.append(str(script))
        return int(self.run(*argv).strip().split(";")[0])

    def queue(self) -> list[int]:
        """The ids of the jobs ``squeue`` lists (pending, running, completing)."""
        return [int(j) for j in self.run("squeue", "-h", "-o", "%i").split()]

    def job(self, job_id: int) -> dict[str, str]:
        """``scontrol show job`` as a dict (while slurmctld keeps the job: ``MinJobAge``)."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id))
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)

    def node_resources(self) -> tuple[int, int]:
        """The node's CPUs and memory (MB) as slurmctld schedules them."""
        out = self.run("scontrol", "show", "node", "-o", self.node)
        fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
        return int(fields["CPUTot"]), int(fields["RealMemory"])

    def cancel_all(self, *, timeout: float = 30) -> None:
        """Cancel every job still queued and wait until ``squeue`` is empty."""
        if jobs := self.queue():
            self.run("scancel", *map(str, jobs))
        self.wait_for_empty_queue(timeout=timeout)

    def state(self, job_id: int) -> str:
        return self.job(job_id)["JobState"]

    def wait_for_state(self, job_id: int, states, *, timeout: float) -> str:
        """Poll until the job is in one of ``states`` (a final state that is not one fails)."""
        states = {states} if isinstance(states, str) else set(states)
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(job_id)
            if state in states:
                return state
            if state in FINAL_STATES or time.monotonic() > deadline:
                pytest.fail(
                    f"job {job_id} is {state}, expected {sorted(states)} "
                    f"(after {timeout:.0f} s at most)\n{self.log_tail()}"
                )
            time.sleep(0.3)

    def wait_for_empty_queue(self, *, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while (jobs := self.queue()) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not jobs, f"squeue still lists {jobs} after {timeout:.0f} s"

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of every daemon log (and of ``jobcomp.log``)."""
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            if text := path.read_text(errors="replace").splitlines():
                parts.append(f"--- {path.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)


_SESSION: dict[str, str] = {}
_FIGURES: list[str] = []


def report(line: str) -> None:
    """A figure for the end of the session (jobs submitted, recovery times)."""
    _FIGURES.append(line)


def pytest_terminal_summary(terminalreporter):
    if "started" in _SESSION:
        terminalreporter.write_line(_SESSION["started"])
    for line in _FIGURES:
        terminalreporter.write_line(line)


def _unavailable(reason: str):
    if os.environ.get("SCALESEG_REQUIRE_SLURM") == "1":
        pytest.fail(f"SCALESEG_REQUIRE_SLURM=1 but the SLURM test cluster is unavailable: {reason}")
    pytest.skip(reason)


def _script(command: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), command, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node SLURM; ``SLURM_CONF`` points at it while the session lasts."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        _unavailable(
            "the SLURM test cluster needs root: its daemons run as SlurmUser=root "
            "(run the tests as root, e.g. in a container)"
        )
    if (check := _script("check")).returncode != 0:
        _unavailable(
            f"SLURM is not installed ({check.stderr.strip()}): run `scripts/setup test slurm` as root"
        )
    # not pytest's tmp_path: munged needs every folder above its socket searchable by all
    root = Path(tempfile.mkdtemp(prefix="scaleseg-slurm-"))
    root.chmod(0o755)
    t0 = time.monotonic()
    try:
        started = _script("start", str(root), "--gpus", str(GPUS), timeout=120)
    except subprocess.TimeoutExpired:
        started = subprocess.CompletedProcess([], 1, "", "scripts/slurm start ran past 120 s")
    if started.returncode != 0:
        _script("stop", str(root), timeout=60)  # whatever did start; the logs stay for a look
        lines = started.stderr.strip().splitlines()
        why = next((ln for ln in lines if ln.startswith("[slurm] ")), "[slurm] no message")
        tail = [ln for ln in lines if not ln.startswith("[slurm] ")][-12:]
        _unavailable(
            f"scripts/slurm start failed: {why[8:]} (logs: {root}/log)\n" + "\n".join(tail)
        )
    setup_seconds = time.monotonic() - t0
    (node,) = (
        line.split()[0].removeprefix("NodeName=")
        for line in (root / "slurm.conf").read_text().splitlines()
        if line.startswith("NodeName=")
    )
    cluster = SlurmCluster(root=root, node=node, setup_seconds=setup_seconds)
    _SESSION["started"] = f"SLURM test cluster: node {node} up in {setup_seconds:.1f} s ({root})"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(cluster.conf))
        try:
            yield cluster
        finally:
            stopped = _script("stop", str(root), timeout=90)
            if stopped.returncode != 0:  # keep the logs for whoever looks into it
                raise RuntimeError(f"scripts/slurm stop {root} failed: {stopped.stderr.strip()}")
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def slurm(slurm_cluster):
    """``slurm_cluster`` for one test: the jobs it leaves behind are cancelled afterwards."""
    yield slurm_cluster
    slurm_cluster.cancel_all()
