"""Speed-quality frontier of prediction (issue 16, item 2), on real held-out data.

Input: the output folder of ``scripts/verify_pv_hc`` (PV-in-HC: a CPU-recipe ensemble trained on
27 images, its STAPLE ground truth, ``apply.zarr`` with the 9 held-out images and the shared OOD
images, ``split.csv``). Every setting predicts the held-out images and ``--ood-per-kind`` OOD
images of each kind with ``scaleseg.predict`` on one LocalCluster (2 single-threaded workers),
and is scored on them:

* time: wall seconds of ``predict`` per megapixel of input, median of ``--repeats`` runs (graphs
  exported before timing; each setting first warmed up on two small images, so both workers
  hold its models);
* quality: Dice of the semantic labels against the estimated GT per held-out image (mean),
  Pearson r of U against Dice over the held-out images (more negative = U ranks errors better),
  AUROC of U and of ood_distance for OOD vs held-out images, the share of OOD images the
  ensemble's distance rule flags.

Settings vary one factor at a time from the reference -- the most complete setting (the
ensemble's tile, overlap 0.5, flips, all members, torch float32) -- tile 2x / 4x, overlap 0.25 /
0.125, TTA none, members 1..M-1, engine onnxruntime / openvino, bfloat16 (OpenVINO); then the
combination of every faster level that kept the quality, and that combination with one factor
at a time put back. Finally the fastest setting that keeps the quality (the pick) and the
reference run ``--confirm`` times alternately (A, B, A, B, ...): the median time ratio. A setting keeps the quality when, by a paired bootstrap over the held-out
images (2000 resamples), the 95 % upper bound of its Dice loss is <= 0.005 and the 95 % upper
bound of its r increase is <= 0.05. Among those, the fastest is printed as the pick.

    python benchmarks/bench_frontier.py --run pv-hc-check [--ood-per-kind 4] [--repeats 1]
                                        [--factors tile overlap tta members engine]
                                        [--json F] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import emit  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DICE_TOL, R_TOL, BOOT = 0.005, 0.05, 2000


def _split(run: Path, per_kind: int) -> tuple[list[str], list[str]]:
    test, ood, kinds = [], [], {}
    with open(run / "split.csv") as fh:
        for row in csv.DictReader(fh):
            if row["split"] == "test":
                test.append(row["name"])
            elif row["split"] == "ood" and (run / "apply.zarr" / f"{row['name']}.zarr").exists():
                kinds.setdefault(row["ood"], []).append(row["name"])
    for names in kinds.values():
        ood += sorted(names)[:per_kind]
    return sorted(test), ood


def _sub_ensemble(ensemble: Path, m: int, work: Path) -> Path:
    """The first ``m`` members of ``ensemble`` as an ensemble folder (links to the weights)."""
    out = work / f"ensemble_m{m}"
    if out.exists():
        return out
    out.mkdir(parents=True)
    manifest = json.loads((ensemble / "ensemble.json").read_text())
    manifest["folds"] = manifest["folds"][:m]
    for f in ensemble.iterdir():
        if f.name != "ensemble.json":
            (out / f.name).symlink_to(f.resolve())
    (out / "ensemble.json").write_text(json.dumps(manifest, indent=2))
    return out


def _dice(pred, ref) -> float:
    import numpy as np

    p, r = np.asarray(pred) > 0, np.asarray(ref) > 0
    s = p.sum() + r.sum()
    return 1.0 if s == 0 else float(2 * (p & r).sum() / s)


def _pearson(x, y) -> float:
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _score(res, out: Path, gt: Path, test: list[str], ood: list[str]) -> dict:
    import numpy as np

    from scaleseg import io
    from scaleseg.qa._ood import auroc

    t = res.images.set_index("image")
    dice = [_dice(io.open_labels(out / "images" / f"{n}.zarr", "semantic").values,
                  io.open_labels(gt / f"{n}.zarr", "est_gt").values) for n in test]  # fmt: skip
    u = t.loc[test, "U"].to_numpy(float)
    labels = np.r_[np.zeros(len(test)), np.ones(len(ood))]
    names = test + ood
    dist = t.loc[names, "ood_distance"].to_numpy(float)
    thr = float(t["ood_threshold"].iloc[0])
    return {
        "dice": dice,
        "u": list(u),
        "auroc_U": auroc(np.nan_to_num(t.loc[names, "U"].to_numpy(float), nan=1.0), labels),
        "auroc_distance": auroc(dist, labels) if np.isfinite(dist).all() else float("nan"),
        "ood_recall": float(np.mean(dist[len(test) :] >= thr)) if ood else float("nan"),
        "test_flagged": float(np.mean(dist[: len(test)] >= thr)),
    }


def _bootstrap(ref: dict, got: dict, rng) -> dict:
    """Paired bootstrap over images: Dice loss and r increase of ``got`` against ``ref``."""
    import numpy as np

    d_ref, d_got = np.asarray(ref["dice"]), np.asarray(got["dice"])
    u_ref, u_got = np.asarray(ref["u"]), np.asarray(got["u"])
    n = len(d_ref)
    loss, rise = [], []
    for _ in range(BOOT):
        i = rng.integers(0, n, n)
        loss.append(d_ref[i].mean() - d_got[i].mean())
        r_ref, r_got = _pearson(u_ref[i], d_ref[i]), _pearson(u_got[i], d_got[i])
        if np.isfinite(r_ref) and np.isfinite(r_got):
            rise.append(r_got - r_ref)
    return {
        "dice_loss": float(d_ref.mean() - d_got.mean()),
        "dice_loss_hi": float(np.quantile(loss, 0.95)),
        "r_rise": _pearson(u_got, d_got) - _pearson(u_ref, d_ref),
        "r_rise_hi": float(np.quantile(rise, 0.95)) if rise else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="pv-hc-check", help="a scripts/verify_pv_hc output folder")
    ap.add_argument("--ood-per-kind", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per setting (median)")
    ap.add_argument("--factors", nargs="+",
                    default=["tile", "overlap", "tta", "members", "engine", "precision"])  # fmt: skip
    ap.add_argument("--confirm", type=int, default=3,
                    help="alternating timed runs of the pick and the reference (0: none)")  # fmt: skip
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--work", help="work folder (default: a temporary folder, removed)")
    args = ap.parse_args()

    import numpy as np
    from distributed import Client, LocalCluster

    import scaleseg
    from scaleseg.config import PredictConfig
    from scaleseg.inference import read_ensemble

    run = Path(args.run)
    if not (run / "split.csv").is_file() or not (run / "ensemble" / "ensemble.json").is_file():
        emit("frontier", {"skipped": f"no scripts/verify_pv_hc output in {run}"}, args.json)
        return
    ensemble, gt, apply = run / "ensemble", run / "gt" / "images", run / "apply.zarr"
    test, ood = _split(run, args.ood_per_kind)
    info = read_ensemble(ensemble)
    m_all, tile = len(info.folds), tuple(info.tile_shape)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_frontier_"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SCALESEG_CACHE", str(work / "cache"))
    images_file = work / "images.csv"
    with open(images_file, "w", newline="") as fh:
        csv.writer(fh).writerows([["name"], *([n] for n in test + ood)])
    warm_file = work / "warm.csv"
    with open(warm_file, "w", newline="") as fh:
        csv.writer(fh).writerows([["name"], *([n] for n in (ood or test)[:2])])
    from scaleseg.io import open_image

    mp = sum(np.prod(open_image(apply / f"{n}.zarr").shape[-2:]) for n in test + ood) / 1e6

    ref = {"tile": tile[0], "overlap": 0.5, "tta": "flips", "members": m_all, "engine": "torch",
           "precision": "float32"}  # fmt: skip
    levels = {  # each level: the keys it changes from the reference
        "tile": [{"tile": 2 * tile[0]}, {"tile": 4 * tile[0]}],
        "overlap": [{"overlap": 0.25}, {"overlap": 0.125}],
        "tta": [{"tta": "none"}],
        "members": [{"members": m} for m in range(1, m_all)],
        "engine": [{"engine": "onnxruntime"}, {"engine": "openvino"}],
        # CPU bfloat16: OpenVINO's bf16 kernels (torch's autocast is slower than its float32)
        "precision": [{"precision": "bfloat16", "engine": "openvino"}],
    }
    results: dict[str, dict] = {}
    rng = np.random.default_rng(0)
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0")  # fmt: skip
    client = Client(cluster)

    def name_of(s: dict) -> str:
        diff = [f"{k}={s[k]}" for k in ref if s[k] != ref[k]]
        return ",".join(diff) or "reference"

    def config_of(s: dict):
        ens = ensemble if s["members"] == m_all else _sub_ensemble(ensemble, s["members"], work)
        cfg = PredictConfig(tile_shape=(s["tile"], s["tile"]), overlap=s["overlap"], tta=s["tta"],
                            engine=s["engine"], precision=s["precision"],
                            batch_size=1)  # fmt: skip
        return ens, cfg

    def warm_up(s: dict) -> None:
        ens, cfg = config_of(s)
        if s["engine"] != "torch":  # export outside the timing (once per user in real use)
            from scaleseg.inference import clear_model_cache, get_models

            get_models(read_ensemble(ens), "cpu", s["engine"], cfg.tile_shape, s["precision"])
            clear_model_cache()
        # this setting on two small images first: its models loaded in both workers
        scaleseg.predict(apply, ens, work / "warm", config=cfg, images_file=warm_file,
                         client=client, overwrite=True, progress=False)  # fmt: skip

    def timed(s: dict):
        ens, cfg = config_of(s)
        out = work / "out"
        t0 = time.perf_counter()
        res = scaleseg.predict(apply, ens, out, config=cfg, images_file=images_file,
                               client=client, overwrite=True, progress=False)  # fmt: skip
        secs = time.perf_counter() - t0
        if not res.failed.empty:
            raise RuntimeError(f"{name_of(s)}: {len(res.failed)} images failed")
        return secs, res, out

    def measure(s: dict, factor: str) -> dict:
        key = name_of(s)
        if key in results:
            return results[key]
        warm_up(s)
        times = []
        for _ in range(args.repeats):
            secs, res, out = timed(s)
            times.append(secs)
        sc = _score(res, out, gt, test, ood)
        sc["s_per_mp"] = statistics.median(times) / mp
        sc["setting"], sc["factor"] = dict(s), factor
        results[key] = sc
        print(f"[frontier] {key}: {sc['s_per_mp']:.2f} s/MP, Dice "
              f"{np.mean(sc['dice']):.4f}", flush=True)  # fmt: skip
        return sc

    def judge() -> None:
        for sc in results.values():
            sc.update(_bootstrap(base, sc, rng))
            sc["keeps"] = sc["dice_loss_hi"] <= DICE_TOL and sc["r_rise_hi"] <= R_TOL

    confirm: dict = {}
    try:
        base = measure(ref, "reference")
        for f in args.factors:
            for upd in levels[f]:
                measure({**ref, **upd}, f)
        judge()
        # the combination of every factor's fastest level that kept the quality, then that
        # combination with one factor at a time put back
        best: dict[str, dict] = {}
        for f in args.factors:
            ok = [r for r in results.values() if r["factor"] == f and r["keeps"]
                  and r["s_per_mp"] < base["s_per_mp"]]  # fmt: skip
            if ok:
                fast = min(ok, key=lambda r: r["s_per_mp"])["setting"]
                best[f] = {k: fast[k] for k in ref if fast[k] != ref[k]}
        if len(best) > 1:
            combo = dict(ref)
            for f in sorted(best, key=lambda f: f == "precision"):  # precision sets its engine
                combo.update(best[f])
            measure(combo, "combination")
            for f in best:
                measure({**combo, **{k: ref[k] for k in best[f]}}, "combination")
            judge()
        # the pick against the reference in alternating timed runs (A, B, A, B, ...)
        keep = [sc for sc in results.values() if sc["keeps"]]
        pick = min(keep, key=lambda sc: sc["s_per_mp"])["setting"]
        if name_of(pick) != "reference" and args.confirm:
            warm_up(ref)
            warm_up(pick)
            pairs = []
            for _ in range(args.confirm):
                a, _r, _o = timed(ref)
                b, _r, _o = timed(pick)
                pairs.append((a, b))
            confirm = {
                "reference_s": [round(a, 1) for a, _ in pairs],
                "pick_s": [round(b, 1) for _, b in pairs],
                "time_ratio_median": round(statistics.median(b / a for a, b in pairs), 3),
            }
    finally:
        client.close()
        cluster.close()

    rows = sorted(results.items(), key=lambda kv: kv[1]["s_per_mp"])
    print(f"\n{len(test)} held-out PV-in-HC images + {len(ood)} OOD images, {mp:.1f} MP; "
          f"reference = tile {tile[0]}, overlap 0.5, flips, M={m_all}, torch float32")  # fmt: skip
    head = (f"{'setting':44s} {'s/MP':>6s} {'speed':>6s} {'Dice':>7s} {'loss(hi)':>15s} "
            f"{'r(U,D)':>7s} {'rise(hi)':>15s} {'AUC U':>6s} {'AUC d':>6s} {'OOD fl':>6s} keeps")  # fmt: skip
    print(head)
    figures: dict = {"n_test": len(test), "n_ood": len(ood), "megapixels": round(mp, 2)}
    for key, sc in rows:
        r = _pearson(sc["u"], sc["dice"])
        print(f"{key:44s} {sc['s_per_mp']:6.2f} {base['s_per_mp'] / sc['s_per_mp']:5.2f}x "
              f"{np.mean(sc['dice']):7.4f} {sc['dice_loss']:+.4f}({sc['dice_loss_hi']:+.4f}) "
              f"{r:7.3f} {sc['r_rise']:+.3f}({sc['r_rise_hi']:+.3f})  {sc['auroc_U']:6.3f} "
              f"{sc['auroc_distance']:6.3f} {sc['ood_recall']:6.2f} "
              f"{'yes' if sc['keeps'] else 'no'}")  # fmt: skip
        for k in ("s_per_mp", "auroc_U", "auroc_distance", "ood_recall", "dice_loss",
                  "dice_loss_hi", "r_rise", "r_rise_hi"):  # fmt: skip
            figures[f"{key}.{k}"] = round(float(sc[k]), 4)
        figures[f"{key}.dice"] = round(float(np.mean(sc["dice"])), 4)
        figures[f"{key}.r_U_dice"] = round(r, 4)
        figures[f"{key}.keeps"] = bool(sc["keeps"])
    pick = min((kv for kv in rows if kv[1]["keeps"]), key=lambda kv: kv[1]["s_per_mp"])
    figures["pick"] = pick[0]
    figures["pick_speedup_single_run"] = round(base["s_per_mp"] / pick[1]["s_per_mp"], 3)
    for k, v in confirm.items():
        figures[f"pick_vs_reference.{k}"] = v
    print(f"\npick: {pick[0]} ({figures['pick_speedup_single_run']}x the reference's speed at "
          f"equal quality in the single runs; alternating runs: {confirm or 'not run'})")  # fmt: skip
    emit("frontier", figures, args.json)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
