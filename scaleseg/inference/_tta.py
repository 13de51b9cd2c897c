"""Test-time augmentation (kernels): the dihedral group on the last two axes, exactly invertible.

A transform is ``(transpose, flip_y, flip_x)`` applied in that order; its inverse undoes the
flips, then the transpose. Vector fields ``(dy, dx)`` (e.g. cellpose flows) also change their
components: a y-flip negates ``dy``, an x-flip negates ``dx``, a transpose swaps them.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Transform", "TTA_SETS", "tta_transforms", "apply", "invert", "invert_vectors"]


class Transform(NamedTuple):
    transpose: bool = False
    flip_y: bool = False
    flip_x: bool = False

    @property
    def name(self) -> str:
        parts = [n for n, on in zip(("transpose", "flip_y", "flip_x"), self) if on]
        return "+".join(parts) or "identity"


_IDENTITY = Transform()
_FLIPS = (
    Transform(),
    Transform(flip_x=True),
    Transform(flip_y=True),
    Transform(flip_y=True, flip_x=True),
)
_DIHEDRAL = _FLIPS + tuple(Transform(True, fy, fx) for fy, fx in ((0, 0), (0, 1), (1, 0), (1, 1)))

TTA_SETS = {"none": (_IDENTITY,), "flips": _FLIPS, "dihedral": _DIHEDRAL}


def tta_transforms(name: str) -> tuple[Transform, ...]:
    """The transforms of a TTA set: ``none`` (1), ``flips`` (4, the default) or ``dihedral`` (8)."""
    try:
        return TTA_SETS[name]
    except KeyError:
        raise ValueError(f"unknown TTA set {name!r}; use one of {', '.join(TTA_SETS)}") from None


def _flip(x, dims):
    if hasattr(x, "flip"):  # torch
        return x.flip(dims)
    import numpy as np

    return np.flip(x, axis=dims)


def apply(x, t: Transform):
    """Apply ``t`` to the last two axes of a torch tensor or numpy array."""
    if t.transpose:
        x = x.transpose(-2, -1) if hasattr(x, "flip") else x.swapaxes(-2, -1)
    dims = tuple(d for d, on in ((-2, t.flip_y), (-1, t.flip_x)) if on)
    return _flip(x, dims) if dims else x


def invert(y, t: Transform):
    """Map a prediction made on ``apply(x, t)`` back to the frame of ``x``."""
    dims = tuple(d for d, on in ((-2, t.flip_y), (-1, t.flip_x)) if on)
    if dims:
        y = _flip(y, dims)
    if t.transpose:
        y = y.transpose(-2, -1) if hasattr(y, "flip") else y.swapaxes(-2, -1)
    return y


def invert_vectors(v, t: Transform):
    """Invert ``t`` for a vector field ``v`` of shape ``(..., 2, H, W)`` with components (dy, dx)."""
    v = invert(v, t)
    sign_y = -1.0 if t.flip_y else 1.0
    sign_x = -1.0 if t.flip_x else 1.0
    dy, dx = v[..., 0, :, :] * sign_y, v[..., 1, :, :] * sign_x
    if t.transpose:
        dy, dx = dx, dy
    if hasattr(v, "flip"):
        import torch

        return torch.stack([dy, dx], dim=-3)
    import numpy as np

    return np.stack([dy, dx], axis=-3)
