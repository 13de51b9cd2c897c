"""Weight files that load without executing code: safetensors, or torch checkpoints read with
``torch.load(weights_only=True)``; SHA-256 checksums; atomic writes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from ..files import atomic_write

__all__ = [
    "WeightsError",
    "cached_weights_file",
    "check_state_dict",
    "file_sha256",
    "load_weights",
    "read_weights",
    "save_weights",
]

_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")
_SUMMARY_ITEMS = 5


class WeightsError(ValueError):
    """A weight file is unreadable, fails its checksum, or does not fit the model."""


def file_sha256(path: str | os.PathLike) -> str:
    """Return the SHA-256 hex digest of a file.

    Parameters
    ----------
    path : str or os.PathLike
        File to hash (read in 1 MiB pieces).

    Returns
    -------
    str
        64 lowercase hexadecimal characters.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _state_dict_of(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> dict:
    if isinstance(model_or_state_dict, nn.Module):
        sd = model_or_state_dict.state_dict()
    elif isinstance(model_or_state_dict, Mapping):
        sd = dict(model_or_state_dict)
    else:
        raise TypeError(
            f"expected a torch.nn.Module or a state dict, got {type(model_or_state_dict).__name__}"
        )
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"state dict entry {k!r} is a {type(v).__name__}, not a tensor")
        # clone: safetensors refuses tensors that share storage (tied weights, views)
        out[str(k)] = v.detach().to("cpu").contiguous().clone()
    return out


def save_weights(
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    metadata: Mapping[str, str] | None = None,
) -> str:
    """Write a model's state dict as a safetensors file, atomically.

    The file is written to a temporary name in the same directory and moved into place with
    ``os.replace``, so readers never see a partial file.

    Parameters
    ----------
    model_or_state_dict : torch.nn.Module or mapping of str to torch.Tensor
        What to save (tensors are copied to CPU).
    path : str or os.PathLike
        Destination, conventionally ``*.safetensors``; parent directories are created.
    metadata : mapping of str to str, optional
        Free-form text stored in the safetensors header.

    Returns
    -------
    str
        SHA-256 of the written file.

    Raises
    ------
    ValueError
        If `path` has a torch-checkpoint suffix (``.pt``, ``.pth``, ``.bin``, ``.ckpt``): this
        function writes safetensors only.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix.lower() in _TORCH_SUFFIXES:
        raise ValueError(f"{path}: save_weights writes safetensors; use a .safetensors name")
    sd = _state_dict_of(model_or_state_dict)
    meta = None if metadata is None else dict(metadata)
    atomic_write(path, lambda tmp: save_file(sd, tmp, metadata=meta), fsync=True)
    return file_sha256(path)


def _is_torch_file(path: Path) -> bool:
    if path.suffix.lower() in _TORCH_SUFFIXES:
        return True
    if path.suffix.lower() == ".safetensors":
        return False
    with open(path, "rb") as fh:
        head = fh.read(4)
    # torch zip archive, or a legacy pickle (protocol 2+ starts with 0x80)
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def read_weights(
    path: str | os.PathLike, *, expected_sha256: str | None = None
) -> dict[str, torch.Tensor]:
    """Read a state dict from a file without executing code.

    Parameters
    ----------
    path : str or os.PathLike
        A safetensors file, or a torch checkpoint (``.pt``/``.pth``/...) readable with
        ``torch.load(weights_only=True)``. A checkpoint whose tensors sit under ``"state_dict"``,
        ``"model_state_dict"`` or ``"model"`` is unwrapped.
    expected_sha256 : str, optional
        Checksum the file must have.

    Returns
    -------
    dict of str to torch.Tensor
        The tensors, on CPU.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    WeightsError
        On a checksum mismatch, or if the file is unreadable, truncated, not a weight file, or a
        checkpoint that would need code execution to load.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    if expected_sha256 is not None:
        actual = file_sha256(path)
        if actual.lower() != expected_sha256.strip().lower():
            raise WeightsError(
                f"{path}: checksum mismatch: expected sha256 {expected_sha256}, file has {actual}"
            )
    try:
        if _is_torch_file(path):
            obj = torch.load(path, map_location="cpu", weights_only=True)
        else:
            from safetensors.torch import load_file

            obj = load_file(path, device="cpu")
    except Exception as e:  # noqa: BLE001 - every reader failure is reported the same way
        raise WeightsError(
            f"{path}: cannot read weights ({type(e).__name__}: {str(e)[:300]})"
        ) from e
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and all(
                isinstance(v, torch.Tensor) for v in inner.values()
            ):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise WeightsError(f"{path}: not a state dict of named tensors ({type(obj).__name__})")
    return dict(obj)


def _summarise(items: list[str]) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > _SUMMARY_ITEMS else ""
    return ", ".join(items[:_SUMMARY_ITEMS]) + more


def check_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = "state dict"
) -> None:
    """Raise `WeightsError` unless `state_dict` has exactly the keys and shapes of `model`."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_summarise(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_summarise(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({_summarise(shapes)})")
    if problems:
        raise WeightsError(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems))


def load_weights(
    model: nn.Module, path: str | os.PathLike, *, expected_sha256: str | None = None
) -> nn.Module:
    """Load a weight file into `model` (in place), verifying its checksum first.

    Parameters
    ----------
    model : torch.nn.Module
        Model whose state dict the file must match exactly (keys and shapes).
    path : str or os.PathLike
        Safetensors file or torch checkpoint; see `read_weights`.
    expected_sha256 : str, optional
        Checksum the file must have (as returned by `save_weights`).

    Returns
    -------
    torch.nn.Module
        `model`, with the loaded weights.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    WeightsError
        On a checksum mismatch, an unreadable file, or missing/unexpected keys or wrong shapes.
    """
    sd = read_weights(path, expected_sha256=expected_sha256)
    check_state_dict(model, sd, source=str(path))
    model.load_state_dict(sd, strict=True)
    return model


def cached_weights_file(encoder: str, weights: str) -> tuple[Path | None, str]:
    """Locate named pretrained encoder weights in the local caches only (no network).

    Parameters
    ----------
    encoder : str
        ``"tu-<timm name>[.<tag>]"`` (its timm pretrained config: ``file``, the Hugging Face cache
        of ``hf_hub_id``, the torch.hub cache of ``url``) or an smp encoder name (the Hugging Face
        cache of its ``pretrained_settings[weights]``).
    weights : str
        Weight name (``"imagenet"``; for smp encoders any key of their pretrained settings).

    Returns
    -------
    path : pathlib.Path or None
        The cached file, or None when absent.
    looked : str
        Where it was looked for (for messages).
    """
    from huggingface_hub import try_to_load_from_cache

    looked = []

    def hf(repo: str, files: list[str], revision: str | None = None) -> Path | None:
        for f in files:
            looked.append(f"hf:{repo}/{f}")
            hit = try_to_load_from_cache(repo, f, revision=revision)
            if isinstance(hit, str) and os.path.isfile(hit):
                return Path(hit)
        return None

    if encoder.startswith("tu-"):
        import timm

        try:
            cfg = timm.models.get_pretrained_cfg(encoder[3:])
        except Exception:  # noqa: BLE001 - unknown tag and friends
            cfg = None
        if cfg is None:
            return None, f"no timm pretrained config for {encoder[3:]!r}"
        if cfg.file and os.path.isfile(cfg.file):
            return Path(cfg.file), cfg.file
        if cfg.hf_hub_id:
            repo, _, rev = cfg.hf_hub_id.partition("@")
            files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else []
            hit = hf(repo, [*files, "model.safetensors", "pytorch_model.bin"], rev or None)
            if hit is not None:
                return hit, ", ".join(looked)
        if cfg.url:
            cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
            looked.append(str(cached))
            if cached.is_file():
                return cached, ", ".join(looked)
        return None, ", ".join(looked) or "nowhere (no pretrained source)"
    import segmentation_models_pytorch as smp

    s = smp.encoders.encoders[encoder]["pretrained_settings"][weights]
    hit = hf(s["repo_id"], ["model.safetensors"], s.get("revision"))
    return hit, ", ".join(looked)
