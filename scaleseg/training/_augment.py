"""Training augmentations (albumentations 2).

Convention: augmentations run **before** normalisation, on float32 ``(Y, X, C)`` images scaled
to ``[0, 1]`` by the dtype range (:func:`scaleseg.models.to_unit_range`), because
gamma, CLAHE and noise are defined on that scale. Masks (semantic labels, and instance labels
when flows are trained) go through the same geometric transforms with nearest-neighbour
interpolation and are left alone by the intensity transforms. Geometric transforms fill with
reflection. The pipeline ends with a centre crop to ``tile_shape``, so the caller may hand in a
larger window (:func:`augmentation_input_shape`) and rotations then show real image content in
the corners instead of reflections.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from albumentations.augmentations.pixel import functional as _fpixel  # noqa: E402

__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_AUGMENTATIONS",
    "augmentation_input_shape",
    "build_augmentation",
    "check_augmentations",
]

AUGMENTATIONS: tuple[str, ...] = (
    "flip",
    "rotate90",
    "rotate",
    "gamma",
    "brightness_contrast",
    "clahe",
    "grid_distortion",
    "gaussian_noise",
    "blur",
    "channel_shuffle",
)
DEFAULT_AUGMENTATIONS: tuple[str, ...] = ("flip", "rotate90", "rotate", "gamma")

_GEOMETRIC = ("flip", "rotate90", "rotate", "grid_distortion")
_REFLECT = cv2.BORDER_REFLECT_101


class _ChannelwiseCLAHE(A.CLAHE):
    """CLAHE on every channel separately (albumentations' CLAHE takes only 1 or 3 channels).

    float32 channels are quantised to 256 levels for the histogram step (albumentations does
    the same for its own CLAHE).
    """

    def apply(self, img: np.ndarray, clip_limit: float, **params) -> np.ndarray:
        chans = [
            _fpixel.clahe(
                np.ascontiguousarray(img[..., c : c + 1]), clip_limit, self.tile_grid_size
            )
            for c in range(img.shape[-1])
        ]
        return np.concatenate([c.reshape(img.shape[:2] + (1,)) for c in chans], axis=-1)


def check_augmentations(names: Sequence[str] | None) -> tuple[str, ...]:
    """Validate augmentation names; returns them deduplicated in canonical order.

    Raises
    ------
    ValueError
        For an unknown name, listing the valid ones.
    """
    names = () if names is None else names
    if isinstance(names, str):
        names = (names,)
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"unknown augmentation(s) {unknown}; valid names are: {', '.join(AUGMENTATIONS)}"
        )
    return tuple(n for n in AUGMENTATIONS if n in names)


def augmentation_input_shape(
    names: Sequence[str] | None, tile_shape: Sequence[int]
) -> tuple[int, int]:
    """The window to read so that the augmented, centre-cropped tile holds only image content.

    ``tile_shape`` itself without geometric transforms; a square of side ``max(tile_shape)``
    with ``rotate90`` (non-square tiles); a square of side ``ceil(hypot(*tile_shape))`` (the
    tile's diagonal, even) with ``rotate`` or ``grid_distortion``.
    """
    names = check_augmentations(names)
    ty, tx = (int(t) for t in tile_shape)
    if "rotate" in names or "grid_distortion" in names:
        side = math.ceil(math.hypot(ty, tx))
        side += side % 2
        return side, side
    if "rotate90" in names and ty != tx:
        side = max(ty, tx)
        return side, side
    return ty, tx


def _transform(name: str) -> list[A.BasicTransform]:
    if name == "flip":
        return [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    if name == "rotate90":
        return [A.RandomRotate90(p=0.5)]
    if name == "rotate":
        return [
            A.Rotate(
                limit=180,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=_REFLECT,
                p=0.5,
            )
        ]
    if name == "grid_distortion":
        return [
            A.GridDistortion(
                num_steps=5,
                distort_limit=(-0.3, 0.3),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=_REFLECT,
                p=0.5,
            )
        ]
    if name == "gamma":
        return [A.RandomGamma(gamma_limit=(80, 120), p=0.5)]
    if name == "brightness_contrast":
        # exposure differences between fields and sessions: albumentations' "contrast" is a
        # factor 1 + a, a in [-0.5, 0.5], about zero (no brightness offset here), followed by a
        # second global factor in [0.7, 1.3]; each fires with probability 0.5
        return [
            A.RandomBrightnessContrast(brightness_limit=0.0, contrast_limit=(-0.5, 0.5), p=0.5),
            A.MultiplicativeNoise(
                multiplier=(0.7, 1.3), per_channel=False, elementwise=False, p=0.5
            ),
        ]
    if name == "clahe":
        return [_ChannelwiseCLAHE(clip_limit=(1.0, 4.0), tile_grid_size=(8, 8), p=0.5)]
    if name == "gaussian_noise":
        return [A.GaussNoise(std_range=(0.01, 0.05), per_channel=True, p=0.5)]
    if name == "blur":
        return [A.GaussianBlur(blur_limit=0, sigma_limit=(0.5, 1.5), p=0.5)]
    if name == "channel_shuffle":
        return [A.ChannelShuffle(p=0.5)]
    raise ValueError(f"unknown augmentation {name!r}")  # unreachable after check_augmentations


def build_augmentation(
    names: Sequence[str] | None = DEFAULT_AUGMENTATIONS,
    *,
    tile_shape: Sequence[int],
    seed: int | None = None,
) -> A.Compose:
    """An albumentations pipeline: geometric transforms, centre crop, intensity transforms.

    Parameters
    ----------
    names : sequence of str or None
        A subset of :data:`AUGMENTATIONS` (order does not matter; a canonical order is used).
        ``None`` or empty: only the centre crop. Each transform fires with probability 0.5;
        ``rotate`` draws an angle in [-180, 180] degrees, ``gamma`` a gamma in [0.8, 1.2],
        ``brightness_contrast`` multiplies the tile by a factor in [0.5, 1.5] and by another in
        [0.7, 1.3] (each with probability 0.5; a gain, not an offset).
    tile_shape : (int, int)
        Output ``(height, width)``; inputs must be at least this large (see
        :func:`augmentation_input_shape` for the size that avoids reflected corners).
    seed : int, optional
        Seeds the pipeline's generator; re-seed per sample with ``Compose.set_random_seed``.

    Returns
    -------
    albumentations.Compose
        Call as ``aug(image=img, mask=labels)`` or ``aug(image=img, masks=[labels, inst])`` with
        ``img`` a ``(Y, X, C)`` float32 array in the unit range and masks ``(Y, X)`` uint8 or
        uint16; returns the same keys, cropped to ``tile_shape``.
    """
    names = check_augmentations(names)
    ty, tx = (int(t) for t in tile_shape)
    if ty < 1 or tx < 1:
        raise ValueError(f"tile_shape must be positive, got {tuple(tile_shape)}")
    geometric = [t for n in names if n in _GEOMETRIC for t in _transform(n)]
    intensity = [t for n in names if n not in _GEOMETRIC for t in _transform(n)]
    return A.Compose(
        [*geometric, A.CenterCrop(height=ty, width=tx), *intensity],
        seed=seed,
    )
