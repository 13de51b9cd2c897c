"""Package defaults in dask.config (``scaleseg:`` key), loaded without writing user files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.config
import yaml

__all__ = ["load_defaults", "get_setting"]

_DEFAULTS = Path(__file__).resolve().parent.parent / "scaleseg.yaml"
_loaded = False


def load_defaults() -> None:
    """Register scaleseg's defaults with dask.config (user config and env vars still win)."""
    global _loaded
    if _loaded:
        return
    with _DEFAULTS.open() as fh:
        dask.config.update_defaults(yaml.safe_load(fh))
    _loaded = True


def get_setting(key: str, default: Any = None) -> Any:
    """``dask.config.get("scaleseg.<key>")`` with the package defaults loaded."""
    load_defaults()
    return dask.config.get(f"scaleseg.{key}", default=default)
