r"""Blur operators :math:`y = k * x` with Gaussian, box and motion kernels and four boundaries.

The convolutions and their exact adjoints are deepinv's (``deepinv.physics.functional.conv2d`` and
``conv_transpose2d``, or their FFT versions for large kernels); this module builds the kernels,
picks the boundary handling and adds complex-valued images (real and imaginary parts blurred
separately) and float64.

Boundaries: ``circular`` (periodic, square operator, norm known in closed form), ``reflect``,
``replicate``, ``zeros`` (same-size output) and ``valid`` (output smaller by the kernel size - 1).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import deepinv.physics.functional as dF
import torch
from deepinv.physics import LinearPhysics
from deepinv.physics.noise import NoiseModel, ZeroNoise
from torch import Tensor

from recon.errors import InputError

Boundary = Literal["circular", "reflect", "replicate", "zeros", "valid"]
KernelKind = Literal["gaussian", "box", "motion"]
MAX_KERNEL = 255
FFT_ABOVE = 15 * 15  # kernels with more taps than this are applied by FFT


def _odd_size(size: int | None, fallback: int) -> int:
    size = fallback if size is None else int(size)
    if size < 1 or size % 2 == 0 or size > MAX_KERNEL:
        raise InputError(f"kernel size must be an odd integer in [1, {MAX_KERNEL}], got {size}")
    return size


def gaussian_kernel(sigma: float, size: int | None = None, angle: float = 0.0) -> Tensor:
    """Isotropic Gaussian ``(1, 1, s, s)`` summing to 1 (deepinv's ``gaussian_blur``); size defaults
    to ``2 * int(sigma / 0.3 + 1) + 1``."""
    if not (math.isfinite(sigma) and sigma > 0):
        raise InputError(f"sigma must be a positive number, got {sigma}")
    size = _odd_size(size, 2 * int(sigma / 0.3 + 1) + 1)
    kernel = dF.gaussian_blur(psf_size=(size, size), sigma=(sigma, sigma), angle=angle)
    kernel = kernel.reshape(1, 1, size, size)
    return kernel / kernel.sum()


def box_kernel(size: int = 5) -> Tensor:
    """Uniform ``size × size`` average."""
    size = _odd_size(size, 5)
    return torch.full((1, 1, size, size), 1.0 / size**2)


def motion_kernel(length: float = 9.0, angle: float = 0.0, size: int | None = None) -> Tensor:
    """Linear motion: a segment of ``length`` pixels through the centre at ``angle`` degrees
    (counter-clockwise from the x axis), anti-aliased by bilinear splatting of 16 points per pixel."""
    if not (math.isfinite(length) and 1 <= length <= MAX_KERNEL - 2):
        raise InputError(f"motion length must be in [1, {MAX_KERNEL - 2}], got {length}")
    if not math.isfinite(angle):
        raise InputError(f"angle must be finite, got {angle}")
    size = _odd_size(size, 2 * math.ceil(length / 2) + 1)
    centre = size // 2
    t = torch.linspace(-(length - 1) / 2, (length - 1) / 2, max(2, int(16 * length)), dtype=torch.float64)
    theta = math.radians(angle)
    xs, ys = centre + t * math.cos(theta), centre - t * math.sin(theta)
    kernel = torch.zeros(size, size, dtype=torch.float64)
    x0, y0 = xs.floor(), ys.floor()
    for dx in (0, 1):
        for dy in (0, 1):
            weight = (1 - (xs - x0 - dx).abs()) * (1 - (ys - y0 - dy).abs())
            xi, yi = (x0 + dx).long(), (y0 + dy).long()
            inside = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
            kernel.index_put_((yi[inside], xi[inside]), weight[inside], accumulate=True)
    return (kernel / kernel.sum()).float().reshape(1, 1, size, size)


class Blur(LinearPhysics):
    r"""Convolution :math:`y = k * x` with a fixed kernel ``(1, 1, h, w)`` and a boundary rule.

    Works on real and complex ``(B, C, H, W)`` tensors in float32 or float64.
    """

    def __init__(
        self,
        kernel: Tensor,
        boundary: Boundary = "circular",
        img_size: tuple[int, int] | None = None,
        noise_model: NoiseModel | None = None,
        **kwargs: Any,
    ):
        if boundary not in ("circular", "reflect", "replicate", "zeros", "valid"):
            raise InputError(f"unknown boundary {boundary!r}")
        kernel = torch.as_tensor(kernel, dtype=torch.float32)
        if kernel.dim() != 4 or kernel.shape[:2] != (1, 1) or not torch.isfinite(kernel).all():
            raise InputError("kernel must be a finite (1, 1, h, w) tensor")
        if img_size is not None and (kernel.shape[-2] > img_size[0] or kernel.shape[-1] > img_size[1]):
            raise InputError(f"kernel {tuple(kernel.shape[-2:])} is larger than the image {tuple(img_size)}")
        super().__init__(noise_model=noise_model or ZeroNoise(), **kwargs)
        self.register_buffer("kernel", kernel)
        self.boundary = boundary
        self.shape = None if img_size is None else (int(img_size[0]), int(img_size[1]))
        self.use_fft = kernel[0, 0].numel() > FFT_ABOVE
        self._padding = "constant" if boundary == "zeros" else boundary

    def _apply_real(self, x: Tensor, transpose: bool) -> Tensor:
        kernel = self.kernel.to(dtype=x.dtype)
        if transpose:
            conv = dF.conv_transpose2d_fft if self.use_fft else dF.conv_transpose2d
        else:
            conv = dF.conv2d_fft if self.use_fft else dF.conv2d
        return conv(x, kernel, padding=self._padding)

    def _apply_any(self, x: Tensor, transpose: bool) -> Tensor:
        if x.is_complex():
            return torch.complex(
                self._apply_real(x.real.contiguous(), transpose),
                self._apply_real(x.imag.contiguous(), transpose),
            )
        return self._apply_real(x, transpose)

    def A(self, x: Tensor, **kwargs: Any) -> Tensor:
        return self._apply_any(x, transpose=False)

    def A_adjoint(self, y: Tensor, **kwargs: Any) -> Tensor:
        return self._apply_any(y, transpose=True)

    def exact_norm(self) -> float | None:
        r"""For the circular boundary :math:`\|A\|_2 = \max_\omega |\hat k(\omega)|` on the image grid."""
        if self.boundary != "circular" or self.shape is None:
            return None
        spectrum = dF.filter_fft(self.kernel.double(), (1, 1, *self.shape), real_fft=False, dims=(-2, -1))
        return float(spectrum.abs().max())


def build_blur(
    img_size: tuple[int, int],
    kernel: KernelKind = "gaussian",
    sigma: float = 2.0,
    size: int | None = None,
    length: float = 9.0,
    angle: float = 0.0,
    boundary: Boundary = "circular",
) -> Blur:
    """Blur with a Gaussian (sigma), box (size) or motion (length, angle) kernel."""
    if kernel == "gaussian":
        weights = gaussian_kernel(sigma, size, angle)
    elif kernel == "box":
        weights = box_kernel(5 if size is None else size)
    elif kernel == "motion":
        weights = motion_kernel(length, angle, size)
    else:
        raise InputError(f"unknown kernel {kernel!r} (known: gaussian, box, motion)")
    return Blur(weights, boundary=boundary, img_size=img_size)
