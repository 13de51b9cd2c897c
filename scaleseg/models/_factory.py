"""Model factory: segmentation-models-pytorch architectures with smp or timm (``tu-``) encoders,
offline pretrained encoder weights, input-channel adaptation and truncated-normal decoder init."""

from __future__ import annotations

import os

# Before timm / smp / huggingface_hub are imported: never retry the hub (no machine is online).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Iterator, Mapping  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import segmentation_models_pytorch as smp  # noqa: E402
import torch  # noqa: E402
from segmentation_models_pytorch.base import SegmentationModel  # noqa: E402
from torch import nn  # noqa: E402

from ._channels import adapt_first_conv_weight, find_first_conv, trunc_normal_  # noqa: E402
from ._manifest import EncoderWeights  # noqa: E402
from ._weights import (  # noqa: E402
    WeightsError,
    cached_weights_file,
    check_state_dict,
    read_weights,
)

__all__ = [
    "ARCHITECTURES",
    "DECODER_INIT_STD",
    "ModelSpec",
    "build_model",
    "init_decoder",
    "resolve_encoder_weights",
]

ARCHITECTURES: tuple[str, ...] = tuple(
    name
    for name in smp.__all__
    if isinstance(getattr(smp, name), type) and issubclass(getattr(smp, name), SegmentationModel)
)
"""Architectures segmentation-models-pytorch provides, by class name (``"Unet"``, ``"FPN"``, ...)."""

DECODER_INIT_STD = 0.02
"""Standard deviation of the truncated normal (±2·std) for decoder and head weights."""

_NAMED_WEIGHTS = "imagenet"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What `build_model` builds; stored in ``ensemble.json`` via `to_dict`.

    Parameters
    ----------
    arch : str, default "Unet"
        One of `ARCHITECTURES` (case-insensitive; stored with its canonical spelling).
    encoder : str, default "tu-convnext_tiny"
        A segmentation-models-pytorch encoder name (``"resnet18"``) or any timm model as
        ``"tu-<name>[.<pretrained tag>]"``.
    in_channels : int, default 1
        Image channels.
    n_classes : int, default 2
        Semantic classes including background (class 0).
    n_extra : int, default 0
        Extra regression outputs after the class logits (e.g. 2 cellpose flow channels).
    encoder_weights : str or None, default "imagenet"
        None (random encoder), ``"imagenet"`` (from the local timm / Hugging Face cache; a warning
        and random initialisation when absent; for smp encoders any of their named weights, e.g.
        ``"ssl"``) or a path to a local safetensors / torch file holding the encoder's weights
        (the smp encoder's state dict, a whole smp model's, or a timm checkpoint for ``tu-``).
    encoder_depth : int or None, default None
        Encoder stages used (3-5); None = smp's default (5). deepflash2 builds its ConvNeXt
        U-Nets with depth 4 and ``decoder_channels=(256, 128, 64, 16)``.
    decoder_channels : tuple of int or None, default None
        Decoder widths, one per encoder stage (U-Net family); None = smp's default.
    """

    arch: str = "Unet"
    encoder: str = "tu-convnext_tiny"
    in_channels: int = 1
    n_classes: int = 2
    n_extra: int = 0
    encoder_weights: str | None = _NAMED_WEIGHTS
    encoder_depth: int | None = None
    decoder_channels: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        canon = {a.lower(): a for a in ARCHITECTURES}
        if not isinstance(self.arch, str) or self.arch.lower() not in canon:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {self.arch!r}")
        object.__setattr__(self, "arch", canon[self.arch.lower()])
        if not isinstance(self.encoder, str) or not self.encoder:
            raise ValueError(f"encoder must be a non-empty string, got {self.encoder!r}")
        for name, low in (("in_channels", 1), ("n_classes", 1), ("n_extra", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        d = self.encoder_depth
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or not 3 <= d <= 5):
            raise ValueError(f"encoder_depth must be None or an integer in 3..5, got {d!r}")
        c = self.decoder_channels
        if c is not None:
            if isinstance(c, str | bytes) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in c
            ):
                raise ValueError(f"decoder_channels must be positive integers, got {c!r}")
            c = tuple(c)
            if len(c) != (d or 5):
                raise ValueError(
                    f"decoder_channels needs one width per encoder stage ({d or 5}), got {c!r}"
                )
            object.__setattr__(self, "decoder_channels", c)
        w = self.encoder_weights
        if isinstance(w, os.PathLike):
            object.__setattr__(self, "encoder_weights", os.fspath(w))
        elif w is not None and (not isinstance(w, str) or not w):
            raise ValueError(f"encoder_weights must be None, 'imagenet' or a path, got {w!r}")

    @property
    def out_channels(self) -> int:
        """Output channels of the model: ``n_classes + n_extra``."""
        return self.n_classes + self.n_extra

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-serialisable dict (unset optional shape fields are left
        out, so specs written before they existed compare equal)."""
        d = dataclasses.asdict(self)
        for key in ("encoder_depth", "decoder_channels"):
            if d[key] is None:
                del d[key]
            elif key == "decoder_channels":
                d[key] = list(d[key])
        return d

    def smp_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``smp.create_model`` this spec sets beyond the defaults."""
        kw: dict[str, Any] = {}
        if self.encoder_depth is not None:
            kw["encoder_depth"] = self.encoder_depth
        if self.decoder_channels is not None:
            kw["decoder_channels"] = list(self.decoder_channels)
        return kw

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Build a spec from `to_dict` output; unknown keys raise ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelSpec keys {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def init_decoder(model: nn.Module, *, std: float = DECODER_INIT_STD) -> nn.Module:
    """Initialise decoder and heads from a truncated normal, in place.

    Convolution and linear weights of ``model.decoder``, ``model.segmentation_head`` and (when
    present) ``model.classification_head`` are drawn from N(0, std²) truncated at ±2·std; their
    biases are set to zero; normalisation layers to weight 1, bias 0. Uses the global torch RNG.

    Parameters
    ----------
    model : torch.nn.Module
        An smp segmentation model.
    std : float, default 0.02
        Standard deviation before truncation.

    Returns
    -------
    torch.nn.Module
        `model`.
    """
    parts = [
        getattr(model, n, None) for n in ("decoder", "segmentation_head", "classification_head")
    ]
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    with torch.no_grad():
        for part in (p for p in parts if isinstance(p, nn.Module)):
            for m in part.modules():
                if isinstance(m, nn.modules.conv._ConvNd | nn.Linear):
                    trunc_normal_(m.weight, std=std)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, norms) and getattr(m, "weight", None) is not None:
                    m.weight.fill_(1.0)
                    if m.bias is not None:
                        m.bias.zero_()
    return model


def build_model(spec: ModelSpec, *, seed: int | None = None) -> nn.Module:
    """Build a segmentation model from a `ModelSpec`, without network access.

    The smp model is created with random encoder weights and ``spec.in_channels`` inputs, the
    decoder and head are re-initialised with `init_decoder`, then pretrained encoder weights (if
    any) are loaded, their first convolution adapted by `adapt_first_conv_weight`.

    Parameters
    ----------
    spec : ModelSpec
        What to build.
    seed : int, optional
        Seeds every random initialisation (the global torch RNG state is restored afterwards);
        two builds with the same seed give identical state dicts.

    Returns
    -------
    torch.nn.Module
        Model mapping ``(B, in_channels, H, W)`` to ``(B, n_classes + n_extra, H, W)`` logits,
        in training mode. H and W must be multiples of the encoder's output stride (32 mostly).

    Raises
    ------
    ValueError
        If the encoder name is unknown to smp / timm.
    FileNotFoundError
        If ``spec.encoder_weights`` is neither a known weight name nor an existing file.
    WeightsError
        If the weight file is unreadable or does not fit the encoder.

    Warns
    -----
    UserWarning
        If ``encoder_weights="imagenet"`` but no cached weights exist locally (random encoder).
    """
    with _seeded(seed):
        try:
            model = smp.create_model(
                spec.arch,
                encoder_name=spec.encoder,
                encoder_weights=None,
                in_channels=spec.in_channels,
                classes=spec.out_channels,
                **spec.smp_kwargs(),
            )
        except (KeyError, RuntimeError, TypeError) as e:
            extra = f" and {spec.smp_kwargs()}" if spec.smp_kwargs() else ""
            raise ValueError(
                f"cannot build {spec.arch} with encoder {spec.encoder!r}{extra}: {e}"
            ) from e
        init_decoder(model)
        if spec.encoder_weights is not None:
            state = _pretrained_encoder_state(spec, model.encoder)
            if state is not None:
                _load_encoder(model.encoder, state, spec.in_channels)
    return model


def _load_encoder(encoder: nn.Module, state: dict[str, torch.Tensor], in_channels: int) -> None:
    name, _ = find_first_conv(encoder, in_channels)
    key = f"{name}.weight"
    w = state[key]
    if w.ndim == 4 and w.shape[1] == 3 and in_channels != 3:
        state = {**state, key: adapt_first_conv_weight(w, in_channels)}
    check_state_dict(encoder, state, source="pretrained encoder weights")
    encoder.load_state_dict(state, strict=True)


def _is_timm(encoder: str) -> bool:
    return encoder.startswith("tu-")


def _smp_settings(encoder: str) -> dict:
    entry = smp.encoders.encoders.get(encoder)
    return {} if entry is None else dict(entry.get("pretrained_settings", {}))


def resolve_encoder_weights(
    spec: ModelSpec, *, warn: bool = True
) -> tuple[EncoderWeights, Path | None]:
    """Which encoder weights `build_model` loads for ``spec``, found offline.

    Returns
    -------
    EncoderWeights
        What will actually be loaded: ``random`` (none asked, or named weights absent from the
        local caches), ``cache`` (the library's cache file) or ``file`` (a local file), with
        the file's path and SHA-256.
    Path or None
        The file to read.

    Raises
    ------
    FileNotFoundError
        If ``spec.encoder_weights`` is neither a known weight name nor an existing file.

    Warns
    -----
    UserWarning
        When named weights were asked for and are not in the local caches (``warn``).
    """
    from ._manifest import EncoderWeights
    from ._weights import file_sha256

    w = spec.encoder_weights
    if w is None:
        return EncoderWeights(requested=None, source="random"), None
    w = str(w)
    named = w == _NAMED_WEIGHTS if _is_timm(spec.encoder) else w in _smp_settings(spec.encoder)
    if named:
        path, looked = cached_weights_file(spec.encoder, w)
        if path is None:
            if warn:
                warnings.warn(
                    f"no local {w!r} weights for encoder {spec.encoder!r} (looked in: {looked}); "
                    "continuing with a randomly initialised encoder. To use pretrained weights "
                    "offline, set encoder_weights to a local safetensors/torch file of the encoder "
                    "(or timm backbone) weights, or fill the Hugging Face cache (HF_HOME) on a "
                    "machine with internet access.",
                    UserWarning,
                    stacklevel=3,
                )
            return EncoderWeights(requested=w, source="random"), None
        source = "cache"
    else:
        path = Path(w).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"encoder_weights {w!r} is neither a file nor a known weight name for "
                f"{spec.encoder!r} (known: {_NAMED_WEIGHTS!r} for tu- encoders, "
                f"{sorted(_smp_settings(spec.encoder))} for this smp encoder)"
            )
        source = "file"
    resolved = Path(path).resolve()
    return (
        EncoderWeights(
            requested=w, source=source, path=str(resolved), sha256=file_sha256(resolved)
        ),
        resolved,
    )


def _pretrained_encoder_state(spec: ModelSpec, encoder: nn.Module) -> dict | None:
    _, path = resolve_encoder_weights(spec)
    if path is None:
        return None
    sd = read_weights(path)
    target = encoder.state_dict()
    prefixed = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    for cand in (sd, prefixed):
        if cand and all(k in cand for k in target):
            return {k: cand[k] for k in target}
    if _is_timm(spec.encoder):
        return _timm_checkpoint_to_encoder(spec.encoder, sd, path, target)
    check_state_dict(encoder, sd, source=str(path))  # raises with a summary
    return None  # pragma: no cover


def _timm_checkpoint_to_encoder(
    name: str, sd: dict[str, torch.Tensor], path: Path, target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Map a timm classification checkpoint onto the smp encoder's keys through timm's loader.

    timm loads feature-extraction models non-strictly, so the reference encoder is built twice
    from different seeds: a floating-point tensor that differs between the two did not come from
    the checkpoint.
    """
    states = []
    for seed in (0, 1):
        try:
            with _seeded(seed):
                ref = smp.encoders.get_encoder(
                    name, in_channels=3, weights=True, pretrained_cfg_overlay={"state_dict": sd}
                )
        except Exception as e:  # noqa: BLE001 - timm raises many types for a wrong checkpoint
            raise WeightsError(
                f"{path}: neither the encoder's state dict nor a timm checkpoint of {name[3:]!r} "
                f"({type(e).__name__}: {str(e)[:300]})"
            ) from e
        states.append(ref.state_dict())
    a, b = states
    absent = [
        k
        for k in target
        if k not in a or (a[k].is_floating_point() and not torch.equal(a[k], b[k]))
    ]
    if absent:
        raise WeightsError(
            f"{path}: neither the encoder's state dict nor a timm checkpoint of {name[3:]!r}: "
            f"{len(absent)} of {len(target)} encoder tensors not in it ({', '.join(absent[:5])})"
        )
    return {k: a[k] for k in target}
