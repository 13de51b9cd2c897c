"""Helpers shared by the benchmark scripts: machine info and JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def machine() -> dict:
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            mem = round(int(fh.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "memory_gib": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def emit(name: str, figures: dict, json_path: str | None) -> None:
    """Print figures one per line and optionally write them (with machine info) as JSON."""
    for k, v in figures.items():
        print(f"{name}.{k} = {v}")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(
            json.dumps({"benchmark": name, "machine": machine(), "figures": figures}, indent=2)
            + "\n"
        )
