r"""k-space sampling masks with fastMRI semantics, reproducible from a seed.

Each mask function is a small class; ``mask_fn(shape, seed)`` returns a float32 ``(H, W)`` tensor of
zeros and ones. Randomness comes from ``numpy.random.default_rng(seed)`` only, never the global RNG,
so the same seed gives the same mask in any process.

- :class:`RandomLineMask` (fastMRI ``RandomMaskFunc``): a fully sampled centre of
  ``round(W * center_fraction)`` phase-encode lines, outer lines kept independently with probability
  :math:`p = (W/R - n_c) / (W - n_c)`, so the expected sampled fraction is :math:`1/R`.
- :class:`EquispacedLineMask` (fastMRI ``EquispacedMaskFractionFunc``): the same centre, outer lines
  every :math:`R' = R (n_c - W) / (n_c R - W)` columns from a random offset, so the sampled fraction
  is :math:`1/R`.
- :class:`GaussianMask2D`: variable-density 2D point sampling (for 3D Cartesian or simulation
  studies): a fully sampled central ellipse covering ``center_fraction`` of each axis, the remaining
  :math:`HW/R - n_c` points drawn without replacement with density :math:`\propto e^{-r^2/2\sigma^2}`
  in normalised coordinates :math:`r \in [-1, 1]^2`.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from recon.errors import InputError

MaskKind = Literal["random", "equispaced", "gaussian"]


class MaskFunction:
    """Base class: validated ``acceleration`` (R ≥ 1) and ``center_fraction`` (0 ≤ c ≤ 1/R)."""

    lines = True  # whole phase-encode lines (columns); the mask is constant along H

    def __init__(self, acceleration: float, center_fraction: float):
        if not (math.isfinite(acceleration) and acceleration >= 1):
            raise InputError(f"acceleration must be a finite number >= 1, got {acceleration}")
        if not (math.isfinite(center_fraction) and 0 <= center_fraction <= 1):
            raise InputError(f"center_fraction must be in [0, 1], got {center_fraction}")
        if center_fraction > 1 / acceleration + 1e-12:
            raise InputError(
                f"center_fraction {center_fraction} exceeds the sampling budget 1/acceleration = "
                f"{1 / acceleration:.4g}"
            )
        self.acceleration = float(acceleration)
        self.center_fraction = float(center_fraction)

    def __call__(self, shape: tuple[int, int], seed: int | None = None) -> Tensor:
        height, width = (int(s) for s in shape)
        if height < 1 or width < 1:
            raise InputError(f"mask shape must be positive, got {shape}")
        rng = np.random.default_rng(seed)
        mask = self.sample(height, width, rng)
        return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))

    def sample(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(acceleration={self.acceleration}, center_fraction={self.center_fraction})"
        )


def centre_lines(width: int, num_low: int) -> np.ndarray:
    """Boolean ``(W,)``: ``num_low`` central columns, placed as fastMRI places them."""
    mask = np.zeros(width, dtype=bool)
    start = (width - num_low + 1) // 2
    mask[start : start + num_low] = True
    return mask


class RandomLineMask(MaskFunction):
    """Random Cartesian line mask (fastMRI ``RandomMaskFunc``)."""

    def sample(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        num_low = round(width * self.center_fraction)
        prob = (width / self.acceleration - num_low) / max(width - num_low, 1)
        lines = (rng.uniform(size=width) < prob) | centre_lines(width, num_low)
        return np.broadcast_to(lines, (height, width))


class EquispacedLineMask(MaskFunction):
    """Equispaced Cartesian line mask with a random offset (fastMRI ``EquispacedMaskFractionFunc``)."""

    def sample(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        num_low = round(width * self.center_fraction)
        lines = centre_lines(width, num_low)
        if num_low * self.acceleration < width:
            spacing = self.acceleration * (num_low - width) / (num_low * self.acceleration - width)
            offset = rng.integers(0, max(round(spacing), 1))
            picks = np.around(np.arange(offset, width - 1, spacing)).astype(int)
            lines[picks[picks < width]] = True
        return np.broadcast_to(lines, (height, width))


class GaussianMask2D(MaskFunction):
    """Variable-density 2D Gaussian point mask with a fully sampled central ellipse."""

    lines = False

    def __init__(self, acceleration: float, center_fraction: float, sigma: float = 0.35):
        super().__init__(acceleration, center_fraction)
        if not (math.isfinite(sigma) and sigma > 0):
            raise InputError(f"sigma must be positive, got {sigma}")
        self.sigma = float(sigma)

    def sample(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        ky = np.linspace(-1, 1, height)[:, None]
        kx = np.linspace(-1, 1, width)[None, :]
        radius2 = ky**2 + kx**2
        radius = max(self.center_fraction, 1e-12)  # semi-axes: the fraction of each axis
        centre = (ky / radius) ** 2 + (kx / radius) ** 2 <= 1
        mask = centre.copy()
        remaining = round(height * width / self.acceleration) - int(centre.sum())
        if remaining > 0:
            density = np.exp(-radius2 / (2 * self.sigma**2))[~centre]
            picks = rng.choice(density.size, size=remaining, replace=False, p=density / density.sum())
            outer = np.zeros(density.size, dtype=bool)
            outer[picks] = True
            mask[~centre] = outer
        return mask


MASKS: dict[str, type[MaskFunction]] = {
    "random": RandomLineMask,
    "equispaced": EquispacedLineMask,
    "gaussian": GaussianMask2D,
}


def mask_function(kind: str, acceleration: float, center_fraction: float) -> MaskFunction:
    """The mask function called ``kind`` (``random``, ``equispaced`` or ``gaussian``)."""
    if kind not in MASKS:
        raise InputError(f"unknown mask {kind!r} (known: {', '.join(MASKS)})")
    return MASKS[kind](acceleration, center_fraction)
