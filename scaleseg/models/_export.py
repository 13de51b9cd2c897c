"""Export a trained model for deployment without scaleseg: TorchScript (always) and ONNX (when the
optional ``onnx`` and ``onnxscript`` packages are installed)."""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..files import atomic_write
from ._weights import file_sha256

__all__ = ["export_onnx", "export_torchscript"]

_ONNX_PACKAGES = ("onnx", "onnxscript")


def _example(model: nn.Module, example_shape: Sequence[int] | None) -> torch.Tensor:
    if example_shape is None:
        # the first convolution of the encoder reads the image
        first = next(
            (m for m in getattr(model, "encoder", model).modules() if isinstance(m, nn.Conv2d)),
            None,
        )
        if first is None:
            raise ValueError("cannot infer the input channels; pass example_shape=(1, C, H, W)")
        example_shape = (1, first.in_channels, 64, 64)
    shape = tuple(int(s) for s in example_shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(
            f"example_shape must be (B, C, H, W) of positive ints, got {example_shape}"
        )
    param = next(model.parameters(), None)
    kw = {} if param is None else {"dtype": param.dtype, "device": param.device}
    gen = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=gen).to(**kw)


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    example_shape: Sequence[int] | None = None,
    atol: float = 1e-5,
) -> str:
    """Save `model` (in eval mode) as a TorchScript archive and check it against eager outputs.

    Scripting is tried first (shape-generic); if it fails the model is traced on the example.
    TorchScript is deprecated upstream (torch emits a FutureWarning, silenced here) but remains the
    format ``torch.jit.load`` and libtorch read without Python or scaleseg.

    Parameters
    ----------
    model : torch.nn.Module
        Model to export; it is put in eval mode (and left so).
    path : str or os.PathLike
        Destination (conventionally ``*.pt``), written atomically.
    example_shape : sequence of 4 ints, optional
        ``(B, C, H, W)`` of the check (and tracing) input; default ``(1, C, 64, 64)`` with C read
        from the model's first convolution.
    atol : float, default 1e-5
        Largest absolute difference allowed between exported and eager outputs.

    Returns
    -------
    str
        SHA-256 of the written file.

    Raises
    ------
    RuntimeError
        If the exported module's output differs from the eager output by more than `atol`.
    """
    path = Path(path)
    model.eval()
    x = _example(model, example_shape)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.\w+` is deprecated", category=FutureWarning
        )
        try:
            exported = torch.jit.script(model)
        except Exception:  # noqa: BLE001 - fall back to tracing on any scripting failure
            exported = torch.jit.trace(model, x)
        expected = model(x)
        got = exported(x)
        diff = (got - expected).abs().max().item()
        if not diff <= atol:
            raise RuntimeError(f"TorchScript output differs from eager by {diff:.3g} > {atol}")
        atomic_write(path, lambda tmp: torch.jit.save(exported, tmp))
    return file_sha256(path)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    example_shape: Sequence[int] | None = None,
    opset_version: int | None = None,
) -> str:
    """Save `model` (in eval mode) as ONNX with dynamic batch, height and width.

    Needs the optional packages ``onnx`` and ``onnxscript`` (torch's exporter), which scaleseg
    does not depend on.

    Parameters
    ----------
    model : torch.nn.Module
        Model to export; it is put in eval mode (and left so).
    path : str or os.PathLike
        Destination (conventionally ``*.onnx``), written atomically.
    example_shape : sequence of 4 ints, optional
        ``(B, C, H, W)`` of the example input; default ``(1, C, 64, 64)``.
    opset_version : int, optional
        ONNX opset; torch's default when None.

    Returns
    -------
    str
        SHA-256 of the written file.

    Raises
    ------
    RuntimeError
        If ``onnx`` or ``onnxscript`` is not installed.
    """
    model.eval()
    dim = torch.export.Dim.AUTO
    kwargs = {} if opset_version is None else {"opset_version": opset_version}
    write_onnx(model, path, _example(model, example_shape), output_names=("logits",),
               dynamic_shapes=({0: dim, 2: dim, 3: dim},), **kwargs)  # fmt: skip
    return file_sha256(path)


def write_onnx(
    module: nn.Module, path: str | os.PathLike, x: torch.Tensor, *, output_names, dynamic_shapes,
    **kwargs,
) -> Path:  # fmt: skip
    """Export ``module`` (eval mode) with torch's dynamo exporter to ``path``, atomically: one
    input ``image`` like ``x``, outputs named ``output_names``, one self-contained file.

    Raises RuntimeError naming ``onnx`` / ``onnxscript`` when they are not installed."""
    missing = [p for p in _ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise RuntimeError(
            f"the ONNX export needs the package(s) {', '.join(missing)} (not installed); "
            "install them with: pip install 'scaleseg[engines]'"
        )
    path = Path(path)

    def write(tmp: str) -> None:
        torch.onnx.export(
            module,
            (x,),
            tmp,
            input_names=["image"],
            output_names=list(output_names),
            dynamic_shapes=dynamic_shapes,
            dynamo=True,
            external_data=False,
            verbose=False,
            **kwargs,
        )

    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        atomic_write(path, write)
    return path
