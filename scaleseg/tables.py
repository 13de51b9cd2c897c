"""Writing result tables in the formats people open: Parquet, CSV and Excel."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["TABLE_FORMATS", "read_image_list", "write_table"]

TABLE_FORMATS = ("parquet", "csv", "xlsx")


def write_table(df, stem: str | Path, formats: Iterable[str] = ("parquet", "csv")) -> list[Path]:
    """Write ``df`` as ``<stem>.<format>`` for each format; returns the paths written.

    Parquet keeps dtypes (NaN stays NaN); CSV and Excel are for people.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        if fmt not in TABLE_FORMATS:
            raise ValueError(f"unknown table format {fmt!r}; use {', '.join(TABLE_FORMATS)}")
        path = stem.with_name(f"{stem.name}.{fmt}")
        if fmt == "parquet":
            df.to_parquet(path, index=False)
        elif fmt == "csv":
            df.to_csv(path, index=False)
        else:
            df.to_excel(path, index=False, engine="openpyxl")
        written.append(path)
    return written


def read_image_list(path: str | Path, *, where: str | None = None) -> list[str]:
    """Image names from a text file (one per line) or a CSV with a ``name`` or ``image``
    column -- the one image-list reader of every stage (``--images-file``, ``--test-images``,
    ``--annotated``).

    Parameters
    ----------
    path : path
    where : str, optional
        ``column=value``: keep only matching CSV rows (e.g. ``split=test``).

    Returns
    -------
    list of str
        In file order, duplicates removed.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image list not found")
    if path.suffix.lower() != ".csv":
        if where:
            raise ValueError(f"{path}: a filter ({where!r}) needs a CSV image list")
        return list(dict.fromkeys(s.strip() for s in path.read_text().splitlines() if s.strip()))
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    column = next((c for c in ("name", "image") if c in df.columns), None)
    if column is None:
        raise ValueError(f"{path}: CSV needs a 'name' or 'image' column (found {list(df.columns)})")
    if where:
        col, sep, val = where.partition("=")
        if not sep:
            raise ValueError(f"--where must be column=value, got {where!r}")
        if col not in df.columns:
            raise ValueError(f"{path}: no column {col!r} for the filter {where!r}")
        df = df[df[col].astype(str) == val]
    return list(dict.fromkeys(df[column].str.strip()))
