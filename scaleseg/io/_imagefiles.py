"""Reading TIFF / PNG / JPEG image and mask files into the internal layouts.

Images become ``(C, Y, X)``; masks become ``(Y, X)`` unsigned integer label maps. Errors name the
file and the problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "read_image_file", "read_mask_file", "ImageFileError"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_MAX_CHANNELS = 16


class ImageFileError(ValueError):
    """An image or mask file that cannot be used; the message names the file."""


def _read_raw(path: Path) -> tuple[np.ndarray, str | None]:
    """Pixel array plus the TIFF axes string when the file declares one."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                return series.asarray(), series.axes
        import imageio.v3 as iio

        return np.asarray(iio.imread(path)), None
    except Exception as exc:  # any decoder error: report it with the file name
        raise ImageFileError(
            f"{path}: unreadable image file ({type(exc).__name__}: {exc})"
        ) from None


def _tiff_to_cyx(arr: np.ndarray, axes: str, path: Path) -> np.ndarray:
    axes = axes.upper().replace("S", "C")  # samples (RGB) are channels
    for ax in ("T", "Z", "I"):
        if ax in axes:
            i = axes.index(ax)
            if arr.shape[i] != 1:
                raise ImageFileError(
                    f"{path}: axis {ax!r} has size {arr.shape[i]} (axes {axes}, shape "
                    f"{arr.shape}); only 2-D images are supported"
                )
            arr = arr.take(0, axis=i)
            axes = axes.replace(ax, "")
    if set(axes) - {"C", "Y", "X"}:
        raise ImageFileError(f"{path}: unknown axes {axes!r} for shape {arr.shape}")
    if "C" not in axes:
        arr, axes = arr[None], "C" + axes
    return np.transpose(arr, [axes.index(a) for a in "CYX"])


def _guess_cyx(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        if arr.shape[-1] in (3, 4) and arr.shape[0] > _MAX_CHANNELS:  # YXS (RGB / RGBA)
            if arr.shape[-1] == 4:
                arr = arr[..., :3]  # drop alpha
            return np.moveaxis(arr, -1, 0)
        if arr.shape[0] <= _MAX_CHANNELS and min(arr.shape[1:]) > _MAX_CHANNELS:
            return arr
    raise ImageFileError(
        f"{path}: unknown axes for shape {arr.shape}; expected (Y, X), (Y, X, 3|4) or (C, Y, X) "
        f"with C <= {_MAX_CHANNELS}"
    )


def read_image_file(path: str | Path) -> np.ndarray:
    """Read an image file as ``(C, Y, X)``.

    Gray images get one channel, RGB(A) images three (alpha dropped); multichannel TIFFs keep
    their channels. 8/16-bit integer and float data keep their dtype.
    """
    path = Path(path)
    arr, axes = _read_raw(path)
    if axes is not None and len(axes) == arr.ndim and arr.ndim > 2 and "Q" not in axes.upper():
        out = _tiff_to_cyx(arr, axes, path)
        if out.shape[0] == 4 and "S" in axes.upper():
            out = out[:3]
    else:
        out = _guess_cyx(arr, path)
    if out.dtype == np.bool_:
        out = out.astype(np.uint8)
    if not (np.issubdtype(out.dtype, np.integer) or np.issubdtype(out.dtype, np.floating)):
        raise ImageFileError(f"{path}: unsupported pixel type {out.dtype}")
    if np.issubdtype(out.dtype, np.floating) and not np.isfinite(out).all():
        raise ImageFileError(f"{path}: image contains NaN or infinite values")
    return np.ascontiguousarray(out)


def read_mask_file(path: str | Path) -> np.ndarray:
    """Read an expert mask as a ``(Y, X)`` label map (uint8, or uint16/uint32 when needed).

    Rules: RGB masks must have identical channels; a mask whose values are exactly {0, 255}
    is binary and becomes {0, 1}; float masks are accepted only when every value is a
    non-negative integer; negative values are rejected.
    """
    path = Path(path)
    arr, _ = _read_raw(path)
    arr = np.squeeze(arr)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if not (
            np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
        ):
            raise ImageFileError(
                f"{path}: colour mask with differing channels; expected a label image"
            )
        arr = rgb[..., 0]
    if arr.ndim != 2:
        raise ImageFileError(f"{path}: mask has shape {arr.shape}; expected a 2-D label image")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise ImageFileError(f"{path}: non-integer mask values (dtype {arr.dtype})")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ImageFileError(f"{path}: unsupported mask dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ImageFileError(f"{path}: negative mask values")
    values = np.unique(arr)
    if values.size == 2 and values[0] == 0 and values[1] == 255:
        arr = (arr > 0).astype(np.uint8)
    vmax = int(values.max()) if values.size else 0
    dtype = np.uint8 if vmax < 2**8 else np.uint16 if vmax < 2**16 else np.uint32
    return arr.astype(dtype)
