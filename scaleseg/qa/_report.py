"""The QA report: figures (PNG) and one self-contained HTML page (images embedded as base64,
no external scripts or styles, so it opens offline and can be mailed as one file).

Figures use matplotlib's object API (``matplotlib.figure.Figure`` rendered by Agg).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["plot_u_histogram", "plot_u_vs_score", "write_html_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em;
color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.2em .5em;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}.flag{color:#b00;font-weight:600}.note{color:#666;font-size:.85em}
.grid{display:flex;flex-wrap:wrap;gap:.6em}.card{border:1px solid #ddd;padding:.3em;
font-size:.8em;max-width:590px}.card img{max-width:100%}
"""


def plot_u_histogram(
    table: pd.DataFrame,
    path: str | Path,
    *,
    umin: float | None = None,
    bins: int = 40,
    score: str = "U",
) -> Path:
    """Histogram of U over the predicted images, Umin as a line; OOD / test images stacked.

    Parameters
    ----------
    table : pandas.DataFrame
        The QA images table (``U``, ``status``, optional ``ood`` and ``qa_test``).
    path : path
        The PNG to write.
    umin : float, optional
        Drawn when finite.
    score : str
        The image-score column (``U`` or ``U_border``).
    """
    from matplotlib.figure import Figure

    ok = table[table["status"] == "ok"]
    u = pd.to_numeric(ok[score], errors="coerce")
    fig = Figure(figsize=(6.5, 3.4))
    ax = fig.add_subplot()
    groups = [("all images", np.ones(len(ok), bool), "C0")]
    if "ood" in ok and ok["ood"].notna().any():
        o = ok["ood"].fillna(False).to_numpy(bool)
        groups = [("in-distribution / unlabelled", ~o, "C0"), ("known OOD", o, "C3")]
    finite = u[np.isfinite(u)]
    edges = np.linspace(0, max(float(finite.max()) if len(finite) else 1.0, 1e-3) * 1.05, bins + 1)
    data = [u[sel & np.isfinite(u).to_numpy()].to_numpy() for _, sel, _ in groups]
    ax.hist(
        data, bins=edges, stacked=True, color=[g[2] for g in groups], label=[g[0] for g in groups]
    )
    if umin is not None and np.isfinite(umin):
        ax.axvline(umin, color="k", ls="--", lw=1.2, label=f"Umin = {umin:.3f}")
    n_nan = int(u.isna().sum())
    ax.set_xlabel(f"image uncertainty {score}")
    ax.set_ylabel("images")
    ax.set_title(f"{len(ok)} images" + (f" ({n_nan} with {score} undefined)" if n_nan else ""))
    ax.legend(fontsize="small", loc="upper right")  # "best" is slow and warns
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_u_vs_score(
    table: pd.DataFrame,
    path: str | Path,
    *,
    metric: str,
    tau: float,
    umin: float | None,
    r: float,
    n: int,
    score: str = "U",
) -> Path:
    """U (or the ``score`` column) against the evaluation score on the test set (deepflash2
    Fig. 4a), with τ and Umin."""
    from matplotlib.figure import Figure

    test = table[table["qa_test"].astype(bool)]
    fig = Figure(figsize=(5.2, 4.0))
    ax = fig.add_subplot()
    below = test[metric] < tau
    ax.scatter(test.loc[~below, score], test.loc[~below, metric], s=18, color="C0", label="passed")
    ax.scatter(
        test.loc[below, score], test.loc[below, metric], s=22, color="C3", label=f"{metric} < τ"
    )
    ax.axhline(tau, color="0.5", ls=":", lw=1, label=f"τ = {tau:g}")
    if umin is not None and np.isfinite(umin):
        ax.axvline(umin, color="k", ls="--", lw=1.2, label=f"Umin = {umin:.3f}")
    ax.set_xlabel(f"image uncertainty {score}")
    ax.set_ylabel(metric)
    r_text = f"{r:.3f}" if np.isfinite(r) else "undefined"
    ax.set_title(f"test set: Pearson r = {r_text} (n = {n})", fontsize=10)
    ax.legend(fontsize="small", loc="lower left")  # higher U, lower metric: lower right
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v)


def _table_html(df: pd.DataFrame, *, max_rows: int | None = None) -> str:
    shown = df if max_rows is None else df.head(max_rows)
    head = "".join(
        f'<th class="{"l" if not pd.api.types.is_numeric_dtype(df[c]) else ""}">'
        f"{html.escape(str(c))}</th>"
        for c in df.columns
    )
    body = []
    for _, row in shown.iterrows():
        cells = []
        for c in df.columns:
            left = not pd.api.types.is_numeric_dtype(df[c])
            cls = ' class="l"' if left else ""
            text = html.escape(_fmt(row[c]))
            if c == "review" and row[c] is True:
                text = '<span class="flag">yes</span>'
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = ""
    if max_rows is not None and len(df) > max_rows:
        more = f'<p class="note">{len(df) - max_rows} more rows in images.csv</p>'
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def write_html_report(
    path: str | Path,
    *,
    table: pd.DataFrame,
    info: dict[str, Any],
    figures: dict[str, Path],
    thumbnails: list[tuple[dict[str, Any], Path | None]],
    ood: pd.DataFrame,
    classes: pd.DataFrame,
    prediction: str,
    max_rows: int = 500,
) -> Path:
    """Write ``report.html``: summary, figures, OOD detection, per-class table, the most
    uncertain images as thumbnails and the review list (at most ``max_rows`` rows)."""
    e = html.escape
    umin = info.get("umin")
    sc = str(info.get("score", "U"))
    umin_text = (
        f"{umin:.4f} ({info.get('umin_source')})"
        if umin is not None and np.isfinite(umin)
        else f"unknown — {info.get('umin_reason', '')}"
    )
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>scaleseg QA report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>scaleseg quality assurance</h1>",
        f"<p>Prediction: <code>{e(str(prediction))}</code></p><table>",
    ]
    thr = info.get("distance_threshold")
    thr_text = (
        f"ood_distance ≥ {thr:.4g} ({info.get('distance_threshold_source')})"
        if thr is not None and np.isfinite(thr)
        else "off (the ensemble has no calibrated threshold)"
    )
    summary = [
        ("images", info.get("n_images")),
        ("failed predictions", info.get("n_failed")),
        ("flagged for review", info.get("n_review")),
        (f"… by the U rule ({sc} ≥ Umin)", info.get("n_review_u")),
        ("… by the distance rule", info.get("n_review_distance")),
        ("flag unknown (no Umin, distance below threshold)", info.get("n_unknown")),
        ("Umin", umin_text),
        ("distance rule", thr_text),
        (f"τ ({info.get('metric')})", info.get("tau")),
        ("test images (for Umin)", info.get("n_test")),
        (f"test images with {info.get('metric')} < τ", info.get("n_below")),
        (f"Pearson r, {sc} vs score (test)", info.get("pearson_r")),
    ]
    parts += [
        f'<tr><th class="l">{e(k)}</th><td class="l">{e(_fmt(v))}</td></tr>' for k, v in summary
    ]
    parts.append("</table>")
    parts.append(f"<h2>Image uncertainty {e(sc)}</h2>")
    parts += [_img(figures[k], k) for k in ("u_histogram", "u_vs_score") if k in figures]
    if not len(ood):
        parts.append('<p class="note">No OOD labels given (--ood-labels).</p>')
    else:
        parts.append("<h2>Out-of-distribution detection</h2>")
        parts.append(
            '<p class="note">AUROC 0.5 and AUPRC = prevalence are chance level; '
            "higher score = more suspicious, undefined = most suspicious. The row "
            "<i>review</i> scores the review flag itself; flagged_ood is the share of OOD "
            "images flagged (at Umin for U, at the distance threshold for ood_distance), "
            "flagged_in the number of in-distribution images flagged.</p>"
        )
        parts.append(_table_html(ood))
    if len(classes):
        parts.append("<h2>Per class</h2>")
        parts.append(_table_html(classes))
    parts.append(f"<h2>The {len(thumbnails)} most uncertain images</h2><div class='grid'>")
    for row, png in thumbnails:
        caption = (
            f"#{_fmt(row.get('qa_rank'))} <b>{e(str(row['image']))}</b> "
            f"{e(sc)}={_fmt(row.get(sc))}"
            f" {e(str(row.get('review_reason', '')))}"
        )
        pic = _img(png, str(row["image"])) if png is not None else "<p>(no thumbnail)</p>"
        parts.append(f"<div class='card'>{pic}<br>{caption}</div>")
    parts.append("</div>")
    cols = [
        c
        for c in (
            "qa_rank",
            "image",
            "U",
            *([sc] if sc != "U" else []),
            "U_epistemic",
            "ood_distance",
            info.get("metric"),
            "foreground_fraction",
            "ood_kind",
            "review",
            "review_rule",
            "review_score",
            "review_reason",
        )
        if c in table.columns
    ]
    flagged = table[table["review"].fillna(False).astype(bool)]
    parts.append(f"<h2>Flagged for review ({len(flagged)})</h2>")
    if "review_score" in flagged and len(flagged):  # furthest past a threshold first
        flagged = flagged.sort_values("review_score", ascending=False, kind="stable")
        parts.append(
            "<p class='note'>Sorted by review_score: max(U / Umin, distance / threshold), "
            "how far past its rule's threshold an image lies (1 = at the threshold).</p>"
        )
    parts.append(_table_html(flagged[cols], max_rows=max_rows) if len(flagged) else "<p>none</p>")
    parts.append(
        "<p class='note'>Full table: images.csv / images.parquet next to this "
        "report; OOD scores: ood.csv.</p></body></html>"
    )
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
