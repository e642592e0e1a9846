r"""Cartesian MRI operators (fastMRI conventions: centred orthonormal 2D FFT).

Single coil:  :math:`y = M \odot F_c x`, :math:`A^H y = F_c^H (M \odot y)`.
Multi coil:   :math:`y_n = M \odot F_c (S_n x)`, :math:`A^H y = \sum_n \bar S_n F_c^H (M \odot y_n)`.

Images are complex ``(B, 1, H, W)``; k-space is complex ``(B, 1, H, W)`` (single coil) or
``(B, N, H, W)`` (N coils). deepinv's real layout is accepted at the boundary: ``(B, 2, H, W)``
images and ``(B, 2, H, W)`` / ``(B, 2, N, H, W)`` k-space come back in the same layout.

The transforms are :class:`recon.fft.MaskedFFT`: the centring shifts are folded into precomputed
phase factors (no memory is rolled) and the output phase into the mask, so ``A`` costs one product,
one FFT and one in-place product.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from deepinv.physics import LinearPhysics
from deepinv.physics.noise import NoiseModel, ZeroNoise
from torch import Tensor

from recon import layout
from recon.errors import InputError
from recon.fft import MaskedFFT, fft2c, ifft2c


def as_mask(mask: Tensor | np.ndarray, img_size: tuple[int, int] | None = None) -> Tensor:
    """Validate a sampling mask and return it as float32 ``(H, W)``.

    A 1D ``(W,)`` mask (fastMRI's layout for line masks) is broadcast along H = ``img_size[0]``.
    """
    mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
    if mask.is_complex():
        raise InputError("a sampling mask must be real")
    mask = mask.detach().to(torch.float32)
    if mask.dim() == 1:
        if img_size is None:
            raise InputError("a 1D (line) mask needs img_size=(H, W)")
        if mask.shape[0] != img_size[1]:
            raise InputError(f"line mask has {mask.shape[0]} columns, image width is {img_size[1]}")
        mask = mask.expand(int(img_size[0]), -1)
    while mask.dim() > 2 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.dim() != 2:
        raise InputError(f"mask must be (W,) or (H, W), got shape {tuple(mask.shape)}")
    if img_size is not None and tuple(mask.shape) != tuple(img_size):
        raise InputError(f"mask shape {tuple(mask.shape)} does not match image size {tuple(img_size)}")
    if not torch.isfinite(mask).all() or (mask < 0).any():
        raise InputError("mask values must be finite and non-negative")
    if not (mask > 0).any():
        raise InputError("mask samples nothing")
    return mask.contiguous()


class _CartesianBase(LinearPhysics):
    """Shared mask handling: the buffer ``mask`` and phase factors cached per (dtype, device)."""

    def __init__(
        self, mask: Tensor, img_size: tuple[int, int] | None, noise_model: NoiseModel | None, **kwargs: Any
    ):
        mask = as_mask(mask, img_size)
        super().__init__(noise_model=noise_model or ZeroNoise(), img_size=(1, *mask.shape), **kwargs)
        self.register_buffer("mask", mask)
        self._transforms: dict[tuple[torch.dtype, torch.device], MaskedFFT] = {}

    @property
    def shape(self) -> tuple[int, int]:
        """Image size ``(H, W)``."""
        return (int(self.mask.shape[0]), int(self.mask.shape[1]))

    @property
    def binary(self) -> bool:
        return bool(((self.mask == 0) | (self.mask == 1)).all())

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:  # .to(), .cuda(), .double() …
        self._transforms = {}
        return super()._apply(fn, *args, **kwargs)

    def transform(self, dtype: torch.dtype, device: torch.device) -> MaskedFFT:
        """The sampled centred FFT for this mask, built once per (dtype, device)."""
        key = (layout.complex_dtype(dtype), torch.device(device))
        if key not in self._transforms:
            self._transforms[key] = MaskedFFT(self.mask, key[0], key[1])
        return self._transforms[key]

    def _check(self, z: Tensor) -> None:
        if tuple(z.shape[-2:]) != self.shape:
            raise ValueError(
                f"{type(self).__name__} expects images of size {self.shape}, got {tuple(z.shape[-2:])}"
            )

    def forward_kspace(self, z: Tensor) -> Tensor:
        """``M ⊙ F_c z`` over the last two dimensions of a complex tensor."""
        self._check(z)
        return self.transform(z.dtype, z.device).forward(z)

    def adjoint_kspace(self, k: Tensor) -> Tensor:
        """``F_c^H (M ⊙ k)`` over the last two dimensions of a complex tensor."""
        self._check(k)
        return self.transform(k.dtype, k.device).adjoint(k)

    def update_parameters(self, mask: Tensor | None = None, **kwargs: Any) -> None:
        """Replace the sampling mask (deepinv's ``physics.update(mask=...)``)."""
        if mask is not None:
            self.mask = as_mask(mask, self.shape).to(self.mask.device)
            self._transforms = {}
        super().update_parameters(**kwargs)

    def noise(self, y: Tensor, **kwargs: Any) -> Tensor:
        """Noise on the sampled locations only (unsampled k-space stays exactly zero)."""
        if isinstance(self.noise_model, ZeroNoise):
            return y
        support = (self.mask > 0).to(layout.real_dtype(y.dtype))  # broadcasts over any layout
        return self.noise_model(y, **kwargs) * support


class CartesianMRI(_CartesianBase):
    r"""Single-coil Cartesian MRI :math:`y = M \odot F_c x` (fastMRI ``fft2c``), complex-native.

    :param mask: sampling mask ``(H, W)`` or fastMRI line mask ``(W,)`` (then give ``img_size``).
    :param img_size: ``(H, W)``; optional when the mask is 2D.
    :param noise_model: a deepinv noise model applied to the sampled k-space (complex Gaussian
        noise :math:`\mathcal{CN}(0, \sigma^2)` with deepinv's ``GaussianNoise(sigma)``).
    """

    def __init__(
        self,
        mask: Tensor,
        img_size: tuple[int, int] | None = None,
        noise_model: NoiseModel | None = None,
        **kwargs: Any,
    ):
        super().__init__(mask, img_size, noise_model, **kwargs)

    def A(self, x: Tensor, mask: Tensor | None = None, **kwargs: Any) -> Tensor:
        self.update_parameters(mask=mask)
        return layout.like(self.forward_kspace(layout.to_complex(x)), x)

    def A_adjoint(self, y: Tensor, mask: Tensor | None = None, **kwargs: Any) -> Tensor:
        self.update_parameters(mask=mask)
        return layout.like(self.adjoint_kspace(layout.to_complex(y)), y)

    def A_dagger(self, y: Tensor, **kwargs: Any) -> Tensor:
        r""":math:`A^\dagger y = F_c^H (M^+ y)`: for a binary mask the zero-filled adjoint."""
        if self.binary:
            return self.A_adjoint(y)
        inverse = torch.where(self.mask > 0, 1 / self.mask.clamp_min(1e-30) ** 2, 0)
        return self.A_adjoint(y * inverse)

    def prox_l2(self, z: Tensor, y: Tensor, gamma: float | Tensor, **kwargs: Any) -> Tensor:
        r"""Closed form of :math:`\arg\min_x \frac{\gamma}{2}\|Ax-y\|^2 + \frac12\|x-z\|^2`:
        :math:`x = F_c^H\big[(F_c z + \gamma M y) / (1 + \gamma M^2)\big]`."""
        zc, yc = layout.to_complex(z), layout.to_complex(y)
        self._check(zc)
        gamma = torch.as_tensor(gamma, dtype=layout.real_dtype(zc.dtype), device=zc.device)
        gamma = gamma.reshape(-1, *([1] * (zc.dim() - 1))) if gamma.dim() > 0 else gamma
        mask = self.mask.to(device=zc.device, dtype=gamma.dtype)
        k = (fft2c(zc) + gamma * mask * yc) / (1 + gamma * mask**2)
        return layout.like(ifft2c(k), z)

    def exact_norm(self) -> float:
        """:math:`\\|A\\|_2 = \\max_k M_k` (the FFT is unitary)."""
        return float(self.mask.max())


class MulticoilMRI(_CartesianBase):
    r"""Multi-coil Cartesian MRI with given sensitivity maps :math:`S` of shape ``(N, H, W)``.

    :math:`y_n = M \odot F_c (S_n x)`; :math:`A^H y = \sum_n \bar S_n F_c^H(M \odot y_n)`.
    """

    def __init__(
        self,
        mask: Tensor,
        coil_maps: Tensor,
        img_size: tuple[int, int] | None = None,
        noise_model: NoiseModel | None = None,
        **kwargs: Any,
    ):
        super().__init__(mask, img_size, noise_model, **kwargs)
        coil_maps = torch.as_tensor(coil_maps)
        if not coil_maps.is_complex() or coil_maps.dim() != 3 or tuple(coil_maps.shape[1:]) != self.shape:
            raise InputError(
                f"coil_maps must be complex (N, H, W) with (H, W) = {self.shape}, "
                f"got {coil_maps.dtype} {tuple(coil_maps.shape)}"
            )
        if not torch.isfinite(torch.view_as_real(coil_maps)).all():
            raise InputError("coil_maps contain NaN or Inf")
        # stored as a real (N, H, W, 2) view: Module.to(float64) would drop an imaginary part
        self.register_buffer("coil_maps_ri", torch.view_as_real(coil_maps.to(torch.complex64)).clone())

    @property
    def coil_maps(self) -> Tensor:
        """Complex sensitivity maps ``(N, H, W)``."""
        return torch.view_as_complex(self.coil_maps_ri.contiguous())

    @property
    def coils(self) -> int:
        return int(self.coil_maps.shape[0])

    def A(self, x: Tensor, **kwargs: Any) -> Tensor:
        z = layout.to_complex(x)  # (B, 1, H, W)
        maps = self.coil_maps.to(z.dtype)
        k = self.forward_kspace(z * maps)  # (B, N, H, W)
        return torch.stack([k.real, k.imag], dim=1) if layout.is_channel_pair(x) else k

    def A_adjoint(self, y: Tensor, **kwargs: Any) -> Tensor:
        if not y.is_complex():
            if y.dim() != 5 or y.shape[1] != 2:
                raise ValueError("real multi-coil k-space must have deepinv's layout (B, 2, N, H, W)")
            k = torch.complex(y[:, 0], y[:, 1])
        else:
            k = y
        maps = self.coil_maps.to(k.dtype)
        z = (self.adjoint_kspace(k) * maps.conj()).sum(dim=1, keepdim=True)
        return z if y.is_complex() else layout.to_channel_pair(z)

    def exact_norm(self) -> float | None:
        """:math:`\\max_r \\sqrt{\\sum_n |S_n(r)|^2}` when every k-space sample is taken, else unknown."""
        if not bool((self.mask == 1).all()):
            return None
        return float(self.coil_maps.abs().pow(2).sum(0).sqrt().max())


def simulated_coil_maps(
    img_size: tuple[int, int], coils: int, *, width: float = 0.7, phase: float = math.pi / 2
) -> Tensor:
    r"""Smooth coil sensitivities on a ring around the field of view, normalised so that
    :math:`\sum_n |S_n|^2 = 1` everywhere (then the fully sampled operator is an isometry).

    Coil :math:`n` sits at angle :math:`2\pi n/N` on a circle of radius 1.5 (in units of the half
    field of view); its magnitude is a Gaussian of the distance with std ``width`` and its phase a
    linear ramp of slope ``phase`` along the coil's direction.
    """
    if coils < 1:
        raise InputError(f"coils must be >= 1, got {coils}")
    height, wid = img_size
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, height, dtype=torch.float64),
        torch.linspace(-1, 1, wid, dtype=torch.float64),
        indexing="ij",
    )
    maps = []
    for n in range(coils):
        angle = 2 * math.pi * n / coils
        cy, cx = 1.5 * math.sin(angle), 1.5 * math.cos(angle)
        magnitude = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))
        ramp = phase * (yy * math.sin(angle) + xx * math.cos(angle))
        maps.append(torch.polar(magnitude, ramp))
    stacked = torch.stack(maps)
    stacked = stacked / stacked.abs().pow(2).sum(0, keepdim=True).sqrt()
    return stacked.to(torch.complex64)
