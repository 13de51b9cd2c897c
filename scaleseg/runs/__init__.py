"""Runs as objects: the output-folder rules, the run lock, the run spec and the stage run.

Every stage entry point (:func:`scaleseg.predict`, :func:`scaleseg.train`, ...) opens one
:class:`StageRun` on its output folder; see :mod:`scaleseg.runs._stage` for the rules.
"""

from ._guard import OutputError, check_output, check_paths
from ._lock import LOCK_FILE, RunLock, RunLockedError
from ._spec import SPEC_FILE, RunSpec, build_spec, image_selection, read_spec, spec_differences
from ._stage import StageRun

__all__ = [
    "LOCK_FILE",
    "SPEC_FILE",
    "OutputError",
    "RunLock",
    "RunLockedError",
    "RunSpec",
    "StageRun",
    "build_spec",
    "check_output",
    "check_paths",
    "image_selection",
    "read_spec",
    "spec_differences",
]
