"""MRI: centred FFT, masks with fastMRI semantics, agreement with deepinv, closed-form prox/dagger."""

from __future__ import annotations

import math

import deepinv as dinv
import numpy as np
import pytest
import torch

from recon import InputError, build_operator
from recon.fft import fft2c, ifft2c
from recon.layout import to_channel_pair
from recon.operators.masks import EquispacedLineMask, GaussianMask2D, RandomLineMask, mask_function
from recon.operators.mri import CartesianMRI, MulticoilMRI, as_mask, simulated_coil_maps


def _reference_fft2c(x):
    return torch.fft.fftshift(
        torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1)
    )


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (6, 5), (320, 320), (17, 1)])
def test_fft2c_matches_shifted_fft_and_inverts(size):
    x = torch.randn(2, 1, *size, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(fft2c(x), _reference_fft2c(x))
    torch.testing.assert_close(ifft2c(fft2c(x)), x)
    if size[0] % 2 == 0 and size[1] % 2 == 0:  # fastMRI's ifft2c is the exact inverse for even sizes
        reference = torch.fft.fftshift(
            torch.fft.ifft2(torch.fft.ifftshift(fft2c(x), dim=(-2, -1)), norm="ortho"), dim=(-2, -1)
        )
        torch.testing.assert_close(ifft2c(fft2c(x)), reference)


def test_matches_deepinv_mri():
    mask = RandomLineMask(4, 0.08)((64, 48), seed=3)
    ours = CartesianMRI(mask)
    theirs = dinv.physics.MRI(mask=mask, img_size=(64, 48))
    x = torch.randn(4, 2, 64, 48, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours.A(x), theirs.A(x), rtol=1e-5, atol=1e-5)
    y = theirs.A(x)
    torch.testing.assert_close(ours.A_adjoint(y), theirs.A_adjoint(y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("acceleration,center", [(4, 0.08), (8, 0.04), (2, 0.16)])
def test_random_mask_semantics(acceleration, center):
    width = 368
    fn = RandomLineMask(acceleration, center)
    lines = np.stack([fn((4, width), seed=s)[0].numpy() for s in range(200)])
    num_low = round(width * center)
    start = (width - num_low + 1) // 2
    assert (lines[:, start : start + num_low] == 1).all()
    assert lines.mean() == pytest.approx(1 / acceleration, rel=0.03)
    torch.testing.assert_close(fn((4, width), seed=5), fn((4, width), seed=5))
    assert not torch.equal(fn((4, width), seed=5), fn((4, width), seed=6))
    assert (fn((4, width), seed=5) == fn((4, width), seed=5)[0]).all()  # whole phase-encode lines


@pytest.mark.parametrize("acceleration,center", [(4, 0.08), (8, 0.04)])
def test_equispaced_mask_fraction(acceleration, center):
    width = 320
    mask = EquispacedLineMask(acceleration, center)((2, width), seed=0)[0]
    assert float(mask.mean()) == pytest.approx(1 / acceleration, abs=0.02)
    num_low = round(width * center)
    start = (width - num_low + 1) // 2
    assert (mask[start : start + num_low] == 1).all()
    outer = np.flatnonzero(mask.numpy()[: start - 1])
    assert np.ptp(np.diff(outer)) <= 1  # equispaced up to rounding


def test_gaussian_mask_count_and_density():
    fn = GaussianMask2D(6, 0.1)
    mask = fn((96, 80), seed=0)
    assert int(mask.sum()) == round(96 * 80 / 6)
    assert (mask[45:51, 38:42] == 1).all()  # fully sampled central ellipse (semi-axes 10% of each side)
    near = mask[32:64, 26:54].mean()
    corner = mask[:16, :16].mean()
    assert corner < near / 3


@pytest.mark.parametrize(
    ("acceleration", "center"), [(0, 0.08), (-2, 0.08), (math.nan, 0.08), (4, 1.5), (4, -0.1), (8, 0.2)]
)
def test_mask_parameters_are_validated(acceleration, center):
    with pytest.raises(InputError):
        mask_function("random", acceleration, center)


def test_mask_validation():
    with pytest.raises(InputError, match="samples nothing"):
        as_mask(torch.zeros(8, 8))
    with pytest.raises(InputError, match="line mask"):
        as_mask(torch.ones(7), img_size=(8, 8))
    with pytest.raises(InputError):
        as_mask(torch.full((8, 8), float("nan")))
    assert as_mask(torch.ones(8), img_size=(5, 8)).shape == (5, 8)


def test_prox_l2_is_the_exact_minimiser():
    physics = build_operator("mri", (32, 24), acceleration=4, seed=2)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 1, 32, 24, dtype=torch.complex128, generator=g)
    y = physics.A(torch.randn(2, 1, 32, 24, dtype=torch.complex128, generator=g))
    gamma = 0.7
    x = physics.prox_l2(z, y, gamma)
    gradient = gamma * physics.A_adjoint(physics.A(x) - y) + (x - z)
    assert float(gradient.abs().max()) < 1e-10
    x_pair = physics.prox_l2(to_channel_pair(z), to_channel_pair(y), gamma)
    torch.testing.assert_close(x_pair, to_channel_pair(x))


def test_dagger_reproduces_measurements():
    physics = build_operator("mri", (32, 32), acceleration=4)
    y = physics.A(torch.randn(1, 1, 32, 32, dtype=torch.complex64))
    torch.testing.assert_close(physics.A(physics.A_dagger(y)), y, rtol=1e-5, atol=1e-5)


def test_noise_only_on_sampled_locations():
    physics = build_operator("mri", (32, 32), acceleration=4, noise="gaussian:sigma=0.5", noise_seed=0)
    y = physics(torch.zeros(2, 1, 32, 32, dtype=torch.complex64))
    sampled = physics.mask > 0
    assert (y[..., ~sampled] == 0).all()
    # complex Gaussian CN(0, sigma^2): each part has variance sigma^2 / 2
    assert float(y[..., sampled].real.var()) == pytest.approx(0.125, rel=0.15)


def test_update_mask_changes_operator():
    physics = build_operator("mri", (16, 16), acceleration=4, seed=0)
    x = torch.randn(1, 1, 16, 16, dtype=torch.complex64)
    before = physics.A(x)
    physics.update(mask=torch.ones(16, 16))
    torch.testing.assert_close(physics.A(x), fft2c(x))
    assert not torch.equal(before, physics.A(x))


def test_multicoil_is_an_isometry_when_fully_sampled():
    maps = simulated_coil_maps((24, 20), 6)
    torch.testing.assert_close(maps.abs().pow(2).sum(0), torch.ones(24, 20), rtol=1e-5, atol=1e-5)
    physics = MulticoilMRI(torch.ones(24, 20), maps)
    x = torch.randn(2, 1, 24, 20, dtype=torch.complex128)
    y = physics.A(x)
    assert y.shape == (2, 6, 24, 20)
    torch.testing.assert_close(torch.linalg.vector_norm(y), torch.linalg.vector_norm(x))
    torch.testing.assert_close(physics.A_adjoint(y), x)
    with pytest.raises(InputError):
        MulticoilMRI(torch.ones(24, 20), torch.ones(6, 24, 20))  # real maps
