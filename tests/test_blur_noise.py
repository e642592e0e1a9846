"""Blur kernels and boundaries, noise models' statistics, the denoise operator."""

from __future__ import annotations

import math

import pytest
import torch

from recon import InputError, build_noise, build_operator
from recon.operators.blur import Blur, box_kernel, gaussian_kernel, motion_kernel


def test_kernels_are_normalised_and_shaped():
    for kernel in (gaussian_kernel(2.0), box_kernel(5), motion_kernel(9, 30)):
        assert kernel.shape[:2] == (1, 1) and kernel.shape[-1] % 2 == 1
        assert float(kernel.sum()) == pytest.approx(1.0, abs=1e-6)
        assert (kernel >= 0).all()
    assert gaussian_kernel(2.0).shape[-1] == 2 * int(2.0 / 0.3 + 1) + 1


def test_gaussian_kernel_moments():
    kernel = gaussian_kernel(1.5, size=21)[0, 0].double()
    coords = torch.arange(21, dtype=torch.float64) - 10
    variance = float((kernel.sum(0) * coords**2).sum())
    assert variance == pytest.approx(1.5**2, rel=1e-3)


def test_motion_kernel_direction():
    horizontal = motion_kernel(7, 0)[0, 0]
    vertical = motion_kernel(7, 90)[0, 0]
    centre = horizontal.shape[0] // 2
    assert float(horizontal[centre].sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(vertical[:, centre].sum()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("boundary", ["circular", "reflect", "replicate", "zeros", "valid"])
def test_blur_boundaries(boundary):
    physics = build_operator("blur", (32, 28), sigma=1.5, boundary=boundary).to(torch.float64)
    k = physics.kernel.shape[-1]
    x = torch.randn(2, 1, 32, 28, dtype=torch.float64)
    y = physics.A(x)
    expected = (32 - k + 1, 28 - k + 1) if boundary == "valid" else (32, 28)
    assert tuple(y.shape[-2:]) == expected
    assert float(physics.adjointness_test(x)) < 1e-10
    # the kernel sums to one, so a constant image stays constant away from zero padding
    blurred = physics.A(torch.ones(1, 1, 32, 28, dtype=torch.float64))
    m = k // 2
    interior = blurred if boundary != "zeros" else blurred[..., m:-m, m:-m]
    torch.testing.assert_close(interior, torch.ones_like(interior))
    if boundary == "zeros":
        assert float(blurred[0, 0, 0, 0]) < 0.5


def test_circular_blur_is_a_circular_convolution():
    physics = build_operator("blur", (16, 16), kernel="box", size=3)
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 0, 0] = 9.0  # a corner impulse wraps around
    y = physics.A(x)[0, 0]
    assert float(y[15, 15]) == pytest.approx(1.0) and float(y[1, 1]) == pytest.approx(1.0)
    assert float(y.sum()) == pytest.approx(9.0)


def test_complex_blur_acts_on_parts():
    physics = build_operator("blur", (20, 20), sigma=1.0)
    x = torch.randn(1, 1, 20, 20, dtype=torch.complex64)
    torch.testing.assert_close(physics.A(x), torch.complex(physics.A(x.real), physics.A(x.imag)))


def test_blur_validation():
    with pytest.raises(InputError):
        build_operator("blur", (32, 32), sigma=-1)
    with pytest.raises(InputError):
        build_operator("blur", (32, 32), kernel="box", size=4)
    with pytest.raises(InputError, match="larger than the image"):
        build_operator("blur", (8, 8), kernel="box", size=11)
    with pytest.raises(InputError):
        Blur(torch.ones(3, 3))


def _sample(spec: str, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return build_noise(spec, seed)(x)


def test_gaussian_noise_statistics():
    x = torch.full((1, 1, 256, 256), 0.5, dtype=torch.float64)
    y = _sample("gaussian:sigma=0.2", x)
    assert float(y.mean()) == pytest.approx(0.5, abs=0.005)
    assert float(y.std()) == pytest.approx(0.2, rel=0.02)


def test_poisson_noise_statistics():
    x = torch.full((1, 1, 256, 256), 0.5, dtype=torch.float64)
    y = _sample("poisson:gain=0.01", x)
    assert float(y.mean()) == pytest.approx(0.5, rel=0.01)
    assert float(y.var()) == pytest.approx(0.01 * 0.5, rel=0.05)  # var = gain * mean
    z = _sample("poisson-gaussian:gain=0.01,sigma=0.05", x)
    assert float(z.var()) == pytest.approx(0.01 * 0.5 + 0.05**2, rel=0.05)


def test_rician_noise_moments():
    nu, sigma = 1.0, 0.3
    y = _sample(f"rician:sigma={sigma}", torch.full((1, 1, 512, 512), nu, dtype=torch.float64))
    assert float((y**2).mean()) == pytest.approx(nu**2 + 2 * sigma**2, rel=0.01)  # E|y|^2 = nu^2 + 2 sigma^2
    zero = _sample(f"rician:sigma={sigma}", torch.zeros(1, 1, 512, 512, dtype=torch.float64))
    assert float(zero.mean()) == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.01)  # Rayleigh mean
    complex_input = torch.full((1, 1, 64, 64), nu * 1j, dtype=torch.complex128)
    assert _sample(f"rician:sigma={sigma}", complex_input).dtype == torch.float64


def test_noise_validation_and_unknown_names():
    for spec in (
        "gaussian:sigma=-1",
        "poisson:gain=0",
        "rician:sigma=nan",
        "gaussian:sigma=abc",
        "laplace:scale=1",
        "gaussian:width=2",
        "gaussian:sigma",
    ):
        with pytest.raises(InputError):
            build_noise(spec, 0)
    assert build_noise("none") is None and build_noise(None) is None


def test_denoise_operator_defaults_to_gaussian_noise():
    physics = build_operator("denoise", (64, 64))
    x = torch.zeros(1, 1, 64, 64)
    assert float(physics(x).std()) == pytest.approx(0.1, rel=0.1)
    torch.testing.assert_close(physics.A(x + 1), x + 1)
