"""Training losses built from segmentation-models-pytorch's multiclass losses, plus an optional MSE
term on extra regression channels (cellpose flows)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch import losses as smp_losses
from torch import nn

__all__ = ["IGNORE_INDEX", "LOSSES", "SegmentationLoss", "build_loss"]

LOSSES: tuple[str, ...] = ("ce_dice", "ce", "dice", "focal", "tversky", "lovasz")
"""Loss names accepted by `build_loss`."""

_MULTICLASS = smp_losses.MULTICLASS_MODE
IGNORE_INDEX = -100
"""Target value of pixels that do not count (e.g. the reflection padding of validation tiles)."""


def _terms(name: str) -> list[tuple[float, nn.Module]]:
    ce = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    kw = {"mode": _MULTICLASS, "ignore_index": IGNORE_INDEX}
    if name == "ce_dice":
        return [(0.5, ce), (0.5, smp_losses.DiceLoss(**kw))]
    if name == "ce":
        return [(1.0, ce)]
    if name == "dice":
        return [(1.0, smp_losses.DiceLoss(**kw))]
    if name == "focal":
        return [(1.0, smp_losses.FocalLoss(**kw))]
    if name == "tversky":
        return [(1.0, smp_losses.TverskyLoss(**kw))]
    if name == "lovasz":
        return [(1.0, smp_losses.LovaszLoss(**kw))]
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")


class SegmentationLoss(nn.Module):
    """Weighted sum of smp multiclass losses on the class logits, plus an MSE on extra channels.

    Build it with `build_loss`. Calling it returns a scalar tensor:
    ``sum_i w_i * L_i(logits[:, :n_classes], target) + flow_weight * MSE(logits[:, n_classes:],
    flows)``, the last term only when ``n_extra > 0``.

    Parameters
    ----------
    name : str
        One of `LOSSES`.
    n_classes : int
        Class logits (>= 2, background included).
    n_extra : int, default 0
        Extra regression channels following the class logits.
    flow_weight : float, default 1.0
        Weight of the MSE term on the extra channels.
    """

    def __init__(self, name: str, *, n_classes: int, n_extra: int = 0, flow_weight: float = 1.0):
        super().__init__()
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        if isinstance(n_extra, bool) or not isinstance(n_extra, int) or n_extra < 0:
            raise ValueError(f"n_extra must be an integer >= 0, got {n_extra!r}")
        if not flow_weight >= 0:
            raise ValueError(f"flow_weight must be >= 0, got {flow_weight!r}")
        terms = _terms(name)
        self.name = name
        self.n_classes = n_classes
        self.n_extra = n_extra
        self.flow_weight = float(flow_weight)
        self.weights = [w for w, _ in terms]
        self.terms = nn.ModuleList([t for _, t in terms])

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, flows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Compute the loss.

        Parameters
        ----------
        logits : (B, n_classes + n_extra, H, W) torch.Tensor of float
            Model output.
        target : (B, H, W) torch.Tensor of int64
            Class index per pixel, in ``[0, n_classes)``.
        flows : (B, n_extra, H, W) torch.Tensor of float, optional
            Regression target for the extra channels; required when ``n_extra > 0``.

        Returns
        -------
        torch.Tensor
            Scalar loss.
        """
        c = self.n_classes + self.n_extra
        if logits.ndim != 4 or logits.shape[1] != c:
            raise ValueError(f"logits must have shape (B, {c}, H, W), got {tuple(logits.shape)}")
        b, _, h, w = logits.shape
        if tuple(target.shape) != (b, h, w):
            raise ValueError(f"target must have shape {(b, h, w)}, got {tuple(target.shape)}")
        if target.is_floating_point() or target.is_complex():
            raise TypeError(f"target must hold integer class indices, got {target.dtype}")
        loss = self.segmentation(logits, target)
        if self.n_extra:
            if flows is None:
                raise ValueError(f"n_extra={self.n_extra}: a flows target is required")
            if tuple(flows.shape) != (b, self.n_extra, h, w):
                raise ValueError(
                    f"flows must have shape {(b, self.n_extra, h, w)}, got {tuple(flows.shape)}"
                )
            extra = logits[:, self.n_classes :]
            loss = loss + self.flow_weight * F.mse_loss(extra, flows.to(extra.dtype))
        return loss

    def segmentation(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The class terms only (pixels whose target is ``IGNORE_INDEX`` do not count)."""
        class_logits = logits[:, : self.n_classes]
        return sum(
            wt * term(class_logits, target.long())
            for wt, term in zip(self.weights, self.terms, strict=True)
        )

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, n_classes={self.n_classes}, n_extra={self.n_extra}, "
            f"flow_weight={self.flow_weight}"
        )


def build_loss(
    name: str = "ce_dice", *, n_classes: int, n_extra: int = 0, flow_weight: float = 1.0
) -> SegmentationLoss:
    """Build a training loss by name.

    Parameters
    ----------
    name : str, default "ce_dice"
        ``"ce_dice"`` (mean of cross-entropy and smp ``DiceLoss(mode="multiclass")``, the
        deepflash2 default), ``"ce"``, ``"dice"``, ``"focal"``, ``"tversky"`` or ``"lovasz"``
        (smp multiclass losses with their default parameters).
    n_classes : int
        Class logits (>= 2, background included).
    n_extra : int, default 0
        Extra regression channels after the class logits (e.g. 2 cellpose flows); when > 0 an MSE
        against the ``flows`` target is added.
    flow_weight : float, default 1.0
        Weight of that MSE term.

    Returns
    -------
    SegmentationLoss
        Module called as ``loss(logits, target, flows=None)``.
    """
    return SegmentationLoss(name, n_classes=n_classes, n_extra=n_extra, flow_weight=flow_weight)
