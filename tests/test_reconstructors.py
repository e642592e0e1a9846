"""Reconstructor: normalisation, data consistency, unrolling, complex layouts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recon import InputError, build_operator
from recon.nets import GraphNet, gated_unet
from recon.reconstructors import Reconstructor, percentile_scale
from recon.tasks import build_task


def _net(channels: int) -> GraphNet:
    torch.manual_seed(0)
    net = GraphNet(gated_unet(channels, channels, widths=(4, 8), blocks=0, gate_init=0.5))
    return net.double()


def _mri_sample(shape=(32, 32)):
    task = build_task("mri", acceleration=4.0)
    x = torch.rand(2, 1, *shape, dtype=torch.float64)
    sample = task.simulate(x.float(), torch.Generator().manual_seed(0))
    return sample.y.to(torch.complex128), sample.physics.to(torch.float64), sample.target


@pytest.mark.parametrize("channels", [1, 2])
def test_scale_equivariance(channels):
    y, physics, _ = _mri_sample()
    model = Reconstructor(_net(channels), init="adjoint")
    with torch.no_grad():
        torch.testing.assert_close(model(1000.0 * y, physics), 1000.0 * model(y, physics))


def test_replace_consistency_keeps_measured_kspace():
    y, physics, _ = _mri_sample()
    model = Reconstructor(_net(2), init="adjoint", dc="replace")
    with torch.no_grad():
        x = model(y, physics)
    torch.testing.assert_close(physics.A(x), y, rtol=1e-6, atol=1e-6 * float(y.abs().max()))


def test_soft_consistency_is_the_prox():
    y, physics, _ = _mri_sample()
    plain = Reconstructor(_net(2), init="adjoint")
    soft = Reconstructor(plain.net, init="adjoint", dc="soft", dc_weight=0.5)
    with torch.no_grad():
        x_plain, x_soft = plain(y, physics), soft(y, physics)
    scale = percentile_scale(physics.A_adjoint(y))
    expected = physics.prox_l2(x_plain / scale, y / scale, 0.5) * scale
    torch.testing.assert_close(x_soft, expected)


def test_unrolled_uses_the_gradient_step():
    y, physics, _ = _mri_sample()
    identity = nn.Identity()
    identity.spec = {"in_channels": 2}
    model = Reconstructor(identity, init="adjoint", unrolled=3)
    with torch.no_grad():
        x = model(y, physics)
    # with an identity network, x = Aᴴy is a fixed point of x - Aᴴ(Ax - y) for a binary mask
    torch.testing.assert_close(x, physics.A_adjoint(y))


def test_unrolled_passes_split_anywhere():
    y, physics, _ = _mri_sample()
    model = Reconstructor(_net(2), init="adjoint", unrolled=3)
    x, scale = model.start(y, physics)
    with torch.no_grad():
        whole = model.body(model.net, x, y / scale, physics)
        for split in range(4):
            head = model.body(model.net, x, y / scale, physics, stop=split)
            torch.testing.assert_close(model.body(model.net, head, y / scale, physics, start=split), whole)
    assert model.passes == 3 and model.tail_start(1) == 2 and model.tail_start(0) == 0
    with pytest.raises(InputError, match="iterations"):
        model.tail_start(4)


def test_measurement_init_for_square_operators():
    physics = build_operator("blur", (24, 24), sigma=1.0)
    y = physics.A(torch.rand(1, 1, 24, 24))
    model = Reconstructor(_net(1).float(), init="measurement")
    assert model(y, physics).shape == y.shape
    assert model.net_input(y, physics).shape == y.shape


def test_reconstructor_validation():
    with pytest.raises(InputError):
        Reconstructor(_net(1), init="magic")
    with pytest.raises(InputError):
        Reconstructor(_net(1), dc="hard")
    physics = build_operator("blur", (16, 16))
    with pytest.raises(InputError, match="binary mask"):
        Reconstructor(_net(1).float(), dc="replace")(torch.rand(1, 1, 16, 16), physics)


def test_tikhonov_is_the_regularised_least_squares_solution():
    from recon.datasets.scan import Scan
    from recon.reconstruct import prepare, reconstruct

    rng = torch.Generator().manual_seed(0)
    image = torch.rand(1, 12, 10, generator=rng).numpy()
    problem = prepare(Scan("x", images=image), "blur", {"sigma": 1.0, "boundary": "zeros"})
    lam = 0.05
    result = reconstruct(problem, "tikhonov", tikhonov_lambda=lam, operator="blur")
    # dense normal equations (AᵀA + λI) x = Aᵀy, with A built column by column
    n = 12 * 10
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, 1, 12, 10)
    physics = problem.physics.to(torch.float64)
    a = torch.stack([physics.A(e).flatten() for e in basis], dim=1)
    y = problem.y.double().flatten()
    x = torch.linalg.solve(a.T @ a + lam * torch.eye(n, dtype=torch.float64), a.T @ y)
    expected = (x.reshape(12, 10).abs() * problem.scale).numpy()
    assert abs(result.reconstruction[0] - expected).max() < 1e-3 * expected.max()


def test_learned_reconstruction_runs_the_inference_form_with_the_same_result():
    from recon.datasets.scan import Scan
    from recon.reconstruct import learned_reconstruction, prepare

    image = torch.rand(2, 20, 18, generator=torch.Generator().manual_seed(0)).numpy()
    problem = prepare(Scan("x", images=image), "blur", {"sigma": 1.0})
    net = GraphNet(gated_unet(widths=(15, 30), blocks=1, unshuffle=2))  # 15 → 16 and 30 → 32 channels
    model = Reconstructor(net, init="measurement").eval()
    fast = model.for_inference()
    assert fast.net is not model.net and fast.config() == model.config()
    assert sum(p.numel() for p in fast.parameters()) > sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        expected = model(problem.y, problem.physics).abs()
    torch.testing.assert_close(learned_reconstruction(problem, model), expected, atol=1e-5, rtol=1e-5)
