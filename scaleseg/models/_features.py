"""Pooled encoder features of segmentation models (kernel, torch): the input of the
feature-distance out-of-distribution score."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "has_encoder",
    "deepest_map",
    "pool_deepest",
    "encoder_features",
    "capture_encoder_features",
]


def has_encoder(model) -> bool:
    """Whether ``model`` is an smp-style model with an ``encoder`` sub-module (TorchScript
    exports and plain callables are not)."""
    import torch

    return isinstance(getattr(model, "encoder", None), torch.nn.Module)


def deepest_map(encoder_output):
    """The deepest feature map ``(B, D, h, w)`` of an encoder's output (smp encoders return
    one map per stage, deepest last)."""
    return encoder_output[-1] if isinstance(encoder_output, list | tuple) else encoder_output


def pool_deepest(encoder_output):
    """Average-pool the deepest feature map of an encoder's output.

    Parameters
    ----------
    encoder_output : tensor (B, D, h, w) or list of tensors
        smp encoders return one map per stage, deepest last.

    Returns
    -------
    (B, D) float32 tensor
    """
    return deepest_map(encoder_output).float().mean(dim=(-2, -1))


def encoder_features(model, x):
    """Pooled deepest encoder features of the batch ``x`` ``(B, C, H, W)``: ``(B, D)``
    (the encoder alone runs)."""
    if not has_encoder(model):
        raise TypeError(f"{type(model).__name__} has no encoder sub-module")
    return pool_deepest(model.encoder(x))


@contextmanager
def capture_encoder_features(model) -> Iterator[list]:
    """While active, every forward pass of ``model`` in this thread appends its deepest encoder
    feature map ``(B, D, h, w)`` (float32; :func:`pool_deepest` pools it) to the yielded list
    (a forward hook: no extra computation).
    Captures in other threads sharing the model (a worker with several threads) do not see
    this thread's passes."""
    tid = threading.get_ident()
    if hasattr(model, "feature_store"):  # a graph engine's member: the features are an output
        store: list = []
        model.feature_store[tid] = store
        try:
            yield store
        finally:
            model.feature_store.pop(tid, None)
        return
    if not has_encoder(model):
        raise TypeError(f"{type(model).__name__} has no encoder sub-module")
    store = []

    def hook(_m, _i, out):
        if threading.get_ident() == tid:
            store.append(deepest_map(out).float())

    handle = model.encoder.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()
