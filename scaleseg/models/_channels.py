"""Input-channel adaptation of a pretrained encoder's first convolution (kernel layer).

The rule (DESIGN.md, Defaults; deepflash2 paper, Methods):

- ``in_channels < 3``: keep the matching slice of the pretrained RGB filters, i.e. the first
  ``in_channels`` input-channel slices ``weight[:, :in_channels]``, multiplied by ``3 / in_channels``
  (``rescale=True``, the default). The rescale keeps the layer's response to an image whose channels
  look alike (a grey image) at the magnitude the pretrained network saw for three channels; it is the
  factor segmentation-models-pytorch's ``patch_first_conv`` (``3 / new_in_channels``) and fastai
  (``* 1.5`` for two channels) use. Unlike ``patch_first_conv`` a single channel keeps the R slice
  (times 3) rather than the sum of the three slices, as the design asks for "the matching slice".
- ``in_channels == 3``: unchanged.
- ``in_channels > 3``: the pretrained filters are dropped and the whole layer is drawn from a
  truncated normal (``std=0.02``, truncated at two standard deviations, as timm initialises ConvNeXt).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FIRST_CONV_STD", "adapt_first_conv_weight", "find_first_conv", "trunc_normal_"]

FIRST_CONV_STD = 0.02
"""Standard deviation of the truncated-normal first layer used for more than three channels."""


def trunc_normal_(
    tensor: torch.Tensor, *, std: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Fill `tensor` in place from N(0, std²) truncated at ±2·std.

    Parameters
    ----------
    tensor : torch.Tensor
        Tensor to fill.
    std : float
        Standard deviation of the untruncated normal.
    generator : torch.Generator, optional
        Random generator; the global one when None.

    Returns
    -------
    torch.Tensor
        `tensor`, filled.
    """
    with torch.no_grad():
        return nn.init.trunc_normal_(
            tensor, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std, generator=generator
        )


def adapt_first_conv_weight(
    weight: torch.Tensor,
    in_channels: int,
    *,
    generator: torch.Generator | None = None,
    rescale: bool = True,
    std: float = FIRST_CONV_STD,
) -> torch.Tensor:
    """Adapt pretrained RGB first-layer filters to `in_channels` input channels.

    Parameters
    ----------
    weight : (O, 3, kh, kw) torch.Tensor
        Pretrained filters of the encoder's first convolution.
    in_channels : int
        Number of input channels of the new layer (>= 1).
    generator : torch.Generator, optional
        Random generator for the truncated normal (``in_channels > 3``); the global one when None.
    rescale : bool, default True
        For ``in_channels < 3``, multiply the kept slice by ``3 / in_channels``.
    std : float, default 0.02
        Standard deviation of the truncated normal (``in_channels > 3``), truncated at ±2·std.

    Returns
    -------
    (O, in_channels, kh, kw) torch.Tensor
        New filters, same dtype and device as `weight` (a new tensor; `weight` is not modified).

    Raises
    ------
    ValueError
        If `weight` is not a 4-D tensor with 3 input channels or `in_channels` < 1.
    """
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise ValueError(f"weight must have shape (O, 3, kh, kw), got {tuple(weight.shape)}")
    if int(in_channels) != in_channels or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    in_channels = int(in_channels)
    weight = weight.detach()
    if in_channels == 3:
        return weight.clone()
    if in_channels < 3:
        new = weight[:, :in_channels].clone()
        if rescale:
            new.mul_(3.0 / in_channels)
        return new
    new = torch.empty(
        (weight.shape[0], in_channels, *weight.shape[2:]), dtype=weight.dtype, device=weight.device
    )
    return trunc_normal_(new, std=std, generator=generator)


def find_first_conv(module: nn.Module, in_channels: int) -> tuple[str, nn.Conv2d]:
    """Find the first convolution that reads the input image.

    Parameters
    ----------
    module : torch.nn.Module
        An encoder (or a whole segmentation model).
    in_channels : int
        Number of channels of the input image.

    Returns
    -------
    name : str
        Qualified module name (its weight's state-dict key is ``name + ".weight"``).
    conv : torch.nn.Conv2d
        The convolution: the first ``Conv2d`` in registration order with ``groups == 1`` and
        ``in_channels`` input channels.

    Raises
    ------
    ValueError
        If no such convolution exists.
    """
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Conv2d) and sub.groups == 1 and sub.in_channels == in_channels:
            return name, sub
    raise ValueError(
        f"no Conv2d with {in_channels} input channels found in {type(module).__name__}"
    )
