"""Image files (PNG, TIFF, JPEG, BMP via Pillow) and NumPy ``.npy`` arrays as :class:`Scan`.

Intensities keep their stored scale (8- or 16-bit integers become float32 of the same values; the
bit depth is recorded in ``attrs["bit_depth"]``); colour images are converted to luminance.
Multi-page TIFFs become slices. ``.npy`` files are loaded with ``allow_pickle=False``: real arrays
``(H, W)`` / ``(S, H, W)`` are images, complex arrays are centred k-space ``(S, [coils,] H, W)``.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from recon.datasets.scan import MAX_ELEMENTS, MAX_SIDE, Scan, as_image_stack, as_kspace, check_shape
from recon.errors import InputError

NPY_MAGIC = b"\x93NUMPY"
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
_LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)  # ITU-R BT.709, as skimage.rgb2gray


def _frame_array(frame: Image.Image) -> tuple[np.ndarray, int]:
    mode = frame.mode
    if mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
        rgb = np.asarray(frame.convert("RGB"), dtype=np.float32)
        return rgb @ _LUMA, 8
    if mode == "1":
        return np.asarray(frame, dtype=np.float32), 1
    array = np.asarray(frame)
    bits = {"L": 8, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}.get(mode, 8 * array.itemsize)
    return array, bits


def read_image(path: str | os.PathLike) -> Scan:
    """Read a 2D image (or multi-page TIFF) as an image stack."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (
        UnidentifiedImageError,
        OSError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as exc:
        raise InputError(f"not a readable image ({exc})", path) from None
    with image:
        width, height = image.size
        frames = getattr(image, "n_frames", 1)
        if max(width, height) > MAX_SIDE or width * height * frames > MAX_ELEMENTS:
            raise InputError(f"image of {width}x{height}x{frames} is too large", path)
        try:
            arrays, bits = zip(*(_frame_array(frame) for frame in ImageSequence.Iterator(image)), strict=True)
        except (OSError, ValueError, SyntaxError) as exc:
            raise InputError(
                f"image data cannot be decoded ({exc}); the file may be truncated", path
            ) from None
        if len({a.shape for a in arrays}) != 1:
            raise InputError("pages of different sizes", path)
        images = as_image_stack(np.stack(arrays), path)
        return Scan(
            str(path), images=images, attrs={"bit_depth": int(max(bits)), "format": image.format or ""}
        )


def read_npy(path: str | os.PathLike) -> Scan:
    """Read a ``.npy`` array without unpickling: real → images, complex → centred k-space."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"not a readable .npy array ({exc})", path) from None
    if not isinstance(array, np.ndarray) or array.ndim < 2:
        raise InputError(f"expected an array of at least 2 dimensions, got shape {np.shape(array)}", path)
    check_shape(array.shape, path, "array")
    try:
        data = np.array(array)
    except (ValueError, OSError) as exc:
        raise InputError(f"array data cannot be read ({exc}); the file may be truncated", path) from None
    if np.iscomplexobj(data):
        return Scan(str(path), kspace=as_kspace(data, path))
    return Scan(str(path), images=as_image_stack(data, path), attrs={"dtype": str(data.dtype)})
