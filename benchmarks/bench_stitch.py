"""Label stitching benchmark: stage timings and per-block peak memory, big vs small image.

An 8192 x 8192 binary mask of ~50 000 random disks is labelled as 2048 x 2048 blocks with a
halo of 64 (scipy.ndimage.label on core + halo, provisional 64-bit ids, face strips), merged
with ``mode="touch"`` and relabelled block by block through each block's own table slice;
the result is checked against whole-image labelling. The same runs on a 2048 x 2048 image
with the same object density. Peak memory of the per-block stage (tracemalloc: numpy
allocations, not scipy's internal line buffers) must follow the block size, not the object
count: the printed ratio big / small should stay near the ratio of the largest core + halo
regions, (2048 + 2 * 64)**2 / 2048**2 = 1.13 (the small image is one block without halo);
per pixel of that region it should be about 1.

    python benchmarks/bench_stitch.py [--json results/stitch.json] [--size 8192] [--objects 50000]
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402


def random_disks(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Binary mask of ``n`` disks (radius 4..9) stamped with numpy fancy indexing."""
    mask = np.zeros((size, size), bool)
    radii = rng.integers(4, 10, n)
    cy, cx = rng.integers(0, size, n), rng.integers(0, size, n)
    for r in np.unique(radii):
        dy, dx = np.nonzero(np.hypot(*np.mgrid[-r : r + 1, -r : r + 1]) <= r)
        sel = radii == r
        ys = np.clip(cy[sel, None] + dy - r, 0, size - 1)
        xs = np.clip(cx[sel, None] + dx - r, 0, size - 1)
        mask[ys, xs] = True
    return mask


def run(size: int, objects: int, block: int, halo: int) -> dict:
    from scaleseg.instances._stitch import (
        block_lookup,
        face_strips,
        match_neighbours,
        merge_pairs,
        provisional_ids,
        relabel,
    )

    mask = random_disks(size, objects, np.random.default_rng(0))
    grid = [(y, x) for y in range(0, size, block) for x in range(0, size, block)]
    stored, faces = [], []
    t_label = t_faces = t_write = t_relabel = 0.0
    peak = ext_px = 0
    tracemalloc.start()
    for y0, x0 in grid:  # one unit of work per block: label, provisional ids, faces, "write"
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        y1, x1 = min(y0 + block, size), min(x0 + block, size)
        ey0, ex0 = max(0, y0 - halo), max(0, x0 - halo)
        ext = mask[ey0 : min(size, y1 + halo), ex0 : min(size, x1 + halo)]
        t = time.perf_counter()
        local = ndi.label(ext)[0]
        prov = provisional_ids(local, len(stored))
        del local
        t_label += time.perf_counter() - t
        t = time.perf_counter()
        core = (slice(y0 - ey0, y1 - ey0), slice(x0 - ex0, x1 - ex0))
        faces.append(face_strips(prov, core=core, halo=halo, origin=(ey0, ex0), mode="touch"))
        t_faces += time.perf_counter() - t
        t = time.perf_counter()
        stored.append(prov[core].copy())  # stands in for the chunk-aligned write to storage
        del prov
        t_write += time.perf_counter() - t
        peak = max(peak, tracemalloc.get_traced_memory()[1] - base)
        ext_px = max(ext_px, ext.size)
    tracemalloc.stop()

    t = time.perf_counter()
    index = {g: n for n, g in enumerate(grid)}
    pairs = [np.zeros((0, 2), np.uint64)]
    for n, (y0, x0) in enumerate(grid):
        for axis, key in ((0, (y0 + block, x0)), (1, (y0, x0 + block))):
            if key in index:
                pairs.append(match_neighbours(faces[n], faces[index[key]], axis=axis, mode="touch"))
    t_match = time.perf_counter() - t
    t = time.perf_counter()
    ids_sorted, final = merge_pairs(
        np.concatenate(pairs), np.concatenate([f["ids"] for f in faces])
    )
    tables = [block_lookup(ids_sorted, final, n) for n in range(len(grid))]
    t_merge = time.perf_counter() - t

    out = np.zeros((size, size), np.uint32)
    for n, (y0, x0) in enumerate(grid):  # each block reads only its own table slice
        t = time.perf_counter()
        final_core = relabel(stored[n], *tables[n])
        t_relabel += time.perf_counter() - t
        out[y0 : y0 + block, x0 : x0 + block] = final_core

    whole, count = ndi.label(mask)
    fg = whole != 0
    check = np.unique(np.stack([whole[fg], out[fg]], 1), axis=0)
    exact = bool(len(check) == count == out.max() and len(np.unique(check[:, 1])) == count)
    mpix = size * size / 1e6
    return {
        "objects": int(count),
        "blocks": len(grid),
        "pairs": int(sum(len(p) for p in pairs)),
        "table_bytes_max_per_block": int(max(a.nbytes + b.nbytes for a, b in tables)),
        "label_s": round(t_label, 3),
        "faces_s": round(t_faces, 3),
        "store_core_s": round(t_write, 3),
        "match_s": round(t_match, 4),
        "merge_s": round(t_merge, 4),
        "relabel_s": round(t_relabel, 3),
        "face_bytes_per_block": int(
            np.mean(
                [
                    sum(s[k].labels.nbytes for s in f.values() if isinstance(s, dict) for k in s)
                    for f in faces
                ]
            )
        ),
        "per_block_peak_mib": round(peak / 2**20, 1),
        "per_block_peak_bytes_per_ext_pixel": round(peak / ext_px, 1),
        "postprocess_mpix_per_s": round(mpix / (t_label + t_relabel), 1),
        "equals_whole_image": exact,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--objects", type=int, default=50_000)
    ap.add_argument("--block", type=int, default=2048)
    ap.add_argument("--halo", type=int, default=64)
    args = ap.parse_args()
    small_size = args.block
    small_objects = round(args.objects * (small_size / args.size) ** 2)
    figures = {}
    for tag, size, n in (("big", args.size, args.objects), ("small", small_size, small_objects)):
        for k, v in run(size, n, args.block, args.halo).items():
            figures[f"{tag}_{k}"] = v
    figures["per_block_peak_ratio_big_over_small"] = round(
        figures["big_per_block_peak_mib"] / figures["small_per_block_peak_mib"], 2
    )
    figures["per_block_peak_per_ext_pixel_ratio"] = round(
        figures["big_per_block_peak_bytes_per_ext_pixel"]
        / figures["small_per_block_peak_bytes_per_ext_pixel"],
        2,
    )
    figures["object_ratio_big_over_small"] = round(
        figures["big_objects"] / figures["small_objects"], 1
    )
    emit("stitch", figures, args.json)


if __name__ == "__main__":
    main()
