"""Review records of the triage notebook: a CSV beside (never inside) the outputs.

Every call appends rows ``image, status, note, reviewer, time``; the latest row of an image
is its current status, so the file is a complete, append-only history.
"""

from __future__ import annotations

import csv
import datetime as _dt
import getpass
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

__all__ = ["REVIEW_STATUSES", "read_reviews", "record_review"]

#: Statuses a review row may have.
REVIEW_STATUSES = ("reviewed", "excluded", "annotate")
_FIELDS = ["image", "status", "note", "reviewer", "time"]


def record_review(
    path: str | Path,
    images: Iterable[str] | str,
    *,
    status: str,
    note: str = "",
    reviewer: str | None = None,
) -> Path:
    """Append a review decision for ``images`` to the CSV ``path`` (created with a header).

    Parameters
    ----------
    path : path
        The review CSV.
    images : str or iterable of str
        Image names.
    status : {"reviewed", "excluded", "annotate"}
    note : str, optional
    reviewer : str, optional
        Default: the login name.
    """
    if status not in REVIEW_STATUSES:
        raise ValueError(f"status must be one of {REVIEW_STATUSES}, got {status!r}")
    names = [images] if isinstance(images, str) else list(images)
    if not names:
        raise ValueError("no images to record")
    path = Path(path)
    if path.exists():
        with path.open(newline="") as fh:
            header = next(csv.reader(fh), [])
        if header != _FIELDS:
            raise ValueError(f"{path}: not a review CSV (header {header}, expected {_FIELDS})")
    if reviewer is None:
        try:
            reviewer = getpass.getuser()
        except (KeyError, OSError):
            reviewer = ""
    when = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(_FIELDS)
        for name in names:
            w.writerow([name, status, note, reviewer, when])
    return path


def read_reviews(path: str | Path) -> pd.DataFrame:
    """The current review status per image (the latest row of each); empty when no file."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=_FIELDS)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in _FIELDS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a review CSV (missing {', '.join(missing)})")
    return df.drop_duplicates("image", keep="last").reset_index(drop=True)[_FIELDS]
