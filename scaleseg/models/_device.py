"""The one device picker of scaleseg."""

from __future__ import annotations

__all__ = ["pick_device"]


def pick_device(requested: str | None = None):
    """``torch.device(requested)``, or CUDA when available, else the CPU."""
    import torch

    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
