"""The layer contract (DESIGN.md, "Layers"), checked two ways: import-linter's static graph (the
contracts in pyproject.toml), and a fresh interpreter per kernel module -- which also sees the
imports a package's ``__init__`` triggers, invisible to import-linter."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
KERNELS = CONFIG["contracts"][0]["source_modules"]
FORBIDDEN_AT_RUNTIME = ("dask", "distributed", "zarr", "ome_zarr", "scaleseg.io._read",
                        "scaleseg.cluster", "scaleseg.cli", "scaleseg.runs", "scaleseg.stages")  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_import_linter_contracts_are_kept():
    from importlinter.cli import lint_imports

    cwd = os.getcwd()
    os.chdir(ROOT)  # the contracts live in pyproject.toml
    try:
        assert lint_imports() == 0
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("module", KERNELS)
def test_kernel_imports_no_orchestration_at_run_time(module):
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        f"print(','.join(m for m in {FORBIDDEN_AT_RUNTIME!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(), check=True)  # fmt: skip
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"
