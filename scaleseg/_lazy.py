"""Lazy package namespaces: a subpackage's public names are imported on first access.

Importing one module of a package runs the package's ``__init__``; with eager re-exports, a
pure kernel (``scaleseg.inference._tiling``) would drag in dask, zarr and torch through its
siblings. Packages therefore declare their exports as ``{name: submodule}`` and resolve them
here, on first use (the pattern of scientific-python's ``lazy_loader``, SPEC 1).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

__all__ = ["attach"]


def attach(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package`` whose public ``name`` lives in the
    (relative) module ``exports[name]``, e.g. ``{"plan_tiles": "._tiling"}``."""
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        try:
            module = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(import_module(module, package), name)
        import sys

        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__, names
