"""Writing result tables in the formats people open: Parquet, CSV and Excel; and the
partitioned tables whose size grows with the archive (one Parquet part per image).

A partitioned table is a folder ``<stem>/`` of ``part-<image>.parquet`` files, each written
atomically by the worker that finished the image, every part with an ``image`` column and the
same columns. ``pandas.read_parquet(folder)``, ``dask.dataframe.read_parquet(folder)`` and
DuckDB's ``read_parquet('<folder>/*.parquet')`` read it whole; :func:`read_parts` reads only the
images and columns asked for and :func:`iter_parts` streams it with bounded memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

__all__ = [
    "CSV_ROW_LIMIT",
    "TABLE_FORMATS",
    "iter_parts",
    "part_path",
    "read_image_list",
    "read_parts",
    "write_part",
    "write_parts_csv",
    "write_table",
]

TABLE_FORMATS = ("parquet", "csv", "xlsx")
CSV_ROW_LIMIT = 1_000_000
"""A partitioned table gets a CSV copy without being asked up to this many rows."""


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


def part_path(folder: str | Path, image: str) -> Path:
    """The part file of one image in a partitioned table folder."""
    return Path(folder) / f"part-{image}.parquet"


def write_part(df, folder: str | Path, image: str) -> Path:
    """Write one image's rows as its part of a partitioned table, atomically (a reader or a
    resumed run never sees half a part)."""
    from .files import atomic_write

    path = part_path(folder, image)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def _part_files(folder: Path, images: Sequence[str] | None) -> list[Path]:
    if images is None:
        return sorted(folder.glob("part-*.parquet"))
    return [p for p in (part_path(folder, n) for n in images) if p.is_file()]


def read_parts(
    folder: str | Path, *, images: Sequence[str] | None = None, columns: Sequence[str] | None = None
):
    """Rows of a partitioned table (one frame), only of ``images`` and ``columns`` when given
    (only those part files are opened). A missing folder is a ``FileNotFoundError``."""
    import pandas as pd

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such table folder")
    frames = [pd.read_parquet(p, columns=columns) for p in _part_files(folder, images)]
    if not frames:
        first = next(folder.glob("part-*.parquet"), None)  # keep the columns of an empty answer
        empty = pd.read_parquet(first, columns=columns).iloc[:0] if first else pd.DataFrame()
        return empty
    return pd.concat(frames, ignore_index=True)


def iter_parts(
    folder: str | Path, *, columns: Sequence[str] | None = None, batch_rows: int = 1_000_000
) -> Iterator:
    """Stream a partitioned table as frames of at most about ``batch_rows`` rows (parts are
    read in name order; a part larger than that is one frame): memory stays bounded by one
    batch whatever the archive."""
    import pandas as pd

    batch, rows = [], 0
    for path in _part_files(Path(folder), None):
        df = pd.read_parquet(path, columns=columns)
        batch.append(df)
        rows += len(df)
        if rows >= batch_rows:
            yield pd.concat(batch, ignore_index=True)
            batch, rows = [], 0
    if batch:
        yield pd.concat(batch, ignore_index=True)


def write_parts_csv(folder: str | Path, path: str | Path) -> Path:
    """One CSV of a partitioned table, written part by part (bounded memory), atomically."""
    from .files import atomic_write

    def write(tmp: str) -> None:
        header = True
        with open(tmp, "w", newline="") as fh:
            for df in iter_parts(folder):
                df.to_csv(fh, index=False, header=header)
                header = False

    return atomic_write(path, write)
