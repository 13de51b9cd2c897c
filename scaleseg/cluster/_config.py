"""Package defaults in dask.config (``scaleseg:`` key), loaded without writing user files.

Recipes (``deploy/**.yaml``) are plain dask configuration. :func:`load_recipe` parses one,
checks the ``scaleseg.cluster`` section against the known keys and refuses settings that make
dask import a Python object named in the file (preload modules, security loaders, classes):
a recipe chooses values, never code.
"""

from __future__ import annotations

import importlib
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

# sections whose defaults a library registers with dask.config when it is imported: imported
# before a recipe is applied, so that leaving a recipe's context (``dask.config.set`` undoes
# what it added) never removes the library's defaults with it (a second session in a notebook)
_LIBRARY_DEFAULTS = {"jobqueue": "dask_jobqueue", "kubernetes": "dask_kubernetes"}

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


def _read_recipe(path: Path) -> dict[str, Any]:
    """One recipe file, parsed and checked (no code, known ``scaleseg.cluster`` keys)."""
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
    if section:
        check_cluster_settings(section, where=f"{path}: scaleseg.cluster")
        kube = section.get("kubernetes") or {}
        if kube.get("spec") and not Path(kube["spec"]).is_absolute():
            kube["spec"] = str((path.parent / kube["spec"]).resolve())  # relative to the recipe
    return data


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, value by value (a list or a scalar replaces the old one)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_recipe(path: str | Path, *overrides: str | Path) -> dict[str, Any]:
    """Parse a deploy recipe (dask configuration YAML) and validate it.

    Parameters
    ----------
    path : str or Path
        The recipe, e.g. ``deploy/slurm/jobqueue.yaml``.
    *overrides : str or Path
        Site files laid over it in order, value by value (a list such as
        ``job-extra-directives`` is replaced whole): the recipe stays as shipped and a small
        file holds what differs at a site (partition, cores, memory, GPUs). They are checked
        the same way and need not name a profile.

    Returns
    -------
    dict
        The configuration, ready for ``dask.config.set``. It must name
        ``scaleseg.cluster.profile`` (in the recipe or an override).

    Raises
    ------
    FileNotFoundError, ValueError
        Missing or unreadable file, YAML errors, unknown ``scaleseg.cluster`` keys, settings
        that name Python code, or no profile.
    """
    paths = [Path(p) for p in (path, *overrides)]
    data: dict[str, Any] = {}
    for p in paths:
        data = _merge(data, _read_recipe(p))
    section = (data.get("scaleseg") or {}).get("cluster") or {}
    if not section.get("profile"):
        where = paths[0] if len(paths) == 1 else " + ".join(map(str, paths))
        raise ValueError(f"{where}: the recipe sets no scaleseg.cluster.profile")
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
    for section, module in _LIBRARY_DEFAULTS.items():
        if section in recipe:  # its defaults registered before the recipe is laid over them
            try:
                importlib.import_module(module)
            except ImportError:
                pass  # the profile that needs it says how to install it
    return dask.config.set(_flatten(recipe))
