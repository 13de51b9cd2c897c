"""Benchmark: mean average precision of a 2048 x 2048 label pair with ~2000 objects.

Run from the repository root::

    python benchmarks/bench_metrics.py [--repeat 5] [--json out.json]

The reference is ~2000 random disks; the prediction is the reference shifted,
with every label renamed (non-consecutive ids), 5 % of objects dropped, 5 %
eroded, 5 % dilated and 100 false positives added. Timing is on one thread
(OMP/MKL/OpenBLAS threads are pinned to 1 before numpy is imported). Target:
``mean_average_precision`` < 2 s.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from scaleseg.metrics import (  # noqa: E402
    instance_iou,
    instance_scores,
    mean_average_precision,
)

TARGET_S = 2.0
SHAPE = (2048, 2048)


def _draw_disks(labels: np.ndarray, n: int, rng: np.random.Generator, first_id: int) -> None:
    """Draw n random disks into labels in place (later disks overwrite earlier)."""
    h, w = labels.shape
    for i in range(n):
        r = int(rng.integers(6, 16))
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        y0, y1 = max(cy - r, 0), min(cy + r + 1, h)
        x0, x1 = max(cx - r, 0), min(cx + r + 1, w)
        yy, xx = np.ogrid[y0 - cy : y1 - cy, x0 - cx : x1 - cx]
        view = labels[y0:y1, x0:x1]
        view[yy * yy + xx * xx <= r * r] = first_id + i


def make_pair(seed: int = 0, n_objects: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (reference, prediction) instance label maps, uint32."""
    rng = np.random.default_rng(seed)
    ref = np.zeros(SHAPE, dtype=np.uint32)
    _draw_disks(ref, n_objects, rng, first_id=1)
    ids = np.unique(ref)[1:]
    pred = np.roll(ref, (1, 2), axis=(0, 1))
    # Rename every object to a random non-consecutive id.
    lut = np.zeros(int(ref.max()) + 1, dtype=np.uint32)
    lut[ids] = rng.choice(10 * ids.size, size=ids.size, replace=False).astype(np.uint32) + 1
    pred = lut[pred]
    pids = lut[ids]
    drop, erode, dilate = np.split(rng.permutation(pids)[: 3 * (pids.size // 20)], 3)
    pred[np.isin(pred, drop)] = 0
    eroded = ndi.grey_erosion(pred, size=(3, 3))
    sel = np.isin(pred, erode)
    pred[sel] = eroded[sel]
    dilated = ndi.grey_dilation(pred, size=(5, 5))
    grow = (pred == 0) & np.isin(dilated, dilate)
    pred[grow] = dilated[grow]
    _draw_disks(pred, 100, rng, first_id=10 * ids.size + 10)
    return ref, pred


def _best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions (best is kept)")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON to PATH")
    parser.add_argument(
        "--compare-cellpose",
        action="store_true",
        help="also time cellpose.metrics.average_precision and check it agrees",
    )
    args = parser.parse_args(argv)

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the environment variables above already pin the pools
        limiter = contextlib.nullcontext()
    else:
        limiter = threadpool_limits(limits=1)
    with limiter:
        figures = _run(args)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=2)
    return figures


def _run(args) -> dict:
    ref, pred = make_pair()
    n_ref = int(np.unique(ref).size - 1)
    n_pred = int(np.unique(pred).size - 1)
    t_map = _best_of(lambda: mean_average_precision(pred, ref), args.repeat)
    t_iou = _best_of(lambda: instance_iou(pred, ref), args.repeat)
    t_all = _best_of(lambda: instance_scores(pred, ref), args.repeat)
    scores = instance_scores(pred, ref)
    figures = {
        "shape": list(SHAPE),
        "n_ref": n_ref,
        "n_pred": n_pred,
        "map": scores["map"],
        "ap50": scores["ap50"],
        "mean_average_precision_s": t_map,
        "instance_iou_s": t_iou,
        "instance_scores_s": t_all,
        "target_s": TARGET_S,
        "ratio_to_target": t_map / TARGET_S,
        "repeat": args.repeat,
        "threads": 1,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(f"label pair {SHAPE[0]}x{SHAPE[1]}: {n_ref} reference, {n_pred} predicted objects")
    print(
        f"mean_average_precision: {t_map:.3f} s (ratio to {TARGET_S:.0f} s target: {t_map / TARGET_S:.3f})"
    )
    print(f"instance_iou (dense):   {t_iou:.3f} s")
    print(f"instance_scores (all):  {t_all:.3f} s")
    print(f"mAP = {scores['map']:.4f}, AP50 = {scores['ap50']:.4f}")
    if args.compare_cellpose:
        from cellpose.metrics import average_precision as cp_ap
        from skimage.segmentation import relabel_sequential

        ref_c = relabel_sequential(ref)[0].astype(np.int64)
        pred_c = relabel_sequential(pred)[0].astype(np.int64)
        thresholds = list(scores["thresholds"])
        t_cp = _best_of(lambda: cp_ap(ref_c, pred_c, threshold=thresholds), 1)
        cp_map = float(np.mean(cp_ap(ref_c, pred_c, threshold=thresholds)[0]))
        figures.update(cellpose_average_precision_s=t_cp, cellpose_map=cp_map)
        print(
            f"cellpose average_precision: {t_cp:.3f} s, mAP = {cp_map:.4f} (speed-up {t_cp / t_map:.1f}x)"
        )
    return figures


if __name__ == "__main__":
    main()
