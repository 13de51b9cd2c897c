"""Reading what quality assurance works from: a prediction's images table, an evaluation's
per-image scores, image-name lists and known out-of-distribution labels (orchestration; tables
only, no pixels). Errors name the file and the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..tables import read_image_list

__all__ = [
    "OOD_SCORES",
    "ood_score_columns",
    "read_evaluation",
    "read_ood_labels",
    "read_prediction_table",
]

#: Candidate out-of-distribution scores of an images table (higher = more suspicious).
OOD_SCORES = ("U", "U_border", "U_novel", "U_epistemic", "ood_distance")
_FALSE = {"", "0", "false", "no", "none", "nan", "id", "in"}


def read_prediction_table(prediction: str | Path) -> pd.DataFrame:
    """The ``images.parquet`` (or ``images.csv``) of a ``scaleseg predict`` output folder, with
    the instance stage's per-image columns (``n_instances``, ...) when it ran.

    Raises
    ------
    FileNotFoundError
        No images table in ``prediction``.
    ValueError
        The table lacks the ``image``, ``status`` or ``U`` column, or names an image twice.

    The ``output`` column points into ``prediction/images/`` wherever the image is there, so a
    moved or copied prediction folder reads its own maps.
    """
    pred = Path(prediction)
    if not pred.is_dir():
        raise FileNotFoundError(f"{pred}: prediction folder not found")
    path = pred / "images.parquet"
    if path.is_file():
        table = pd.read_parquet(path)
    elif (pred / "images.csv").is_file():
        path = pred / "images.csv"
        table = pd.read_csv(path, keep_default_na=True)
    else:
        raise FileNotFoundError(
            f"{pred}: no images.parquet or images.csv (is it a `scaleseg predict` output?)"
        )
    missing = [c for c in ("image", "status", "U") if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    dup = table["image"][table["image"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{path}: image(s) listed twice: {', '.join(map(str, dup[:5]))}")
    extra = pred / "instances_images.parquet"  # the instance stage's per-image summary
    if extra.is_file():
        inst = pd.read_parquet(extra)
        table = table.drop(columns=[c for c in inst.columns if c != "image" and c in table])
        table = table.merge(inst, on="image", how="left")
    table = table.copy()
    table["image"] = table["image"].astype(str)
    for col in ("U_reason", "error"):
        if col not in table:
            table[col] = ""
        table[col] = table[col].fillna("").astype(str)
    # a prediction folder that was moved or copied: its maps are read from where it is now,
    # not from the location predict recorded (which may be gone, or hold another run)
    here = [str(pred / "images" / f"{n}.zarr") for n in table["image"]]
    exists = [Path(h).is_dir() for h in here]
    if "output" not in table:
        table["output"] = ""
    table["output"] = [h if e else o for h, e, o in zip(here, exists, table["output"])]
    return table


def ood_score_columns(table: pd.DataFrame) -> list[str]:
    """The OOD scores present in ``table`` with at least one defined value among ok images."""
    ok = table["status"] == "ok" if "status" in table else slice(None)
    return [
        c
        for c in OOD_SCORES
        if c in table.columns and pd.to_numeric(table.loc[ok, c], errors="coerce").notna().any()
    ]


def read_ood_labels(path: str | Path, images: list[str]) -> pd.DataFrame:
    """Known OOD labels of ``images`` from a CSV or a list of OOD image names.

    Rules, in order:

    * a CSV with an ``ood`` column (``demo.csv``): OOD where the value is set (not empty /
      0 / false / no); a text value is the OOD kind;
    * a CSV with a ``split`` column: OOD where ``split == "ood"``;
    * any other CSV or a text file: the images listed are OOD and every other image is
      in-distribution.

    With a CSV that has an ``ood`` or ``split`` column, images it does not list are unlabelled,
    and rows with ``split == "train"`` are unlabelled too: images the ensemble was trained on
    are no fair in-distribution sample.

    Returns
    -------
    pandas.DataFrame
        ``image``, ``ood`` (pandas boolean with NA = unlabelled), ``ood_kind`` (str,
        ``""`` for in-distribution or unlabelled).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: OOD label file not found")
    out = pd.DataFrame({"image": list(images)})
    out["ood"] = pd.array([pd.NA] * len(out), dtype="boolean")
    out["ood_kind"] = ""
    df = pd.read_csv(path, dtype=str, keep_default_na=False) if path.suffix == ".csv" else None
    if df is None or not ({"ood", "split"} & set(df.columns)):
        names = set(read_image_list(path))
        out["ood"] = pd.array(out["image"].isin(names).to_numpy(), dtype="boolean")
        out.loc[out["ood"].to_numpy(bool), "ood_kind"] = "ood"
        if not names & set(images):
            raise ValueError(f"{path}: none of the listed OOD images is in the prediction")
        return out
    col = next((c for c in ("name", "image") if c in df.columns), None)
    if col is None:
        raise ValueError(f"{path}: CSV needs a 'name' or 'image' column (found {list(df.columns)})")
    df = df.drop_duplicates(col, keep="last").set_index(col)
    if "ood" in df.columns:
        raw = df["ood"].str.strip()
        is_ood = ~raw.str.lower().isin(_FALSE)
        kind = raw.where(~raw.str.lower().isin({"1", "true", "yes"}), "ood")
    else:
        is_ood = df["split"].str.strip().str.lower() == "ood"
        kind = pd.Series("ood", index=df.index)
    if "split" in df.columns:
        is_ood = is_ood.astype(object).where(df["split"].str.strip().str.lower() != "train")
    known = out["image"].isin(df.index)
    if not known.any():
        raise ValueError(f"{path}: none of its images is in the prediction")
    vals = out["image"].map(is_ood)
    out["ood"] = pd.array([None if pd.isna(v) else bool(v) for v in vals], dtype="boolean")
    flag = out["ood"].fillna(False).to_numpy(bool)
    out.loc[flag, "ood_kind"] = out.loc[flag, "image"].map(kind).to_numpy()
    return out


def read_evaluation(
    evaluation: str | Path, *, metric: str, reference: str | None = None
) -> tuple[pd.DataFrame, str]:
    """Per-image scores of one reference from a ``scaleseg evaluate`` output.

    Parameters
    ----------
    evaluation : path
        The evaluation folder (``per_image.parquet`` or ``per_image.csv``) or such a file.
    metric : str
        The score column (``dice``, ``map``, ``ap50``, ...).
    reference : str, optional
        Which reference when the table holds several (default: the only one).

    Returns
    -------
    per_image : pandas.DataFrame
        One row per scored image (index: image name) with the evaluation's columns.
    reference : str

    Raises
    ------
    FileNotFoundError, ValueError
        No table, no such metric, several references and none chosen, or an unknown one.
    """
    p = Path(evaluation)
    if p.is_dir():
        for name in ("per_image.parquet", "per_image.csv"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise FileNotFoundError(f"{evaluation}: no per_image.parquet or per_image.csv")
    elif not p.is_file():
        raise FileNotFoundError(f"{evaluation}: evaluation not found")
    df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    for col in ("image", metric):
        if col not in df.columns:
            scores = [c for c in ("dice", "iou", "map", "ap50", "f1", "pq", "aji") if c in df]
            raise ValueError(f"{p}: no column {col!r} (scores here: {', '.join(scores) or 'none'})")
    if "missing" in df.columns:
        df = df[df["missing"].isna() | (df["missing"].astype(str) == "")]
    refs = list(dict.fromkeys(df["reference"].astype(str))) if "reference" in df else ["-"]
    if reference is None:
        if len(refs) > 1:
            raise ValueError(f"{p}: several references ({', '.join(refs)}); choose one")
        reference = refs[0] if refs else "-"
    elif reference not in refs:
        raise ValueError(f"{p}: no reference {reference!r} (found: {', '.join(refs)})")
    if "reference" in df:
        df = df[df["reference"].astype(str) == reference]
    df = df.assign(image=df["image"].astype(str)).drop_duplicates("image").set_index("image")
    df[metric] = pd.to_numeric(df[metric], errors="coerce").astype(np.float64)
    return df, reference
