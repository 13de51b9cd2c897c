"""Package defaults in dask.config (``scaleseg:`` key), loaded without writing user files.

Recipes (``deploy/**.yaml``) are plain dask configuration. :func:`load_recipe` parses one,
checks the ``scaleseg.cluster`` section against the known keys and refuses settings that make
dask import a Python object named in the file (preload modules, security loaders, classes):
a recipe chooses values, never code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask.config
import yaml

__all__ = ["apply_recipe", "check_cluster_settings", "get_setting", "load_defaults", "load_recipe"]

_DEFAULTS = Path(__file__).resolve().parent.parent / "scaleseg.yaml"
_loaded = False

#: the keys of ``scaleseg.cluster`` (nested sections list their own keys)
CLUSTER_KEYS: dict[str, Any] = {
    "profile": None,
    "n-workers": None,
    "threads-per-worker": None,
    "torch-threads": None,
    "malloc": {"mmap-threshold": None, "trim-threshold": None},
    "memory-limit": None,
    "dashboard-address": None,
    "slurm": {"adapt": {"minimum": None, "maximum": None, "wait-count": None, "interval": None}},
    "kubernetes": {
        "spec": None,
        "namespace": None,
        "adapt": {"minimum": None, "maximum": None},
    },
}

# dask / distributed settings whose value is imported and run (a module, a class, a function)
_CODE_KEYS = ("preload", "preload-argv", "security-loader", "plugins", "job-cls", "cluster-cls")


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


def _canon(key: Any) -> str:
    return str(key).replace("_", "-").lower()


def check_cluster_settings(section: Any, *, where: str = "scaleseg.cluster") -> None:
    """Raise ValueError naming the first unknown key of a ``scaleseg.cluster`` mapping."""

    def walk(node: Any, schema: dict[str, Any], path: str) -> None:
        if not isinstance(node, Mapping):
            raise ValueError(f"{path}: expected a mapping, got {type(node).__name__}")
        for key, value in node.items():
            name = _canon(key)
            if name not in schema:
                raise ValueError(
                    f"{path}.{key}: unknown setting (known: {', '.join(sorted(schema))})"
                )
            if isinstance(schema[name], dict) and value is not None:
                walk(value, schema[name], f"{path}.{key}")

    walk(section, CLUSTER_KEYS, where)


def _check_no_code(node: Any, path: str, source: str) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            name = _canon(key)
            if name in _CODE_KEYS or name.endswith("-class"):
                raise ValueError(
                    f"{source}: {path}{key} names Python code to import; recipes may only "
                    "set values (put such settings in your own dask config if you trust them)"
                )
            _check_no_code(value, f"{path}{key}.", source)


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Parse a deploy recipe (dask configuration YAML) and validate it.

    Returns
    -------
    dict
        The configuration, ready for ``dask.config.set``. It must name
        ``scaleseg.cluster.profile``.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing or unreadable file, YAML errors, unknown ``scaleseg.cluster`` keys, settings
        that name Python code, or no profile.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such cluster recipe")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a YAML mapping, got {type(data).__name__}")
    _check_no_code(data, "", str(path))
    section = (data.get("scaleseg") or {}).get("cluster")
    if not section or not section.get("profile"):
        raise ValueError(f"{path}: the recipe sets no scaleseg.cluster.profile")
    check_cluster_settings(section, where=f"{path}: scaleseg.cluster")
    kube = section.get("kubernetes") or {}
    if kube.get("spec") and not Path(kube["spec"]).is_absolute():
        kube["spec"] = str((path.parent / kube["spec"]).resolve())  # relative to the recipe
    return data


def _flatten(node: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def apply_recipe(recipe: Mapping[str, Any]):
    """``dask.config.set`` of a recipe's leaf values (merged into the defaults, never replacing a
    whole section); use it as a context manager, or call it to apply for the process."""
    load_defaults()
    return dask.config.set(_flatten(recipe))
