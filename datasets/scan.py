"""What a reader returns: a :class:`Scan` (k-space and/or images of one volume), plus the checks
every reader applies before it allocates anything."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recon.errors import InputError

MAX_SIDE = 16384
MAX_SLICES = 4096
MAX_COILS = 128
MAX_ELEMENTS = 2**28  # about 2 GiB of complex64: refuse anything larger before reading it


@dataclass
class Scan:
    """One volume.

    ``kspace``: centred k-space, complex64 ``(S, H, W)`` or ``(S, coils, H, W)``, or ``None``.
    ``images``: float32 ``(S, H, W)``: the ground truth of a k-space file, or the image data itself.
    ``mask``: float32 ``(W,)`` (line mask) or ``(H, W)`` when the k-space is already undersampled.
    """

    source: str
    kspace: np.ndarray | None = None
    images: np.ndarray | None = None
    mask: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def slices(self) -> int:
        data = self.kspace if self.kspace is not None else self.images
        return 0 if data is None else int(data.shape[0])

    @property
    def coils(self) -> int:
        """Number of receive coils (0 when there is no k-space, 1 for single coil)."""
        if self.kspace is None:
            return 0
        return int(self.kspace.shape[1]) if self.kspace.ndim == 4 else 1

    @property
    def image_shape(self) -> tuple[int, int]:
        data = self.kspace if self.kspace is not None else self.images
        assert data is not None
        return int(data.shape[-2]), int(data.shape[-1])


def check_shape(shape: tuple[int, ...], source: str | Path, what: str) -> None:
    """Refuse empty, absurdly large or oddly sized arrays from their shape alone."""
    if any(int(s) <= 0 for s in shape):
        raise InputError(f"{what} is empty (shape {tuple(shape)})", source)
    height, width = int(shape[-2]), int(shape[-1])
    if height > MAX_SIDE or width > MAX_SIDE:
        raise InputError(f"{what} of {height}x{width} exceeds the {MAX_SIDE} pixel limit per side", source)
    if height < 2 or width < 2:
        raise InputError(f"{what} of {height}x{width} is too small to be an image", source)
    if len(shape) >= 3 and int(shape[0]) > MAX_SLICES:
        raise InputError(f"{what} has {shape[0]} slices (limit {MAX_SLICES})", source)
    if len(shape) == 4 and int(shape[1]) > MAX_COILS:
        raise InputError(f"{what} has {shape[1]} coils (limit {MAX_COILS})", source)
    if math.prod(int(s) for s in shape) > MAX_ELEMENTS:
        raise InputError(f"{what} of shape {tuple(shape)} is too large (limit {MAX_ELEMENTS} values)", source)


def check_finite(array: np.ndarray, source: str | Path, what: str) -> None:
    if not np.isfinite(array).all():
        raise InputError(f"{what} contains NaN or Inf values", source)


def as_image_stack(array: np.ndarray, source: str | Path, what: str = "image") -> np.ndarray:
    """A real array ``(H, W)`` or ``(S, H, W)`` as float32 ``(S, H, W)``, finite."""
    if np.iscomplexobj(array):
        raise InputError(f"{what} must be real-valued", source)
    if array.dtype.kind not in "biuf":
        raise InputError(f"{what} has unsupported dtype {array.dtype}", source)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise InputError(f"{what} must be 2D or a stack of 2D slices, got shape {array.shape}", source)
    check_shape(array.shape, source, what)
    out = np.ascontiguousarray(array, dtype=np.float32)
    check_finite(out, source, what)
    return out


def as_kspace(array: np.ndarray, source: str | Path, what: str = "kspace") -> np.ndarray:
    """A complex array ``(H, W)``, ``(S, H, W)`` or ``(S, coils, H, W)`` as complex64, finite."""
    if not np.iscomplexobj(array):
        raise InputError(f"{what} must be complex-valued, got {array.dtype}", source)
    if array.ndim == 2:
        array = array[None]
    if array.ndim not in (3, 4):
        raise InputError(f"{what} must have shape (slices, [coils,] H, W), got {array.shape}", source)
    check_shape(array.shape, source, what)
    out = np.ascontiguousarray(array, dtype=np.complex64)
    check_finite(out, source, what)
    return out


def as_mask_array(array: np.ndarray, shape: tuple[int, int], source: str | Path) -> np.ndarray:
    """A sampling mask ``(W,)`` or ``(H, W)`` (a leading axis of 1 is dropped) with values in [0, 1]."""
    array = np.asarray(array)
    while array.ndim > 1 and array.shape[0] == 1:
        array = array[0]
    if array.dtype.kind not in "biuf":
        raise InputError(f"mask has unsupported dtype {array.dtype}", source)
    if array.shape not in ((shape[1],), tuple(shape)):
        raise InputError(f"mask shape {array.shape} does not fit k-space of size {shape}", source)
    mask = array.astype(np.float32)
    if not np.isfinite(mask).all() or (mask < 0).any() or (mask > 1).any():
        raise InputError("mask values must lie in [0, 1]", source)
    if not (mask > 0).any():
        raise InputError("mask samples nothing", source)
    return mask
