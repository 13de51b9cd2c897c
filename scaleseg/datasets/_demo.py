"""The demo archive: synthetic images written as an OME-Zarr collection with experts and truth.

Layout::

    OUT/
      images/<name>.zarr          OME-Zarr image (c, y, x) uint16, 2 levels
        labels/expert_<k>         simulated expert masks (uint8, 0 = background)
        labels/truth              the true semantic mask
        labels/truth_instances    the true instance labels (uint32)
      demo.csv                    name, split (train / test / ood), held_out (yes for test and
                                  ood: ``--where held_out=yes``), ood kind, seed, snr, objects
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEMO_CONFIG", "demo_config", "write_demo_archive", "demo_plan"]

#: The demo's run configuration (the CPU demo recipe; ``scripts/demo`` passes it as --config,
#: and the golden end-to-end test trains with it).
DEMO_CONFIG = Path(__file__).with_name("demo_config.json")


def demo_config():
    """The demo recipe as a :class:`~scaleseg.config.RunConfig`."""
    from ..config import load_config

    return load_config(DEMO_CONFIG)


def demo_plan(
    n_images: int,
    n_ood: int,
    *,
    seed: int = 0,
    snr: tuple[float, float] = (8.0, 8.0),
    test_fraction: float = 1 / 3,
) -> list[dict[str, Any]]:
    """Names, seeds, splits, SNRs and OOD kinds of the demo images (pure, deterministic).

    ``test_fraction`` of the in-distribution images (at least one) form the test split. SNRs
    are spread log-uniformly over ``snr`` (low, high), stratified within each split: the
    ``n`` images of a split get the quantiles ``(i + 1/2) / n`` in an order shuffled by
    ``seed``, so the train and the test images both span the range from hard to easy (as in
    a real archive) whatever the split sizes. OOD images get the range's geometric middle, so
    an OOD variant is judged by what makes it OOD, not by a lucky or unlucky SNR (the
    ``noise`` variant divides the SNR by about 8).
    """
    from ._synthetic import OOD_KINDS

    lo, hi = (float(v) for v in snr)
    if not 0 < lo <= hi:
        raise ValueError(f"snr must be (low, high) with 0 < low <= high, got {snr}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = max(1, int(n_images * test_fraction + 1e-9)) if n_images > 1 else 0

    def _snrs(n: int, stream: int) -> list[float]:
        order = np.random.default_rng([seed, stream]).permutation(n)
        q = (order + 0.5) / max(n, 1)
        return [round(float(lo * (hi / lo) ** v), 3) for v in q]

    n_train = n_images - n_test
    snr_id = _snrs(n_train, 1) + _snrs(n_test, 2)
    plan = []
    for i in range(n_images):
        split = "test" if i >= n_train else "train"
        plan.append(
            {
                "name": f"syn_{i:04d}",
                "split": split,
                "ood": None,
                "seed": seed * 100_003 + i,
                "snr": snr_id[i],
            }
        )
    snr_ood = round(float(np.sqrt(lo * hi)), 3)
    for j in range(n_ood):
        kind = OOD_KINDS[j % len(OOD_KINDS)]
        plan.append(
            {
                "name": f"ood_{kind}_{j:04d}",
                "split": "ood",
                "ood": kind,
                "seed": seed * 100_003 + 50_000 + j,
                "snr": snr_ood,
            }
        )
    return plan


def _write_one(entry: dict[str, Any], root: str, opts: dict[str, Any]) -> dict[str, Any]:
    from ..io import join_url, write_image, write_labels
    from ._synthetic import make_sample

    s = make_sample(
        entry["seed"],
        shape=opts["shape"],
        n_experts=opts["n_experts"],
        ood=entry["ood"],
        name=entry["name"],
        snr=entry.get("snr", 8.0),
    )
    url = join_url(root, "images", f"{entry['name']}.zarr")
    chunks = opts["chunks"]
    write_image(
        url,
        s.image,
        chunks=chunks,
        n_levels=opts["n_levels"],
        ngff_version=opts["ngff_version"],
        attrs={
            "synthetic": True,
            "split": entry["split"],
            "ood": entry["ood"],
            "seed": entry["seed"],
        },
    )
    for expert, mask in s.experts.items():
        write_labels(url, expert, mask, chunks=chunks, source={"expert": expert, "synthetic": True})
    write_labels(url, "truth", s.semantic, chunks=chunks, source={"synthetic": True})
    write_labels(url, "truth_instances", s.instances, chunks=chunks, source={"synthetic": True})
    return {
        "name": entry["name"],
        "split": entry["split"],
        "held_out": "no" if entry["split"] == "train" else "yes",
        "ood": entry["ood"] or "",
        "seed": entry["seed"],
        "snr": s.meta.get("snr"),
        "n_objects": int(s.instances.max()),
        "experts": ";".join(sorted(s.experts)),
    }


def write_demo_archive(
    out: str | Path,
    *,
    n_images: int = 12,
    n_ood: int = 4,
    shape: tuple[int, int] = (256, 256),
    n_experts: int = 3,
    seed: int = 0,
    ngff_version: str = "0.5",
    chunks: tuple[int, int] = (256, 256),
    n_levels: int = 2,
    snr: tuple[float, float] = (8.0, 8.0),
    test_fraction: float = 1 / 3,
    overwrite: bool = False,
    client: Any = None,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Write the synthetic demo archive (one task per image on ``client`` when given).

    Written to a temporary sibling and renamed when complete; an existing ``out`` is kept
    unless ``overwrite``.

    Returns
    -------
    dict
        ``out``, ``collection`` (the images folder), ``csv`` and ``table`` (a DataFrame).
    """
    import pandas as pd

    from ..executor import map_units
    from ..files import atomic_directory

    if n_images < 0 or n_ood < 0 or n_images + n_ood == 0:
        raise ValueError("the demo archive needs at least one image")
    out = Path(out)
    plan = demo_plan(n_images, n_ood, seed=seed, snr=snr, test_fraction=test_fraction)
    opts = {
        "shape": tuple(shape),
        "n_experts": n_experts,
        "chunks": tuple(min(c, s) for c, s in zip(chunks, shape)),
        "n_levels": n_levels,
        "ngff_version": ngff_version,
    }
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "images").mkdir()
        rows = map_units(
            _write_one, plan, stage="demo", client=client, progress=progress, threads=4,
            root=str(tmp), opts=opts,
        ).results  # fmt: skip
        table = pd.DataFrame(rows).sort_values("name").reset_index(drop=True)
        table.to_csv(tmp / "demo.csv", index=False)
    return {
        "out": str(out),
        "collection": str(out / "images"),
        "csv": str(out / "demo.csv"),
        "table": table,
    }
