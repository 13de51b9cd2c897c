"""Figures and written outputs of an evaluation.

Figures use matplotlib's object API (``matplotlib.figure.Figure``, rendered with Agg by
``savefig``), so no pyplot state or interactive backend is touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "OUTPUT_STEMS",
    "check_output_dir",
    "plot_expert_range",
    "plot_scores",
    "write_evaluation",
]

#: Files an evaluation writes (tables get one file per format).
OUTPUT_STEMS = ("per_image", "summary", "experts", "scores.png", "expert_range.png")
_PLOT_METRICS = ("dice", "iou", "map", "ap50", "f1", "pq", "aji")


def _scored(per_image):
    return per_image[per_image["missing"].isna()] if "missing" in per_image else per_image


def plot_scores(per_image, path: str | Path, *, metrics: Iterable[str] = _PLOT_METRICS) -> Path:
    """Box and strip plot of the per-image scores, one box per metric and reference.

    Parameters
    ----------
    per_image : pandas.DataFrame
        The ``per_image`` table of :func:`~scaleseg.evaluation.evaluate`.
    path : path
        The PNG to write.
    metrics : sequence of str, optional
        Columns to plot; those absent from the table are skipped.

    Returns
    -------
    Path
    """
    from matplotlib.figure import Figure

    df = _scored(per_image)
    metrics = [m for m in metrics if m in df.columns]
    refs = list(dict.fromkeys(df["reference"]))
    groups = 1 + 0.25 * (len(refs) - 1)
    fig = Figure(figsize=(min(14.0, 2.0 + 1.1 * len(metrics) * groups), 4))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    width = 0.8 / max(1, len(refs))
    for j, ref in enumerate(refs):
        sub = df[df["reference"] == ref]
        color = f"C{j % 10}"
        for i, m in enumerate(metrics):
            v = sub[m].to_numpy(dtype=np.float64)
            v = v[np.isfinite(v)]
            if not v.size:
                continue
            x = i - 0.4 + width * (j + 0.5)
            ax.boxplot(
                [v],
                positions=[x],
                widths=width * 0.8,
                showfliers=False,
                medianprops={"color": color},
            )
            jitter = rng.uniform(-width / 4, width / 4, v.size)
            ax.scatter(x + jitter, v, s=10, color=color, alpha=0.7, label=ref if i == 0 else None)
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("score per image")
    ax.set_title(f"{df['image'].nunique()} images")
    if len(refs) > 1:
        ax.legend(title="reference", fontsize="small", loc="lower left")  # "best" is slow
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_expert_range(per_image, experts, path: str | Path, *, metric: str) -> Path:
    """Per image: the experts' score range (bar), each expert (dot) and the prediction.

    Parameters
    ----------
    per_image : pandas.DataFrame
        The ``per_image`` table, with ``expert_min`` / ``expert_max``.
    experts : pandas.DataFrame
        The ``experts`` table of :func:`~scaleseg.evaluation.evaluate`.
    path : path
        The PNG to write.
    metric : str
        The headline metric (``dice`` or ``map``).

    Returns
    -------
    Path
    """
    from matplotlib.figure import Figure

    df = _scored(per_image)
    df = df[df["n_experts"] > 0]
    refs = list(dict.fromkeys(df["reference"]))
    n_img = df["image"].nunique()
    fig = Figure(figsize=(min(16.0, 4 + 0.3 * n_img), 2.6 * len(refs) + 0.6))
    for j, ref in enumerate(refs):
        ax = fig.add_subplot(len(refs), 1, j + 1)
        sub = df[df["reference"] == ref].sort_values(metric, kind="stable")
        x = np.arange(len(sub))
        ax.vlines(x, sub["expert_min"], sub["expert_max"], color="0.7", lw=6, label="expert range")
        ex = experts[experts["reference"] == ref]
        pos = dict(zip(sub["image"], x))
        ax.scatter(ex["image"].map(pos), ex[metric], s=12, color="0.35", zorder=2, label="expert")
        ax.scatter(x, sub[metric], s=30, color="C3", marker="D", zorder=3, label="prediction")
        counts = sub["relative_performance"].value_counts()
        ax.set_title(
            f"reference {ref}: " + "; ".join(f"{n} {label}" for label, n in counts.items()),
            fontsize="small",
        )
        ax.set_ylabel(metric)
        ax.set_xticks(x, sub["image"], rotation=90, fontsize="x-small")
        if len(sub) > 60:
            ax.set_xticks([])
        if j == 0:
            ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def check_output_dir(out_dir: str | Path, *, overwrite: bool) -> Path:
    """Refuse an existing, non-empty output folder unless ``overwrite``.

    Raises
    ------
    FileExistsError
        ``out_dir`` is a file, or a non-empty folder and ``overwrite`` is false.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: output folder exists and is not empty (use --overwrite)")
    return out


def write_evaluation(
    result: dict[str, Any],
    out_dir: str | Path,
    formats: Iterable[str] = ("parquet", "csv"),
    *,
    overwrite: bool = False,
) -> dict[str, list[Path]]:
    """Write the tables and figures of :func:`~scaleseg.evaluation.evaluate` into a folder.

    Writes ``per_image.<fmt>``, ``summary.<fmt>``, ``experts.<fmt>`` (when experts were
    scored), ``scores.png`` and ``expert_range.png`` (when experts were scored). With
    ``overwrite``, earlier files of these names are removed first; other files stay.

    Parameters
    ----------
    result : dict
        The return value of :func:`~scaleseg.evaluation.evaluate`.
    out_dir : path
        A local folder; created if needed.
    formats : sequence of {"parquet", "csv", "xlsx"}
    overwrite : bool, optional
        Allow a non-empty ``out_dir``.

    Returns
    -------
    dict of str to list of Path
        The files written, by output name.
    """
    from scaleseg.tables import TABLE_FORMATS, write_table

    formats = list(formats)
    bad = [f for f in formats if f not in TABLE_FORMATS]
    if bad or not formats:
        raise ValueError(f"unknown table format(s) {bad}; use {', '.join(TABLE_FORMATS)}")
    out = check_output_dir(out_dir, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    for stem in OUTPUT_STEMS:
        for old in [out / stem, *(out / f"{stem}.{f}" for f in TABLE_FORMATS)]:
            if old.is_file():
                old.unlink()
    written = {
        "per_image": write_table(result["per_image"], out / "per_image", formats),
        "summary": write_table(result["summary"], out / "summary", formats),
    }
    per_image = result["per_image"]
    if len(_scored(per_image)):
        written["scores"] = [plot_scores(per_image, out / "scores.png")]
    experts = result.get("experts")
    if experts is not None and len(experts):
        written["experts"] = write_table(experts, out / "experts", formats)
        if "n_experts" in per_image and (per_image["n_experts"] > 0).any():
            metric = result.get("headline", "dice")
            path = plot_expert_range(per_image, experts, out / "expert_range.png", metric=metric)
            written["expert_range"] = [path]
    return written
