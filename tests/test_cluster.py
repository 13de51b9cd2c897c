"""Cluster factory and the dask.config defaults."""

from __future__ import annotations

import json
import re

import dask.config
import pytest

from scaleseg.cluster import (
    client_has_gpus,
    cluster_session,
    dashboard_link,
    get_client,
    get_setting,
)


@pytest.mark.own_default_cluster
def test_defaults_loaded_and_overridable(monkeypatch):
    assert get_setting("cluster.profile") == "local"
    assert get_setting("cluster.torch-threads") == 1
    with dask.config.set({"scaleseg.cluster.profile": "local-cuda"}):
        assert get_setting("cluster.profile") == "local-cuda"


def test_env_variable_override(tmp_path):
    """DASK_SCALESEG__... variables reach the setting (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = "from scaleseg.cluster import get_setting; print(get_setting('cluster.n-workers'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"DASK_SCALESEG__CLUSTER__N_WORKERS": "7", "PATH": ""},
    )
    assert out.stdout.strip() == "7"


def test_local_profile():
    with cluster_session("local", n_workers=1, dashboard_address=":0") as client:
        info = client.scheduler_info()
        assert len(info["workers"]) == 1
        w = next(iter(info["workers"].values()))
        assert w["nthreads"] == 1
        assert dashboard_link(client).startswith("http")
        assert not client_has_gpus(client)
        assert client.submit(lambda x: x + 1, 1).result() == 2


def test_scheduler_address(client):
    c = get_client(client.scheduler.address)
    try:
        assert c.submit(sum, [1, 2]).result() == 3
    finally:
        c.close()


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown cluster profile 'nope'"):
        get_client("nope")


def test_local_cuda_without_gpu_is_clear():
    try:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="local-cuda"):
        get_client("local-cuda")


def test_settings_with_unknown_keys_are_refused():
    from scaleseg.cluster import check_cluster_settings, make_cluster

    check_cluster_settings({"n_workers": 2, "slurm": {"adapt": {"wait_count": 3}}})  # env style
    with pytest.raises(ValueError, match=r"scaleseg.cluster.workers: unknown setting"):
        check_cluster_settings({"workers": 2})
    with dask.config.set({"scaleseg.cluster.slurm.adapt.maxi": 3}):
        with pytest.raises(ValueError, match=r"adapt.maxi: unknown setting"):
            make_cluster("local")


@pytest.mark.parametrize(
    "text, message",
    [
        ("scaleseg: {cluster: {profile: local}}\ndistributed: {scheduler: {preload: [evil]}}",
         "preload names Python code"),
        ("scaleseg: {cluster: {profile: local}}\ndistributed: {client: {security-loader: m.f}}",
         "security-loader names Python code"),
        ("scaleseg: {cluster: {profile: local, cluster-class: mymod.MyCluster}}",
         "cluster-class names Python code"),
        ("scaleseg: {cluster: {profile: local, procs: 3}}", "procs: unknown setting"),
        ("jobqueue: {slurm: {cores: 4}}", "sets no scaleseg.cluster.profile"),
        ("- a list", "a recipe is a YAML mapping"),
        ("scaleseg: {cluster: [", "not valid YAML"),
    ],
)  # fmt: skip
def test_recipes_set_values_never_code(tmp_path, text, message):
    from scaleseg.cluster import load_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_recipe(path)
    with pytest.raises(ValueError, match=re.escape(message)):
        get_client(str(path))


@pytest.mark.own_default_cluster
def test_recipe_profile_that_names_a_class_is_an_unknown_profile(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("scaleseg: {cluster: {profile: distributed.LocalCluster}}")
    with pytest.raises(ValueError, match="unknown cluster profile 'distributed.LocalCluster'"):
        with cluster_session(str(path)):
            pass
    assert get_setting("cluster.profile") == "local"  # the session's settings did not leak


def test_recipe_session_applies_settings_only_inside(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "scaleseg: {cluster: {profile: local, n-workers: 1, torch-threads: 3, "
        "dashboard-address: ':0'}}"
    )
    with cluster_session(str(path)) as client:
        assert len(client.scheduler_info()["workers"]) == 1
        assert get_setting("cluster.torch-threads") == 3
    assert get_setting("cluster.torch-threads") == 1


def test_scheduler_file_target(client, tmp_path):
    # What `dask scheduler --scheduler-file` writes: the scheduler's identity with its
    # address. (Client.write_scheduler_file json-dumps scheduler_info(), which in
    # distributed 2026.8 can hold metrics with tuple keys and then raises TypeError.)
    path = tmp_path / "scheduler.json"
    path.write_text(json.dumps({"type": "Scheduler", "address": client.scheduler.address}))
    c = get_client(str(path))
    try:
        assert c.submit(sum, [2, 3]).result() == 5
    finally:
        c.close()
    with pytest.raises(FileNotFoundError, match="no such scheduler file"):
        get_client(str(tmp_path / "missing.json"))


def test_parse_unit_key():
    from scaleseg.cluster._observe import parse_unit_key

    assert parse_unit_key("predict-well_A-1_f0-2-13-0a1b2c") == {
        "image": "well_A-1_f0",
        "block": [2, 13],
    }
    assert parse_unit_key("train-fold_3-ens-1760000000") == {"fold": 3}
    assert parse_unit_key("_run_job-8c1f") == {}


def test_one_log_line_per_unit_and_summaries_per_stage(client):
    """Every unit is a DEBUG line (a failed one a WARNING); the summary per stage counts them."""
    import json
    import logging
    import time

    from scaleseg.cluster._observe import watch_units

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("scaleseg.units")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        summary = watch_units(client, every=3600)
        assert summary is not None
        keys = [f"predict-img-0-{i}-abcdef" for i in range(3)]
        client.gather(client.map(abs, [-1, -2, -3], key=keys))
        bad = client.submit(int, "x", key="predict-img-1-0-abcdef")
        with pytest.raises(ValueError):
            bad.result()
        deadline = time.monotonic() + 10
        while len(records) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(r.levelno == logging.INFO for r in records)  # no summary before `every`
        summary.flush()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        client.unsubscribe_topic("scaleseg-unit")
    units = [r for r in records if '"event": "unit"' in r.getMessage()]
    events = {e["key"]: e for e in (json.loads(r.getMessage()) for r in units)}
    assert set(keys) | {"predict-img-1-0-abcdef"} <= set(events)
    ok = events[keys[2]]
    assert ok["event"] == "unit" and ok["image"] == "img" and ok["block"] == [0, 2]
    assert ok["status"] == "ok" and ok["worker"].startswith("tcp://") and ok["seconds"] >= 0
    assert events["predict-img-1-0-abcdef"]["status"] == "error"
    level_of = {json.loads(r.getMessage())["key"]: r.levelno for r in units}
    assert level_of[keys[0]] == logging.DEBUG
    assert level_of["predict-img-1-0-abcdef"] == logging.WARNING
    (line,) = [json.loads(r.getMessage()) for r in records if r.levelno == logging.INFO]
    assert line["event"] == "units" and line["stage"] == "predict"
    assert (line["finished"], line["failed"]) == (3, 1) and line["units_per_s"] > 0


def test_stage_bar_counts_failed_units_from_the_executor():
    """map_units reports a failed unit as progress(1, failed=1); the bar shows the count."""
    from scaleseg.executor import map_units
    from scaleseg.stages._common import progress_bar

    def half(x):
        if x % 2:
            raise ValueError(f"odd {x}")
        return x

    with progress_bar(6, "t", enabled=False) as bar:
        res = map_units(half, range(6), stage="t", on_error="collect", progress=bar.update)
    assert bar.n == 6 and bar.failed == 3 and len(res.failures) == 3


def test_cli_recipe_prints_dashboard_and_logs_units(tmp_path, capsys):
    import logging

    from scaleseg.cli import main

    recipe = tmp_path / "cpu.yaml"
    recipe.write_text("scaleseg: {cluster: {profile: local, dashboard-address: ':0'}}")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep()
    logging.getLogger("scaleseg.units").addHandler(handler)
    try:
        rc = main(
            ["--verbose", "demo-data", str(tmp_path / "demo"), "--images", "2", "--ood", "0",
             "--size", "48", "48", "--cluster", str(recipe), "--workers", "1"]
        )  # fmt: skip
    finally:
        logging.getLogger("scaleseg.units").removeHandler(handler)
    assert rc == 0
    out = capsys.readouterr().out
    assert f"Dask cluster: {recipe} with 1 workers; dashboard: http" in out
    assert sum('"event": "unit"' in line for line in seen) >= 2  # --verbose: every unit
    assert any('"event": "units"' in line for line in seen)  # the closing summary


class _FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 1


@pytest.fixture
def fake_libc(monkeypatch):
    import ctypes

    from scaleseg import worker as _worker

    libc = _FakeLibc()
    monkeypatch.setattr(ctypes, "CDLL", lambda name: libc)
    monkeypatch.setattr(_worker.sys, "platform", "linux")
    monkeypatch.setattr(_worker, "_DONE", {})
    return libc


def test_tune_malloc_sets_both_thresholds_once(fake_libc):
    from scaleseg.worker import tune_malloc

    assert tune_malloc() is True
    # glibc: M_MMAP_THRESHOLD = -3, M_TRIM_THRESHOLD = -1; defaults from scaleseg.yaml
    assert fake_libc.calls == [(-3, 32 * 2**20), (-1, 256 * 2**20)]
    assert tune_malloc() is True and len(fake_libc.calls) == 2  # once per process


def test_tune_malloc_follows_config_and_null_leaves_malloc_alone(fake_libc):
    from scaleseg import worker as _worker
    from scaleseg.worker import tune_malloc

    with dask.config.set({"scaleseg.cluster.malloc": {"mmap-threshold": "4MiB"}}):
        assert tune_malloc() is True
    assert fake_libc.calls == [(-3, 4 * 2**20), (-1, 256 * 2**20)]
    _worker._DONE.clear()
    fake_libc.calls.clear()
    with dask.config.set({"scaleseg.cluster.malloc": None}):
        assert tune_malloc() is False
    assert fake_libc.calls == []


def test_tune_malloc_on_this_machine_in_a_fresh_process():
    """The real mallopt (glibc): both thresholds accepted, in a process of its own."""
    import subprocess
    import sys

    code = "from scaleseg.worker import tune_malloc; print(tune_malloc())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ("True" if sys.platform.startswith("linux") else "False")


def _slow_square(x):
    import time

    time.sleep(0.01)
    if x == 13:
        raise ValueError("thirteen")
    return x * x


def test_map_units_keeps_a_bounded_number_of_units_in_flight(client, monkeypatch):
    """At most the window of units exists on the scheduler at any time, whatever the number of
    units; the results still come back in unit order and failures are collected."""
    import threading

    from scaleseg import executor

    monkeypatch.setattr(executor, "MIN_IN_FLIGHT", 6)
    monkeypatch.setattr(executor, "IN_FLIGHT_PER_THREAD", 1)
    seen, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            seen.append(client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)))
            stop.wait(0.005)

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        res = executor.map_units(_slow_square, list(range(80)), stage="sq", client=client,
                                 on_error="collect")  # fmt: skip
    finally:
        stop.set()
        thread.join()
    assert [f.index for f in res.failures] == [13] and "thirteen" in res.failures[0].error
    assert [r for i, r in enumerate(res.results) if i != 13] == [
        i * i for i in range(80) if i != 13
    ]
    # window 6, plus a task or two the scheduler has not forgotten yet: never all 80 at once
    assert len(seen) > 5 and 0 < max(seen) <= 8


@pytest.mark.own_default_cluster
def test_predict_without_cluster_uses_the_configured_profile(
    client, tiny_ensemble, tmp_path, capsys
):
    """``DASK_SCALESEG__CLUSTER__PROFILE`` (here dask.config) is what train / predict use
    when ``--cluster`` is not given; sizing flags are refused for a running scheduler."""
    import dask.config
    import numpy as np

    from scaleseg import io
    from scaleseg.cli import main

    io.write_image(tmp_path / "col" / "a.zarr", np.zeros((1, 64, 64), np.uint8), n_levels=1)
    argv = ["predict", "--ensemble", str(tiny_ensemble), "--input", str(tmp_path / "col"),
            "--tta", "none", "--output"]  # fmt: skip
    address = client.scheduler.address
    with dask.config.set({"scaleseg.cluster.profile": address}):
        assert main([*argv, str(tmp_path / "p1")]) == 0
        assert f"Dask cluster: {address} with 2 workers" in capsys.readouterr().out
        assert main([*argv, str(tmp_path / "p2"), "--workers", "3"]) != 0
        err = capsys.readouterr().err
        assert f"{address} is a running scheduler: n_workers size a cluster" in err
    assert main([*argv, str(tmp_path / "p4"), "--scheduler", address, "--workers", "3"]) != 0
    assert "is a running scheduler" in capsys.readouterr().err  # not silently ignored
    with dask.config.set({"scaleseg.cluster.profile": "no-such-profile"}):
        assert main([*argv, str(tmp_path / "p3")]) != 0
        assert "unknown cluster profile 'no-such-profile'" in capsys.readouterr().err
