"""ONNX Runtime's CPU memory arena: seconds per window and the memory loaded members keep.

scaleseg keeps one graph loaded per member and window shape. With ORT's default arena per
session, each keeps its peak activations after every run, so members x shapes add up (9.5 GiB
in one predict worker on PV-in-HC with OOD images of many sizes, and the worker paused for
good). scaleseg now registers one arena for all sessions of a process. This measures the three
choices with ``--members`` sessions of the CPU-recipe member (Unet + ResNet10t, decoder 128 64
32 16 16, random weights) exported at ``--window``, run in turn as predict runs members: an arena
per session, one shared arena, no arena. Each setting runs in a fresh process (so its memory
figures are its own) with the same batch, one warm-up batch per member and 1 intra-op thread,
alternating (arena, shared, no arena, arena, ...) for ``--repeats`` rounds. Figures: the median
seconds per window, the median over rounds of the per-round ratio to the per-session arena, the
memory kept after the runs (RSS after minus RSS before the sessions were created) and the
process peak (VmHWM).

    python benchmarks/bench_ort_memory.py [--window 1024] [--batch 2] [--members 4]
                                          [--repeats 5] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import RECIPE_MEMBER, emit  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


#: ORT's default (an arena per session), one arena shared by the process's sessions
#: (scaleseg's session factory, as shipped), no arena
MODES = ("arena", "shared", "no_arena")

_CHILD = r"""
import json, os, sys, time
import numpy as np, onnxruntime as ort
path, mode, batch, window, runs, members = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page / 2**30
# VmHWM, not ru_maxrss: the latter survives exec, so it would report the parent's peak
hwm = lambda: next(int(l.split()[1]) for l in open("/proc/self/status")
                   if l.startswith("VmHWM")) / 2**20
from pathlib import Path
from scaleseg.models._engines import _onnxruntime  # in every mode: the same imports, peaks
x = np.random.default_rng(0).normal(size=(batch, 1, window, window)).astype(np.float32)
before = rss()
runs_ = []
for _ in range(members):
    if mode == "shared":  # what scaleseg ships: its own session factory
        runs_.append(_onnxruntime(Path(path), 1))
        continue
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_cpu_mem_arena = mode == "arena"
    s = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    runs_.append(lambda a, s=s: s.run(None, {"image": a}))
for run in runs_:
    run(x)  # warm-up: one batch per member
t0 = time.perf_counter()
for _ in range(runs):
    for run in runs_:
        run(x)
sec = (time.perf_counter() - t0) / (runs * members * batch)
print(json.dumps({"s_per_window": sec, "kept_gib": rss() - before, "peak_gib": hwm()}))
"""


def _export(tmp: Path, window: int) -> Path:
    from scaleseg.models import ModelSpec, build_model, load_graph_model, save_weights

    os.environ["SCALESEG_CACHE"] = str(tmp)  # graphs exported here, not into the user's cache
    model = build_model(ModelSpec.from_dict(RECIPE_MEMBER), seed=0).eval()
    sha = save_weights(model, tmp / "member.safetensors")
    g = load_graph_model("onnxruntime", model, weights_sha256=sha, tile_shape=(window, window),
                         in_channels=1, threads=1)  # fmt: skip
    return g.load((window, window))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="timed batches per process")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--members", type=int, default=4, help="sessions loaded, run in turn")
    ap.add_argument("--json")
    args = ap.parse_args()
    res: dict[str, list[dict]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="bench_ort_memory_") as tmp:
        path = _export(Path(tmp), args.window)
        for _ in range(args.repeats):
            for name in MODES:
                out = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        _CHILD,
                        str(path),
                        name,
                        str(args.batch),
                        str(args.window),
                        str(args.runs),
                        str(args.members),
                    ],  # fmt: skip
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                res[name].append(json.loads(out.strip().splitlines()[-1]))
    f: dict = {"window": args.window, "batch": args.batch, "members": args.members,
               "repeats": args.repeats}  # fmt: skip
    for name, rows in res.items():
        for k in ("s_per_window", "kept_gib", "peak_gib"):
            f[f"{name}_{k}"] = round(statistics.median(r[k] for r in rows), 4)
    for name in MODES[1:]:
        f[f"ratio_s_{name}_over_arena"] = round(
            statistics.median(
                b["s_per_window"] / a["s_per_window"] for a, b in zip(res["arena"], res[name])
            ),
            3,
        )
    emit("ort_memory", f, args.json)


if __name__ == "__main__":
    main()
