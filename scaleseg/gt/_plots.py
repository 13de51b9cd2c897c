"""Plots of expert scores and inter-expert agreement (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_expert_scores", "plot_agreement"]


_TITLES = {"dice": "Dice (macro)", "map": "mAP (IoU 0.50-0.95)", "ap50": "AP50"}


def plot_expert_scores(scores, path: str | Path, metrics=("dice", "map")) -> Path:
    """Per-expert distributions of ``metrics`` (default Dice and mAP) against the estimated GT
    (box + points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    experts = sorted(scores["expert"].unique())
    n = len(metrics)
    fig, axes = plt.subplots(
        1, n, figsize=(2 + (1 + 1.1 * len(experts)) * n / 2, 3.6), sharey=True, squeeze=False
    )
    axes = axes[0]
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes, metrics):
        title = _TITLES.get(metric, metric)
        data = [scores.loc[scores["expert"] == e, metric].dropna().to_numpy() for e in experts]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(experts) + 1), experts, rotation=30, ha="right")
        for i, d in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.15, 0.15, d.size), d, s=8, alpha=0.6, color="k")
        ax.set_title(title)
        ax.set_ylim(0, 1.02)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("score vs estimated GT")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_agreement(matrix, path: str | Path, *, title: str = "Pairwise expert Dice") -> Path:
    """Heat map of a symmetric expert-by-expert agreement matrix (a DataFrame)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(matrix)
    fig, ax = plt.subplots(figsize=(1.6 + 0.7 * n, 1.2 + 0.6 * n))
    im = ax.imshow(matrix.to_numpy(), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(n), matrix.columns, rotation=30, ha="right")
    ax.set_yticks(range(n), matrix.index)
    for i in range(n):
        for j in range(n):
            v = matrix.iat[i, j]
            ax.text(
                j,
                i,
                f"{v:.2f}",
                ha="center",
                va="center",
                color="w" if v < 0.6 else "k",
                fontsize=8,
            )
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
