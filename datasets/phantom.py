r"""Seeded procedural phantoms: random ellipses with texture, for unlimited training data.

A phantom is a head-like ellipse with a bright rim ("skull"), a darker interior, 6–14 random inner
ellipses of either sign, and a multiplicative texture: white noise low-pass filtered with a random
correlation length, :math:`x \leftarrow x\,(1 + t\,g)`. Values are clipped at 0 and scaled to a
maximum of 1. Every draw comes from ``numpy.random.default_rng(seed)``: the same seed gives the same
phantom in any process, and the global RNG is never touched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from recon.errors import InputError

Seed = int | Sequence[int] | np.random.Generator | None


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    height, width = size
    return np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")


def _ellipse(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ay: float, ax: float, angle: float
) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return (u / ax) ** 2 + (v / ay) ** 2 <= 1


def smooth_field(size: tuple[int, int], rng: np.random.Generator, correlation: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length ``correlation``
    (fraction of the image side): white noise times a Gaussian transfer function in Fourier space."""
    height, width = size
    noise = rng.standard_normal(size)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    scale = correlation * max(height, width)
    transfer = np.exp(-2 * (math.pi * scale) ** 2 * (fy**2 + fx**2))
    field = np.real(np.fft.ifft2(np.fft.fft2(noise) * transfer))
    return (field - field.mean()) / max(field.std(), 1e-12)


def phantom(
    size: tuple[int, int] = (128, 128),
    seed: Seed = None,
    *,
    ellipses: tuple[int, int] = (6, 14),
    texture: float = 0.25,
) -> np.ndarray:
    """One random phantom, float32 ``(H, W)`` in ``[0, 1]``."""
    height, width = (int(s) for s in size)
    if not (8 <= height <= 8192 and 8 <= width <= 8192):
        raise InputError(f"phantom size must be within 8..8192, got {size}")
    rng = _rng(seed)
    yy, xx = _grid((height, width))
    head_y, head_x = rng.uniform(0.75, 0.92), rng.uniform(0.6, 0.85)
    cy, cx, tilt = rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), rng.uniform(-0.3, 0.3)
    rim = rng.uniform(0.04, 0.08)
    head = _ellipse(yy, xx, cy, cx, head_y, head_x, tilt)
    inner = _ellipse(yy, xx, cy, cx, head_y - rim, head_x - rim, tilt)
    image = np.where(head, rng.uniform(0.8, 1.0), 0.0)
    image = np.where(inner, rng.uniform(0.2, 0.45), image)
    for _ in range(int(rng.integers(ellipses[0], ellipses[1] + 1))):
        radius = rng.uniform(0, 0.75)
        theta = rng.uniform(0, 2 * math.pi)
        ey = cy + radius * (head_y - rim) * math.sin(theta)
        ex = cx + radius * (head_x - rim) * math.cos(theta)
        ay, ax = rng.uniform(0.03, 0.3), rng.uniform(0.03, 0.3)
        value = rng.uniform(0.05, 0.45) * rng.choice((-1.0, 1.0))
        image = image + value * (_ellipse(yy, xx, ey, ex, ay, ax, rng.uniform(0, math.pi)) & inner)
    if texture > 0:
        field = smooth_field((height, width), rng, rng.uniform(0.005, 0.04))
        image = image * (1 + texture * field)
    image = np.clip(image, 0, None)
    return (image / max(float(image.max()), 1e-12)).astype(np.float32)


def smooth_phase(size: tuple[int, int], seed: Seed = None, max_phase: float = math.pi) -> np.ndarray:
    """A smooth MR-like phase map (radians): a random plane plus a quadratic bowl plus a
    low-frequency random field, scaled so that its range is at most ``2 * max_phase``."""
    rng = _rng(seed)
    yy, xx = _grid(size)
    phase = (
        rng.normal() * yy
        + rng.normal() * xx
        + rng.normal() * (yy**2 + xx**2)
        + 0.5 * smooth_field(size, rng, 0.15)
    )
    phase = phase - phase.mean()
    peak = float(np.abs(phase).max())
    return (phase * (max_phase / peak if peak > 0 else 0.0)).astype(np.float32)


class PhantomDataset(torch.utils.data.Dataset):
    """``length`` phantoms of ``size``; item ``i`` is ``phantom(size, seed=(seed, i))`` as a
    float32 ``(1, H, W)`` tensor, so items are reproducible and independent of access order."""

    def __init__(self, length: int, size: tuple[int, int] = (128, 128), seed: int = 0, texture: float = 0.25):
        if length < 1:
            raise InputError(f"length must be >= 1, got {length}")
        self.length, self.size, self.seed, self.texture = int(length), size, int(seed), texture

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return torch.from_numpy(phantom(self.size, (self.seed, index), texture=self.texture))[None]
