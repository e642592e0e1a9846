r"""Noise models (deepinv's, with validated parameters and seeded generators) and the ``denoise``
operator.

- ``gaussian``: :math:`y = z + \sigma\varepsilon`; for complex data :math:`\varepsilon \sim
  \mathcal{CN}(0, 1)` (real and imaginary parts each of variance 1/2).
- ``poisson``: :math:`y = \gamma\,\mathcal{P}(z/\gamma)` (gain :math:`\gamma`).
- ``poisson-gaussian``: :math:`y = \gamma\,\mathcal{P}(z/\gamma) + \sigma\varepsilon`.
- ``rician``: :math:`y = |z + \sigma(\varepsilon_1 + i\varepsilon_2)|`, the magnitude of a complex
  image with Gaussian noise (magnitude MR images); real or complex :math:`z`.

Every model takes ``rng`` (a ``torch.Generator``) so a seed reproduces the noise without touching
the global RNG. Any model attaches to any operator (``physics.noise_model = model``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from deepinv.physics import Denoising
from deepinv.physics.noise import GaussianNoise, PoissonGaussianNoise, PoissonNoise, RicianNoise
from torch import Tensor

from recon.errors import InputError


def _check(name: str, value: float, *, positive: bool = False) -> float:
    ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise InputError(
            f"{name} must be {'positive' if positive else 'non-negative'} and finite, got {value}"
        )
    return float(value)


def gaussian(sigma: float = 0.1, rng: torch.Generator | None = None) -> GaussianNoise:
    """Additive white Gaussian noise of standard deviation sigma (complex: CN(0, sigma²))."""
    return GaussianNoise(sigma=_check("sigma", sigma), rng=rng)


def poisson(gain: float = 0.01, rng: torch.Generator | None = None) -> PoissonNoise:
    """Poisson (shot) noise y = gain · Poisson(z / gain); z must be non-negative."""
    return PoissonNoise(gain=_check("gain", gain, positive=True), normalize=True, clip_positive=True, rng=rng)


def poisson_gaussian(
    gain: float = 0.01, sigma: float = 0.01, rng: torch.Generator | None = None
) -> PoissonGaussianNoise:
    """Poisson shot noise plus Gaussian read-out noise."""
    return PoissonGaussianNoise(
        gain=_check("gain", gain, positive=True), sigma=_check("sigma", sigma), clip_positive=True, rng=rng
    )


class ComplexRicianNoise(RicianNoise):
    """deepinv's Rician noise, extended to complex input: the magnitude of ``z + σ(ε₁ + iε₂)``."""

    def forward(
        self, x: Tensor, sigma: float | Tensor | None = None, seed: int | None = None, **kwargs: Any
    ) -> Tensor:
        if not x.is_complex():
            return super().forward(x, sigma=sigma, seed=seed)
        self.update_parameters(sigma=sigma)
        self.rng_manual_seed(seed)
        real, imag = self.randn_like(x.real), self.randn_like(x.real)
        sigma_t = self.sigma.to(device=x.device, dtype=real.dtype)
        return (x + torch.complex(sigma_t * real, sigma_t * imag)).abs()


def rician(sigma: float = 0.05, rng: torch.Generator | None = None) -> ComplexRicianNoise:
    """Rician noise: magnitude of the image after complex Gaussian noise (magnitude MR)."""
    return ComplexRicianNoise(sigma=_check("sigma", sigma), rng=rng)


class Denoise(Denoising):
    """Identity forward operator: the measurement is the image plus noise."""

    def exact_norm(self) -> float:
        return 1.0


def build_denoise(img_size: tuple[int, int]) -> Denoise:
    """Denoising: y = noise(x); pair with --noise (default Gaussian sigma 0.1)."""
    return Denoise(noise_model=gaussian(0.1))
