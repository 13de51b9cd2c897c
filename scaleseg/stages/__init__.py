"""Stage runs: one library entry point per stage, each owning its output folder.

Re-exported lazily by :mod:`scaleseg` (``scaleseg.train(...)``, ``scaleseg.predict(...)``).
"""

from ._train import TrainResult, train

__all__ = ["TrainResult", "train"]
