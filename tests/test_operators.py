"""One suite for every registered operator, plugins included (as deepinv's physics tests do):
adjointness, operator norm, batch and layout consistency, dtype and device moves, seeded determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon import build_operator, exact_norm, get_registry, operator_norm
from recon.layout import to_channel_pair

CUDA = torch.cuda.is_available()

SIZE = (24, 18)
OPERATORS = sorted(get_registry("operators"))


def _input(name: str, batch: int = 3, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    entry = get_registry("operators")[name]
    channels = int(entry.meta.get("channels", 1))
    g = torch.Generator().manual_seed(seed)
    if entry.meta.get("domain") == "complex":
        cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        return torch.randn(batch, channels, *SIZE, dtype=cdtype, generator=g)
    return torch.randn(batch, channels, *SIZE, dtype=dtype, generator=g)


def _build(name: str, **params):
    return build_operator(name, SIZE, **params)


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-4), (torch.float64, 1e-5)])
def test_adjointness(name, dtype, tol):
    physics = _build(name).to(dtype)
    x = _input(name, dtype=dtype)
    error = float(physics.adjointness_test(x, num_samples=4))
    assert error < tol, f"{name}: relative adjointness error {error:.2e}"


@pytest.mark.parametrize("name", OPERATORS)
def test_norm_matches_closed_form(name):
    physics = _build(name).to(torch.float64)
    known = exact_norm(physics)
    if known is None:
        pytest.skip(f"{name} has no closed-form norm with default parameters")
    estimate = operator_norm(physics, _input(name, batch=1, dtype=torch.float64), iterations=500, tol=1e-10)
    assert estimate == pytest.approx(known, rel=1e-3)


@pytest.mark.parametrize("name", OPERATORS)
def test_batch_consistency(name):
    physics = _build(name)
    x = _input(name)
    y = physics.A(x)
    for i in range(x.shape[0]):
        torch.testing.assert_close(physics.A(x[i : i + 1]), y[i : i + 1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            physics.A_adjoint(y[i : i + 1]), physics.A_adjoint(y)[i : i + 1], rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("name", OPERATORS)
def test_dtype_move_keeps_values(name):
    physics = _build(name)
    x = _input(name)
    y32 = physics.A(x)
    y64 = physics.to(torch.float64).A(x.to(torch.complex128 if x.is_complex() else torch.float64))
    assert y64.dtype in (torch.float64, torch.complex128)
    torch.testing.assert_close(y64.to(y32.dtype), y32, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "name", [n for n in OPERATORS if get_registry("operators")[n].meta.get("domain") == "complex"]
)
def test_complex_and_deepinv_layouts_agree(name):
    physics = _build(name)
    x = _input(name)
    y = physics.A(x)
    y_pair = physics.A(to_channel_pair(x))
    assert not y_pair.is_complex() and y_pair.shape[1] == 2
    torch.testing.assert_close(
        torch.complex(y_pair[:, 0], y_pair[:, 1]), y.squeeze(1) if y.shape[1] == 1 else y
    )
    x_back = physics.A_adjoint(y_pair)
    torch.testing.assert_close(x_back, to_channel_pair(physics.A_adjoint(y)))


@pytest.mark.parametrize("name", OPERATORS)
def test_seeded_construction_and_noise_are_deterministic(name):
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    x = _input(name).abs() if name == "denoise" else _input(name)
    first = _build(name, noise="gaussian:sigma=0.1", noise_seed=7)(x)
    again = _build(name, noise="gaussian:sigma=0.1", noise_seed=7)(x)
    other = _build(name, noise="gaussian:sigma=0.1", noise_seed=8)(x)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)
    assert torch.equal(torch.get_rng_state(), torch_state), "the global torch RNG was touched"
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist(), "the global numpy RNG was touched"


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("name", OPERATORS)
def test_cuda_matches_cpu(name):
    physics = _build(name)
    x = _input(name)
    y = physics.A(x)
    gpu = physics.to("cuda")
    torch.testing.assert_close(gpu.A(x.cuda()).cpu(), y, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        gpu.A_adjoint(y.cuda()).cpu(), physics.to("cpu").A_adjoint(y), rtol=1e-4, atol=1e-5
    )
