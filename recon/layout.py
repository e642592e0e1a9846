"""Complex images inside recon, deepinv's 2-channel real layout at the boundary.

recon keeps MR images and k-space as complex tensors ``(B, C, H, W)``. deepinv's MRI code uses real
tensors with a channel pair ``(B, 2, ...)`` = (real, imaginary). Operators accept both: a real
tensor whose channel dimension has size 2 is read as deepinv's layout and the result is returned in
the same layout.
"""

from __future__ import annotations

import torch
from torch import Tensor


def is_channel_pair(x: Tensor) -> bool:
    """True for deepinv's real ``(B, 2, ...)`` representation of a complex tensor."""
    return not x.is_complex() and x.dim() >= 3 and x.shape[1] == 2


def to_complex(x: Tensor) -> Tensor:
    """``(B, 2, ...)`` real → ``(B, 1, ...)`` complex; complex passes through; other real tensors are
    cast to complex (zero imaginary part)."""
    if x.is_complex():
        return x
    if is_channel_pair(x):
        return torch.complex(x[:, :1], x[:, 1:2])
    return x.to(torch.promote_types(x.dtype, torch.complex64))


def to_channel_pair(z: Tensor) -> Tensor:
    """``(B, 1, ...)`` complex → deepinv's ``(B, 2, ...)`` real layout."""
    if z.shape[1] != 1:
        raise ValueError(f"expected one complex channel, got shape {tuple(z.shape)}")
    return torch.cat([z.real, z.imag], dim=1)


def like(z: Tensor, reference: Tensor) -> Tensor:
    """Return complex ``z`` in the layout of ``reference`` (channel pair if it was one)."""
    return to_channel_pair(z) if is_channel_pair(reference) else z


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for complex64, float64 for complex128, the dtype itself for real dtypes."""
    return torch.empty((), dtype=dtype).real.dtype


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """complex64 for float32 (and lower), complex128 for float64, the dtype itself if complex."""
    return torch.promote_types(dtype, torch.complex64)
