"""The demo archive: synthetic images written as an OME-Zarr collection with experts and truth.

Layout::

    OUT/
      images/<name>.zarr          OME-Zarr image (c, y, x) uint16, 2 levels
        labels/expert_<k>         simulated expert masks (uint8, 0 = background)
        labels/truth              the true semantic mask
        labels/truth_instances    the true instance labels (uint32)
      demo.csv                    name, split (train / test / ood), ood kind, seed, snr, objects
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["write_demo_archive", "demo_plan"]


def demo_plan(n_images: int, n_ood: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """Names, seeds, splits and OOD kinds of the demo images (pure, deterministic).

    A third of the in-distribution images (at least one) form the test split.
    """
    from ._synthetic import OOD_KINDS

    n_test = max(1, n_images // 3) if n_images > 1 else 0
    plan = []
    for i in range(n_images):
        split = "test" if i >= n_images - n_test else "train"
        plan.append(
            {"name": f"syn_{i:04d}", "split": split, "ood": None, "seed": seed * 100_003 + i}
        )
    for j in range(n_ood):
        kind = OOD_KINDS[j % len(OOD_KINDS)]
        plan.append(
            {
                "name": f"ood_{kind}_{j:04d}",
                "split": "ood",
                "ood": kind,
                "seed": seed * 100_003 + 50_000 + j,
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

    from .._tasks import map_tasks
    from ..io._atomic import atomic_directory

    if n_images < 0 or n_ood < 0 or n_images + n_ood == 0:
        raise ValueError("the demo archive needs at least one image")
    out = Path(out)
    plan = demo_plan(n_images, n_ood, seed=seed)
    opts = {
        "shape": tuple(shape),
        "n_experts": n_experts,
        "chunks": tuple(min(c, s) for c, s in zip(chunks, shape)),
        "n_levels": n_levels,
        "ngff_version": ngff_version,
    }
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "images").mkdir()
        rows = map_tasks(
            _write_one, plan, client=client, progress=progress, root=str(tmp), opts=opts
        )
        table = pd.DataFrame(rows).sort_values("name").reset_index(drop=True)
        table.to_csv(tmp / "demo.csv", index=False)
    return {
        "out": str(out),
        "collection": str(out / "images"),
        "csv": str(out / "demo.csv"),
        "table": table,
    }
