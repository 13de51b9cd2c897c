"""Side-by-side ranking power of image-score variants: Pearson r with Dice on evaluated images.

    python scripts/u_variants.py PRED EVAL [SPLIT_CSV]

PRED is a `scaleseg predict` output (uncertainty maps and semantic labels are read from it),
EVAL a `scaleseg evaluate` output (per_image Dice), SPLIT_CSV restricts to rows with
split=test. Variants of the image score, all from the stored maps:

  U             mean u over predicted foreground (deepflash2's score, what predict records)
  U_border      mean u over foreground pixels within 2 px of an object border
  U_object      mean over predicted objects of each object's mean u
  U_epistemic   mean of the epistemic part over predicted foreground
  epi_share     U_epistemic / U
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.stats import pearsonr, spearmanr

from scaleseg import io


def variants(url: Path) -> dict[str, float]:
    u = io.open_image(url).values  # (3, y, x): u, epistemic, aleatoric
    lab = io.open_labels(url, "semantic").values
    fg = lab > 0
    if not fg.any():
        return {}
    border = fg & ~ndi.binary_erosion(fg, iterations=2)
    objects, n = ndi.label(fg)
    per_obj = ndi.mean(u[0], objects, np.arange(1, n + 1))
    out = {
        "U": float(u[0][fg].mean()),
        "U_border": float(u[0][border].mean()) if border.any() else float("nan"),
        "U_object": float(np.mean(per_obj)),
        "U_epistemic": float(u[1][fg].mean()),
    }
    out["epi_share"] = out["U_epistemic"] / out["U"]
    return out


def main(pred: Path, ev: Path, split: Path | None) -> pd.DataFrame:
    dice = pd.read_parquet(ev / "per_image.parquet").set_index("image")["dice"]
    names = list(dice.dropna().index)
    if split is not None:
        s = pd.read_csv(split, keep_default_na=False, dtype=str)
        names = [n for n in names if n in set(s.loc[s["split"] == "test", "name"])]
    rows = {n: variants(pred / "images" / f"{n}.zarr") for n in names}
    t = pd.DataFrame(rows).T
    t["dice"] = dice.reindex(t.index)
    res = []
    for col in ("U", "U_border", "U_object", "U_epistemic", "epi_share"):
        ok = t[[col, "dice"]].dropna()
        res.append(
            {
                "score": col,
                "n": len(ok),
                "pearson_r": pearsonr(ok[col], ok["dice"]).statistic,
                "spearman_rho": spearmanr(ok[col], ok["dice"]).statistic,
            }
        )
    return pd.DataFrame(res), t


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:]]
    table, per_image = main(args[0], args[1], args[2] if len(args) > 2 else None)
    print(per_image.round(4).to_string())
    print(table.round(3).to_string(index=False))
