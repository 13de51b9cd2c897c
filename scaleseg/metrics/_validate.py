"""Input checks shared by the metric kernels."""

from __future__ import annotations

import numpy as np

__all__ = ["as_label_array", "check_pair"]


def as_label_array(labels, *, name: str) -> np.ndarray:
    """Return ``labels`` as an integer ndarray, rejecting floats and negatives.

    Boolean arrays are accepted and read as 0/1 label maps.
    """
    arr = np.asarray(labels)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer label array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.size and arr.min() < 0:
        raise ValueError(f"{name} has negative labels (min {arr.min()}); labels must be >= 0")
    return arr


def check_pair(pred, ref) -> tuple[np.ndarray, np.ndarray]:
    """Validate a prediction/reference pair of label arrays of one shape."""
    pred = as_label_array(pred, name="pred")
    ref = as_label_array(ref, name="ref")
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref shapes differ: pred {pred.shape}, ref {ref.shape}")
    return pred, ref
