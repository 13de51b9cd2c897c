"""Archive-scale benchmark (issue 15): what grows with the number of images, end to end.

Real runs (each N in its own driver process, so its peak RSS is its own): a synthetic archive
of N demo images (``write_demo_archive``, 256x256, 3 experts) is predicted, split into
instances and quality-checked on a LocalCluster of 2 workers x 1 thread, with a randomly
Unet + ResNet10t ensemble briefly trained on the archive's true masks (2 members, no TTA,
128x128 windows). Figures per N:

* wall seconds per image of predict / instances / qa, and the pure forward time of the same
  window passes (1 thread, in a warm worker); overhead ratio = end-to-end wall x workers /
  pure forward;
* driver peak RSS (sampled every 20 ms; the LocalCluster scheduler runs in the driver);
* scheduler tasks per image (every key that reached ``processing``);
* files per image (everything under the prediction folder / N) and per output image zarr;
* instance rows per second through the table path; QA seconds.

Same pass (N = 100): ``predict`` then ``segment_instances`` (A) against ``predict(...,
instances=...)``, where each single-block image gets its instances in its own predict unit (B),
alternating A, B, A, B, ... on the same warm cluster; medians, and whether B's instance table and
labels equal A's.

Stub run (**STUB: no model call, no pixels read or written**), N = 100,000 images: the real
driver-side planning (``plan_units`` with a real metadata read of every image: the names are
distinct, the URLs cycle over the N=100 archive's images), then one task per image on the same
cluster whose model call is replaced by a synthetic instance table of R rows (the real
schema of ``instance_table``), written by the worker through the real ``write_part``; then
the table is read back in one streaming pass (``iter_instances`` -> ``instance_class_totals``,
what ``qa`` does), counted by DuckDB when installed, one image read alone, and ``run_qa`` on a
synthetic 10^5-row images table (its scores resampled from the largest real run; thumbnails only for
the top 24, drawn from real outputs). Driver peak RSS per phase; target < 2 GB.

    python benchmarks/bench_archive.py [--sizes 100 1000] [--stub-images 100000]
        [--rows-per-image 2000] [--same-pass-repeats 3] [--root DIR] [--keep]
        [--json results/archive.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _common import emit  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

SHAPE = (256, 256)
TILE = 128
BATCH = 4
WORKERS = 2


class PeakRSS:
    """Peak resident memory of this process (MiB), sampled in a thread while the block runs."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak_mib = 0.0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self._proc.memory_info().rss / 2**20)
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRSS:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = round(max(self.peak_mib, self._proc.memory_info().rss / 2**20), 1)


def _count_plugin():
    from distributed.diagnostics.plugin import SchedulerPlugin

    class TaskCounter(SchedulerPlugin):
        """Counts the distinct keys that reached ``processing`` (retries count once)."""

        name = "bench-task-counter"

        def __init__(self):
            self.keys: set = set()

        def transition(self, key, start, finish, *args, **kwargs):
            if finish == "processing":
                self.keys.add(key)

    return TaskCounter()


def _tasks_seen(dask_scheduler=None) -> int:
    return len(dask_scheduler.plugins["bench-task-counter"].keys)


def _files(path: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def _ensemble(root: Path) -> Path:
    """A small ensemble trained briefly on the N=100 archive's true masks (2 folds, 3 epochs of
    32 tiles): real objects to count, and nothing downloaded."""
    from scaleseg.config import TrainConfig
    from scaleseg.models import ModelSpec
    from scaleseg.training import train_ensemble, training_items

    ens = root / "ensemble"
    if (ens / "ensemble.json").is_file():
        return ens
    images, _ = _archive(root, 100)
    items, _, _ = training_items(str(images), label="truth")
    config = TrainConfig(encoder="tu-resnet10t", encoder_weights=None, tile_shape=(TILE, TILE),
                         frozen_epochs=0, epochs=3, n_folds=2, tiles_per_epoch=32,
                         batch_size=BATCH, intensity="percentile")  # fmt: skip
    spec = ModelSpec.from_dict({"arch": "Unet", "encoder": "tu-resnet10t", "in_channels": 1,
                                "n_classes": 2, "n_extra": 0, "encoder_weights": None})  # fmt: skip
    train_ensemble(items[:24], ens, model=spec, config=config)
    return ens


def _archive(root: Path, n: int) -> tuple[Path, float]:
    from scaleseg.datasets import write_demo_archive

    out = root / f"archive_{n}"
    if (out / "images").is_dir() and len(list((out / "images").glob("*.zarr"))) >= n:
        return out / "images", 0.0
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    write_demo_archive(out, n_images=n, n_ood=0, shape=SHAPE, seed=0)
    return out / "images", time.perf_counter() - t0


def _config():
    from scaleseg.config import PredictConfig

    return PredictConfig(tile_shape=(TILE, TILE), tta="none", batch_size=BATCH)


# -- one real N, in its own process ----------------------------------------------------------
def real_case(n: int, root: Path) -> dict:
    import pandas as pd
    from bench_predict import _cluster, _pure_forward, _warm

    import scaleseg
    from scaleseg.config import InstancesConfig, QAConfig

    ens = _ensemble(root)
    images, t_make = _archive(root, n)
    out, qa_out, warm_out = root / f"pred_{n}", root / f"qa_{n}", root / f"warm_{n}"
    for p in (out, qa_out, warm_out):
        shutil.rmtree(p, ignore_errors=True)
    f: dict = {"images": n, "archive_written_s": round(t_make, 1)}
    with PeakRSS() as rss:
        cluster, client = _cluster(WORKERS)
        try:
            client.register_plugin(_count_plugin())
            client.run(_warm, str(ens), _config())
            # a throwaway prediction of 2 images: first-unit set-up is not a per-image cost
            warm_names = sorted(p.stem for p in images.glob("*.zarr"))[:2]
            scaleseg.predict(images, ens, warm_out, config=_config(), images=warm_names,
                             client=client, progress=False)  # fmt: skip
            base = client.run_on_scheduler(_tasks_seen)
            t0 = time.perf_counter()
            pred = scaleseg.predict(images, ens, out, config=_config(), client=client,
                                    progress=False)  # fmt: skip
            t_pred = time.perf_counter() - t0
            n_pred_tasks = client.run_on_scheduler(_tasks_seen) - base
            t0 = time.perf_counter()
            inst = scaleseg.segment_instances(
                out, config=InstancesConfig(method="components"), client=client, progress=False
            )
            t_inst = time.perf_counter() - t0
            n_inst_tasks = client.run_on_scheduler(_tasks_seen) - base - n_pred_tasks
            t0 = time.perf_counter()
            scaleseg.check_quality(out, qa_out, config=QAConfig(), client=client, progress=False)
            t_qa = time.perf_counter() - t0
            n_fwd = int(pred.images["n_forward"].sum())
            fwd = client.submit(_pure_forward, str(ens), n_fwd, _config(), pure=False).result()
        finally:
            client.close()
            cluster.close()
    rows = int(inst.images["n_instances"].sum())
    one = next(iter(sorted((out / "images").glob("*.zarr"))))
    e2e = t_pred + t_inst + t_qa
    f.update(
        predict_s=round(t_pred, 2),
        instances_s=round(t_inst, 2),
        qa_s=round(t_qa, 2),
        wall_per_image_s=round(e2e / n, 4),
        forward_passes=n_fwd,
        pure_forward_per_image_s=round(fwd["wall"] / n, 4),
        overhead_ratio_predict=round(t_pred * WORKERS / fwd["wall"], 2),
        overhead_ratio_end_to_end=round(e2e * WORKERS / fwd["wall"], 2),
        driver_peak_rss_mib=rss.peak_mib,
        predict_tasks_per_image=round(n_pred_tasks / n, 3),
        instances_tasks_per_image=round(n_inst_tasks / n, 3),
        files_per_image=round(_files(out) / n, 2),
        files_per_output_image=_files(one),
        instance_rows=rows,
        instance_rows_per_s=round(rows / t_inst, 1),
        failed=int((pred.images["status"] != "ok").sum()),
    )
    pd.read_parquet(out / "images.parquet").to_parquet(root / f"images_{n}.parquet")
    return f


def _same_outputs(a: Path, b: Path) -> bool:
    import numpy as np
    import pandas as pd

    from scaleseg import io
    from scaleseg.instances import read_instances

    def table(out):
        return read_instances(out).sort_values(["image", "label"], ignore_index=True)

    if not table(a).equals(table(b)):
        return False
    return all(
        np.array_equal(io.open_labels(url, "instances").values,
                       io.open_labels(b / "images" / url.name, "instances").values)
        for url in sorted((a / "images").glob("*.zarr"))
    ) and pd.read_parquet(a / "instances_images.parquet").equals(
        pd.read_parquet(b / "instances_images.parquet"))  # fmt: skip


def same_pass_case(n: int, repeats: int, root: Path) -> dict:
    """Predict then instances (A) vs instances in predict's own units (B), alternating."""
    import statistics

    from bench_predict import _cluster, _warm

    import scaleseg
    from scaleseg.config import InstancesConfig

    ens = _ensemble(root)
    images, _ = _archive(root, n)
    method = InstancesConfig(method="components")
    times: dict[str, list[float]] = {"separate": [], "same_pass": []}
    outs = {k: root / f"pass_{k}_{n}" for k in times}
    in_pass = 0
    cluster, client = _cluster(WORKERS)
    try:
        client.run(_warm, str(ens), _config())
        warm_names = sorted(p.stem for p in images.glob("*.zarr"))[:2]
        for kind in times:  # both paths once on 2 images: first-unit set-up is not measured
            warm = root / f"pass_warm_{kind}"
            shutil.rmtree(warm, ignore_errors=True)
            scaleseg.predict(images, ens, warm, config=_config(), images=warm_names,
                             client=client, progress=False,
                             instances=method if kind == "same_pass" else None)  # fmt: skip
        for _ in range(repeats):
            for kind, out in outs.items():
                shutil.rmtree(out, ignore_errors=True)
                t0 = time.perf_counter()
                if kind == "separate":
                    scaleseg.predict(images, ens, out, config=_config(), client=client,
                                     progress=False)  # fmt: skip
                    scaleseg.segment_instances(out, config=method, client=client, progress=False)
                else:
                    res = scaleseg.predict(images, ens, out, config=_config(), client=client,
                                           progress=False, instances=method)  # fmt: skip
                    in_pass = res.instances.in_pass
                times[kind].append(time.perf_counter() - t0)
    finally:
        client.close()
        cluster.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "images": n,
        "repeats": repeats,
        "separate_s": [round(t, 2) for t in times["separate"]],
        "same_pass_s": [round(t, 2) for t in times["same_pass"]],
        "separate_median_s": round(med["separate"], 2),
        "same_pass_median_s": round(med["same_pass"], 2),
        "same_pass_time_ratio": round(med["same_pass"] / med["separate"], 3),
        "images_in_pass": in_pass,
        "identical_instances": _same_outputs(outs["separate"], outs["same_pass"]),
    }


# -- the stub at 10^5 images -------------------------------------------------------------------
def _stub_columns(root: Path) -> dict[str, str]:
    """Column names and dtypes of a real instance part (from the N=100 run)."""
    import pandas as pd

    part = next(iter(sorted((root / "pred_100" / "instances").glob("part-*.parquet"))), None)
    if part is None:
        raise SystemExit("the stub needs the N=100 real run first (its instance schema)")
    return {k: str(v) for k, v in pd.read_parquet(part).dtypes.items()}


def stub_instances_unit(unit, *, folder: str, rows: int, columns: dict[str, str]) -> dict:
    """STUB of a predict + instances unit: no model call, no pixels; a synthetic instance table
    of ``rows`` rows with the real schema, written as the image's part by the real writer."""
    import zlib

    import numpy as np
    import pandas as pd

    from scaleseg.tables import write_part

    rng = np.random.default_rng(zlib.crc32(unit.name.encode()))
    h, w = unit.shape
    y0, x0 = rng.integers(0, h - 8, rows), rng.integers(0, w - 8, rows)
    data = {
        "image": np.full(rows, unit.name, dtype=object),
        "label": np.arange(1, rows + 1, dtype=np.uint64),
        "class": np.ones(rows, dtype=np.uint16),
        "area": rng.integers(15, 60, rows),
        "centroid_y": y0 + 3.5,
        "centroid_x": x0 + 3.5,
        "bbox_y0": y0,
        "bbox_x0": x0,
        "bbox_y1": y0 + 8,
        "bbox_x1": x0 + 8,
        "mean_uncertainty": rng.random(rows),
        "touches_border": np.zeros(rows, dtype=bool),
    }
    df = pd.DataFrame({c: data.get(c, rng.random(rows)) for c in columns})
    df = df.astype({c: t for c, t in columns.items() if c != "image"})
    write_part(df, folder, unit.name)
    return {"image": unit.name, "n_instances": rows}


def stub_case(n: int, rows: int, root: Path) -> dict:
    import numpy as np
    import pandas as pd
    from bench_predict import _cluster

    from scaleseg.executor import map_units
    from scaleseg.inference import read_ensemble
    from scaleseg.inference._run import plan_units
    from scaleseg.instances import iter_instances, read_instances
    from scaleseg.io import ImageRef, open_collection
    from scaleseg.qa import run_qa
    from scaleseg.qa._table import instance_class_totals

    columns = _stub_columns(root)
    src = open_collection(root / "archive_100" / "images")
    out, qa_out = root / "stub_pred", root / "stub_qa"
    for p in (out, qa_out):
        shutil.rmtree(p, ignore_errors=True)
    info = read_ensemble(_ensemble(root))
    refs = [ImageRef(url=src[i % len(src)].url, name=f"s{i:06d}") for i in range(n)]
    f: dict = {"images": n, "rows_per_image": rows, "rows": n * rows, "stub": "no model call"}
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        _, units, _ = plan_units(refs, info, out, config=_config())
        f["plan_s"] = round(time.perf_counter() - t0, 1)
    f["plan_driver_peak_rss_mib"] = rss.peak_mib
    f["tasks_per_image"] = round(len(units) / n, 3)
    with PeakRSS() as rss:
        cluster, client = _cluster(WORKERS)
        try:
            client.register_plugin(_count_plugin())
            t0 = time.perf_counter()
            res = map_units(stub_instances_unit, units, stage="stub", client=client,
                            names=[u.name for u in units], folder=str(out / "instances"),
                            rows=rows, columns=columns)  # fmt: skip
            t_write = time.perf_counter() - t0
            n_sched = client.run_on_scheduler(_tasks_seen)
            written = sum(r["n_instances"] for r in res.results)
        finally:
            client.close()
            cluster.close()
    f.update(
        write_s=round(t_write, 1),
        write_rows_per_s=round(written / t_write),
        write_driver_peak_rss_mib=rss.peak_mib,
        scheduler_tasks_per_image=round(n_sched / n, 3),
        files_per_image_table=round(_files(out / "instances") / n, 3),
        table_gib=round(sum(p.stat().st_size for p in (out / "instances").iterdir()) / 2**30, 2),
    )
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        totals = instance_class_totals(iter_instances(out, columns=["class", "mean_uncertainty"]))
        t_read = time.perf_counter() - t0
    f.update(
        read_rows=int(totals["count"].sum()),
        read_s=round(t_read, 1),
        read_rows_per_s=round(int(totals["count"].sum()) / t_read),
        read_driver_peak_rss_mib=rss.peak_mib,
    )
    t0 = time.perf_counter()
    one = read_instances(out, images=[refs[n // 2].name], columns=["label", "area"])
    f["read_one_image_ms"] = round(1000 * (time.perf_counter() - t0), 1)
    f["read_one_image_rows"] = len(one)
    try:
        import duckdb
    except ImportError:
        f["duckdb"] = "not installed"
    else:
        t0 = time.perf_counter()
        glob = str(out / "instances" / "*.parquet")
        cnt = duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall()[0][0]
        f.update(duckdb_rows=int(cnt), duckdb_count_s=round(time.perf_counter() - t0, 1))
    # qa on a synthetic 10^5-image table: scores resampled from the largest real run
    real = pd.read_parquet(max(root.glob("images_*.parquet"), key=lambda p: int(p.stem[7:])))
    take = np.random.default_rng(0).integers(0, len(real), n)
    table = real.iloc[take].reset_index(drop=True)
    table["image"] = [r.name for r in refs]
    table.to_parquet(out / "images.parquet", index=False)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        qa = run_qa(out, qa_out, top_n=24)
        t_qa = time.perf_counter() - t0
    f.update(
        qa_s=round(t_qa, 1),
        qa_driver_peak_rss_mib=rss.peak_mib,
        qa_thumbnails=len(list((qa_out / "report" / "thumbnails").glob("*.png"))),
        qa_report_mib=round((qa_out / "report.html").stat().st_size / 2**20, 2),
        qa_instances_counted=int(qa["classes"]["instances"].fillna(0).sum()),
    )
    f["driver_peak_rss_mib"] = max(
        f["plan_driver_peak_rss_mib"], f["write_driver_peak_rss_mib"],
        f["read_driver_peak_rss_mib"], f["qa_driver_peak_rss_mib"],
    )  # fmt: skip
    return f


def _child(args) -> None:
    root = Path(args.root)
    if args.prepare:  # the N=100 archive and the ensemble, outside the measured processes
        f = {"ensemble": str(_ensemble(root))}
    elif args.stub:
        f = stub_case(args.stub, args.rows_per_image, root)
    elif args.same_pass:
        f = same_pass_case(args.same_pass, args.same_pass_repeats, root)
    else:
        f = real_case(args.case, root)
    Path(args.child_json).write_text(json.dumps(f, indent=2) + "\n")


def _run_child(root: Path, flags: list[str]) -> dict:
    target = root / f"child_{'_'.join(flags)}.json"
    target.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--root", str(root), "--child-json", str(target), *flags]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    return json.loads(target.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--stub-images", type=int, default=100_000, help="0 skips the stub run")
    ap.add_argument("--rows-per-image", type=int, default=2000)
    ap.add_argument(
        "--same-pass-repeats",
        type=int,
        default=3,
        help="A/B repeats of predict+instances vs the same pass (0 skips)",
    )
    ap.add_argument("--root", help="work folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--json")
    ap.add_argument("--case", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--stub", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--same-pass", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_json:
        _child(args)
        return
    if 100 not in args.sizes:
        ap.error("--sizes must include 100 (the stub run reuses its archive and schema)")
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="bench_archive_"))
    root.mkdir(parents=True, exist_ok=True)
    figures: dict = {}
    try:
        _run_child(root, ["--prepare"])
        for n in sorted(args.sizes):
            for k, v in _run_child(root, ["--case", str(n)]).items():
                figures[f"n{n}_{k}"] = v
        if 1000 in args.sizes:
            figures["driver_rss_ratio_1000_over_100"] = round(
                figures["n1000_driver_peak_rss_mib"] / figures["n100_driver_peak_rss_mib"], 3
            )
            figures["driver_rss_ratio_target"] = 1.2
        if args.same_pass_repeats:
            flags = ["--same-pass", "100", "--same-pass-repeats", str(args.same_pass_repeats)]
            for k, v in _run_child(root, flags).items():
                figures[f"pass100_{k}"] = v
        if args.stub_images:
            flags = ["--stub", str(args.stub_images), "--rows-per-image", str(args.rows_per_image)]
            for k, v in _run_child(root, flags).items():
                figures[f"stub{args.stub_images}_{k}"] = v
            figures["stub_driver_rss_target_mib"] = 2048
    finally:
        if not args.keep and not args.root:
            shutil.rmtree(root, ignore_errors=True)
    emit("archive", figures, args.json)


if __name__ == "__main__":
    main()
