"""Writing result tables in the formats people open: Parquet, CSV and Excel."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["TABLE_FORMATS", "write_table"]

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
