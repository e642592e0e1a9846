"""Samplers against known posteriors, batched inference, maps, null-space projector, calibration."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.stats
import torch

from recon import InputError, build_operator, get_registry
from recon.metrics import auroc, ause, coverage, spearman
from recon.uncertainty import (
    Calibration,
    WeightSamples,
    conformal_calibration,
    interval_scale,
    load_samples,
    null_space_projector,
    posterior_maps,
    predict_samples,
    save_samples,
    stack_parameters,
    subnetwork_parameters,
)
from recon.uncertainty.langevin import baoab, psgld


def _linear_posterior(seed: int = 1):
    """Bayesian linear regression: prior N(0, 10²I), noise 0.5; exact Gaussian posterior."""
    g = torch.Generator().manual_seed(seed)
    n, sig, sp = 200, 0.5, 10.0
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([1.5, -0.7], dtype=torch.float64) + sig * torch.randn(
        n, generator=g, dtype=torch.float64
    )
    precision = x.T @ x / sig**2 + torch.eye(2, dtype=torch.float64) / sp**2
    cov = torch.linalg.inv(precision)
    mean = cov @ (x.T @ y) / sig**2
    batches = torch.Generator().manual_seed(2)

    def full(theta):
        g_bar = x.T @ (y - x @ theta[0]) / sig**2 / n
        return [-n * g_bar + theta[0] / sp**2], [g_bar]

    def minibatch(theta, size=20):
        idx = torch.randint(0, n, (size,), generator=batches)
        g_bar = x[idx].T @ (y[idx] - x[idx] @ theta[0]) / sig**2 / size
        return [-n * g_bar + theta[0] / sp**2], [g_bar]

    return mean, cov, full, minibatch


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_baoab_samples_the_tempered_posterior(temperature):
    mean, cov, full, _ = _linear_posterior()
    states = baoab(
        [mean.clone()],
        full,
        step=0.02,
        friction=5.0,
        temperature=temperature,
        count=4000,
        burn_in=500,
        thin=5,
        generator=torch.Generator().manual_seed(0),
    )
    draws = torch.stack([s[0] for s in states])
    std = cov.diag().sqrt()
    assert ((draws.mean(0) - mean).abs() < 0.2 * std).all()
    ratio = draws.var(0) / (temperature * cov.diag())  # a T (not √T) noise scale would give ratio T
    assert ((ratio > 0.85) & (ratio < 1.15)).all(), ratio


def test_psgld_samples_the_posterior_with_minibatches():
    mean, cov, _, minibatch = _linear_posterior()
    states = psgld(
        [mean.clone()],
        minibatch,
        step=2e-5,
        count=4000,
        burn_in=500,
        thin=5,
        generator=torch.Generator().manual_seed(0),
    )
    draws = torch.stack([s[0] for s in states])
    std = cov.diag().sqrt()
    assert ((draws.mean(0) - mean).abs() < 0.3 * std).all()
    ratio = draws.var(0) / cov.diag()
    assert ((ratio > 0.7) & (ratio < 1.4)).all(), ratio


def test_samplers_are_seeded():
    mean, _, full, _ = _linear_posterior()
    a = baoab(
        [mean.clone()],
        full,
        step=0.02,
        count=5,
        burn_in=5,
        thin=2,
        generator=torch.Generator().manual_seed(3),
    )
    b = baoab(
        [mean.clone()],
        full,
        step=0.02,
        count=5,
        burn_in=5,
        thin=2,
        generator=torch.Generator().manual_seed(3),
    )
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b, strict=True))
    with pytest.raises(InputError):
        psgld([mean.clone()], full, step=-1.0, count=2)


def _tiny_model(channels=2, init="adjoint", dc="replace"):
    from recon.nets import GraphNet, gated_unet
    from recon.reconstructors import Reconstructor

    torch.manual_seed(0)
    net = GraphNet(gated_unet(channels, channels, widths=(4, 8), blocks=1, gate_init=0.5))
    return Reconstructor(net, init=init, dc=dc)


def _perturbed_samples(model, k=5, seed=0, layers=0):
    g = torch.Generator().manual_seed(seed)
    params = dict(model.net.named_parameters())
    names = subnetwork_parameters(model.net, layers)
    states = [{n: params[n].detach() + 0.05 * torch.randn(params[n].shape, generator=g) for n in names}]
    states += [
        {n: t + 0.05 * torch.randn(t.shape, generator=g) for n, t in states[0].items()} for _ in range(k - 1)
    ]
    return WeightSamples(stack_parameters(states), "test")


def test_subnetwork_parameters_are_the_last_layers():
    model = _tiny_model()
    every = [n for n, _ in model.net.named_parameters()]
    assert subnetwork_parameters(model.net, 0) == every
    assert subnetwork_parameters(model.net, 1) == ["convs.head.weight", "convs.head.bias"]
    two = subnetwork_parameters(model.net, 2)
    assert len(two) == 4 and two[2:] == ["convs.head.weight", "convs.head.bias"]
    deep = subnetwork_parameters(
        torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1)), 1
    )
    assert deep == ["2.weight", "2.bias"]
    with pytest.raises(InputError):
        subnetwork_parameters(model.net, 1000)


@pytest.mark.parametrize("layers", [0, 2])
@pytest.mark.parametrize("unrolled, iterations", [(0, 0), (2, 0), (2, 1), (3, 2)])
@pytest.mark.parametrize("plain", [False, True])
def test_batched_and_looped_inference_agree(layers, unrolled, iterations, plain):
    """GraphNets run the samples as grouped convolutions, other networks through vmap; with
    ``iterations`` the earlier unrolled passes keep the trained weights."""
    model = _tiny_model()
    if plain:  # not a GraphNet
        model.net = torch.nn.Sequential(
            torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3, padding=1)
        )
    model.unrolled = unrolled
    physics = build_operator("mri", (24, 24), acceleration=4.0)
    y = physics.A(torch.randn(3, 1, 24, 24, dtype=torch.complex64))
    samples = _perturbed_samples(model, layers=layers)
    samples.settings["iterations"] = iterations
    trained = {n: p.detach().clone() for n, p in model.net.named_parameters()}
    first = unrolled - iterations if iterations else 0
    with torch.no_grad():
        batched = predict_samples(model, samples, y, physics, chunk=2)
        for k in range(samples.count):
            x, scale = model.start(y, physics)
            x = model.body(model.net, x, y / scale, physics, stop=first)
            model.net.load_state_dict({n: t[k] for n, t in samples.tensors.items()}, strict=False)
            x = model.body(model.net, x, y / scale, physics, start=first)
            looped = model.consistency(x, y / scale, physics) * scale
            model.net.load_state_dict(trained)
            torch.testing.assert_close(batched[k], looped, rtol=1e-4, atol=1e-5)
    assert batched.shape == (5, 3, 1, 24, 24)
    samples.settings["iterations"] = model.passes + 1
    with pytest.raises(InputError, match="iterations"):
        predict_samples(model, samples, y, physics)


def test_null_space_projector_is_idempotent_and_annihilated():
    mri = build_operator("mri", (32, 32), acceleration=4.0).to(torch.float64)
    x = torch.randn(2, 1, 32, 32, dtype=torch.complex128)
    project = null_space_projector(mri)
    px = project(x)
    torch.testing.assert_close(project(px), px)
    assert float(mri.A(px).abs().max()) < 1e-12
    torch.testing.assert_close(px + mri.A_adjoint(mri.A(x)), x)  # range + null space
    inpaint = build_operator("mri", (32, 32), mask="gaussian", acceleration=3.0).to(torch.float64)
    general = null_space_projector(type("Generic", (), {"A": inpaint.A, "A_dagger": inpaint.A_dagger})())
    torch.testing.assert_close(general(general(x)), general(x))


def test_posterior_maps():
    physics = build_operator("mri", (16, 16), acceleration=4.0)
    base = torch.randn(1, 1, 1, 16, 16, dtype=torch.complex64)
    same = base.repeat(4, 1, 1, 1, 1)
    maps = posterior_maps(same, physics)
    assert float(maps.std.max()) == 0 and float(maps.hallucination.max()) < 1e-5
    samples = base + 0.1 * torch.randn(50, 1, 1, 16, 16, dtype=torch.complex64)
    maps = posterior_maps(samples, physics, coverage=0.8)
    inside = ((samples.abs() >= maps.lower) & (samples.abs() <= maps.upper)).float().mean()
    assert 0.75 <= float(inside) <= 0.85
    calibrated = posterior_maps(samples, physics, coverage=0.8, calibration=Calibration((), (2.0,)))
    half_width = 2.0 * interval_scale(calibrated.mean, calibrated.std)
    torch.testing.assert_close(calibrated.upper - calibrated.mean, half_width)
    torch.testing.assert_close(calibrated.lower, (calibrated.mean - half_width).clamp_min(0))
    with pytest.raises(InputError):
        posterior_maps(samples[:1], physics)


def test_conformal_factor_and_metrics():
    g = torch.Generator().manual_seed(0)
    mean = torch.full((200, 200), 10.0)
    std = torch.rand(200, 200, generator=g) + 0.5
    truth = mean + std * torch.randn(200, 200, generator=g)
    calibration = conformal_calibration([mean], [std], [truth], 0.9, bins=1)
    q = calibration.factors[0]
    assert calibration.edges == () and q == pytest.approx(1.645, abs=0.05)  # the Gaussian 90% point
    assert coverage(mean - q * std, mean + q * std, truth) == pytest.approx(0.9, abs=0.01)
    error = (truth - mean).abs().numpy()
    assert spearman(std, error) == pytest.approx(scipy.stats.spearmanr(std.flatten(), error.flatten())[0])
    labels = error > np.quantile(error, 0.95)
    u = scipy.stats.mannwhitneyu(std.numpy()[labels], std.numpy()[~labels]).statistic
    assert auroc(std, labels) == pytest.approx(u / (labels.sum() * (~labels).sum()))
    assert ause(error, error) == pytest.approx(0.0) and ause(-torch.from_numpy(error), error) > 0.5


def _two_populations(confident: float, n: int, g: torch.Generator):
    """Pixels whose spread s understates the error twice (s = 0.01, error sd 0.02) and pixels whose
    spread overstates it threefold (s = 0.3, error sd 0.1); ``confident``: the first kind's share."""
    first = int(confident * n)
    std = torch.cat([torch.full((first,), 0.01), torch.full((n - first,), 0.3)])
    sd = torch.cat([torch.full((first,), 0.02), torch.full((n - first,), 0.1)])
    mean = torch.full((n,), 1.0)
    return mean.view(1, -1, 1), std.view(1, -1, 1), (mean + sd * torch.randn(n, generator=g)).view(1, -1, 1)


def test_spread_groups_keep_coverage_when_the_mix_changes():
    """Mondrian calibration: a factor per spread group holds its coverage in every group, so a scan
    with another mix of confident and unconfident pixels keeps the stated coverage; one pooled factor
    does not."""
    g = torch.Generator().manual_seed(0)
    fit = _two_populations(0.5, 40_000, g)
    grouped = conformal_calibration([fit[0]], [fit[1]], [fit[2]], 0.9, bins=2)
    assert grouped.factors == pytest.approx((1.645 * 2, 1.645 / 3), rel=0.05)  # closed form per group
    pooled = conformal_calibration([fit[0]], [fit[1]], [fit[2]], 0.9, bins=1)
    mean, std, truth = _two_populations(0.9, 40_000, g)  # new scan: 90% confident pixels

    def covered(calibration):
        half = calibration.factors_for(mean, std) * interval_scale(mean, std)
        return coverage(mean - half, mean + half, truth)

    assert covered(grouped) == pytest.approx(0.9, abs=0.01)
    # the pooled factor covers the confident pixels at P(|Z| ≤ q·0.01/0.02) ≈ 0.80, the others all
    assert covered(pooled) == pytest.approx(
        0.9 * (2 * scipy.stats.norm.cdf(pooled.factors[0] / 2) - 1) + 0.1, abs=0.01
    )
    assert covered(pooled) < 0.85


def test_calibration_floor_and_file_form():
    mean = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])
    std = torch.tensor([[[0.0, 1e-5, 0.5, 1e-3]]]).view(1, 2, 2)
    torch.testing.assert_close(interval_scale(mean, std), torch.tensor([[[4e-3, 4e-3], [0.5, 4e-3]]]))
    calibration = Calibration((0.01, 0.1), (1.0, 2.0, 3.0))
    relative = torch.tensor([[[0.005, 0.05], [0.5, 0.1]]])  # s / peak: groups 0, 1, 2, 1 (right-closed)
    factors = calibration.factors_for(torch.full((1, 2, 2), 2.0), 2.0 * relative)
    torch.testing.assert_close(factors, torch.tensor([[[1.0, 2.0], [3.0, 2.0]]]))
    assert Calibration.from_json(json.loads(json.dumps(calibration.to_json()))) == calibration
    assert Calibration.from_json(1.7) == Calibration((), (1.7,))  # files written before the groups
    for bad in ({"edges": [0.2, 0.1], "factors": [1, 2, 3]}, {"edges": [], "factors": []}, "x", True, None):
        with pytest.raises(InputError, match="calibration"):
            Calibration.from_json(bad)
    with pytest.raises(InputError, match="too few"):
        conformal_calibration([mean], [std], [mean], 0.9, bins=4)


def test_samples_round_trip_and_validation(tmp_path):
    model = _tiny_model()
    samples = _perturbed_samples(model, k=3)
    samples.calibration["0.9"] = Calibration((0.02,), (1.7, 1.2))
    save_samples(samples, tmp_path / "m.test.samples")
    loaded = load_samples(tmp_path / "m.test.samples", model)
    assert loaded.count == 3 and loaded.calibration == {"0.9": Calibration((0.02,), (1.7, 1.2))}
    assert loaded.subset(2).count == 2
    with pytest.raises(InputError):
        loaded.subset(4)
    with pytest.raises(InputError, match="do not match"):
        load_samples(tmp_path / "m.test.samples", _tiny_model(channels=1, init="measurement", dc="none"))
    with pytest.raises(InputError, match="no stored"):
        load_samples(tmp_path / "absent")


@pytest.mark.parametrize("layers, iterations", [(0, 0), (3, 0), (0, 1)])
@pytest.mark.parametrize("name", ["psgld", "baoab", "mc-dropout", "ensemble"])
def test_sampler_plugins_draw_distinct_weight_sets(name, layers, iterations, monkeypatch, tmp_path):
    from recon.datasets.phantom import PhantomDataset
    from recon.tasks import build_task

    monkeypatch.setenv("RECON_DATA", str(tmp_path))
    small = {
        "psgld": {"burn_in": 2, "thin": 1, "lr": 1e-4},
        "baoab": {"burn_in": 2, "thin": 1, "step": 1e-3},
        "mc-dropout": {"steps": 2, "p": 0.5},
        "ensemble": {"steps": 2},
    }[name]
    sampler = get_registry("samplers").build(name, **small, layers=layers, iterations=iterations)
    model = _tiny_model()
    model.unrolled = 2
    trained = {n: p.detach().clone() for n, p in model.net.named_parameters()}
    task = build_task("mri", acceleration=4.0)

    def run(sampler):
        return sampler.run(
            model,
            task,
            PhantomDataset(64, (32, 32)),
            3,
            generator=torch.Generator().manual_seed(0),
            device=torch.device("cpu"),
        )

    samples = run(sampler)
    assert samples.count == 3 and list(samples.tensors) == subnetwork_parameters(model.net, layers)
    assert all(torch.equal(p, trained[n]) for n, p in model.net.named_parameters())  # model untouched
    assert any(not torch.equal(t[0], t[1]) for t in samples.tensors.values())
    assert json.dumps(samples.settings)  # JSON-able settings
    assert samples.settings["iterations"] == iterations  # what inference needs to use them
    with pytest.raises(InputError, match="iterations"):
        run(get_registry("samplers").build(name, **small, iterations=3))
    if name == "mc-dropout":  # the output layer is never dropped: nothing to sample in it alone
        with pytest.raises(InputError, match="no layer to drop out"):
            run(get_registry("samplers").build(name, **small, layers=1))


@pytest.mark.slow
def test_cli_sample_calibrate_and_reconstruct_with_uncertainty(cli, tmp_path, monkeypatch, make_volume):
    from recon.modelio import save_model

    monkeypatch.setenv("RECON_DATA", str(tmp_path / "data"))
    model = _tiny_model()
    save_model(
        model,
        tmp_path / "m",
        metadata={
            "task": {
                "task": "mri",
                "operator": "mri",
                "acceleration": 4.0,
                "center_fraction": 0.08,
                "mask": "random",
                "sigma": 0.0,
            },
            "config": {"patch": 32},
        },
    )
    done = cli(
        "sample",
        "--model",
        tmp_path / "m.json",
        "--sampler",
        "ensemble:steps=1",
        "--samples",
        "4",
        "--device",
        "cpu",
    )
    assert done.code == 0, done.err
    (tmp_path / "val").mkdir()
    make_volume("v.h5", slices=2, size=(32, 32)).replace(tmp_path / "val" / "v.h5")
    calibrated = cli(
        "calibrate",
        "--model",
        tmp_path / "m.json",
        "--uncertainty",
        "ensemble",
        "--samples",
        "4",
        "--data",
        tmp_path / "val",
        "--device",
        "cpu",
    )
    assert calibrated.code == 0, calibrated.err
    fitted = calibrated.json()
    assert (
        len(fitted["factors"]) == 4
        and min(fitted["factors"]) > 0
        and fitted["edges"] == sorted(fitted["edges"])
    )
    out = tmp_path / "r.h5"
    result = cli(
        "reconstruct",
        make_volume("t.h5", slices=2, size=(32, 32), seed=5),
        "--model",
        tmp_path / "m.json",
        "--uncertainty",
        "ensemble",
        "--samples",
        "4",
        "--out",
        out,
    )
    assert result.code == 0, result.err
    metrics = result.json()["metrics"]
    assert {"coverage", "spearman_std_error", "auroc_large_errors", "ause"} <= set(metrics) and metrics[
        "calibrated"
    ]
    with h5py.File(out) as f:
        for key in ("reconstruction", "std", "lower", "upper", "hallucination"):
            assert f[key].shape == (2, 32, 32) and np.isfinite(f[key][()]).all()
        assert (f["lower"][()] <= f["upper"][()]).all()
    assert (
        cli(
            "reconstruct",
            make_volume("u.h5"),
            "--model",
            tmp_path / "m.json",
            "--uncertainty",
            "psgld",
            "--out",
            tmp_path / "x.h5",
        ).code
        == 2
    )  # no psgld samples stored
    fitted = cli("fit-variance", "--model", tmp_path / "m.json", "--steps", "3", "--device", "cpu")
    assert fitted.code == 0, fitted.err
    assert Path(fitted.json()["out"] + ".safetensors").is_file()
    split = tmp_path / "s.h5"
    args = ("--model", tmp_path / "m.json", "--uncertainty", "ensemble", "--samples", "4", "--out", split)
    assert cli("reconstruct", make_volume("t.h5", slices=2, size=(32, 32), seed=5), *args).code == 0
    with h5py.File(split) as f:
        total, epistemic, aleatoric = f["std"][()], f["epistemic"][()], f["aleatoric"][()]
    np.testing.assert_allclose(total**2, epistemic**2 + aleatoric**2, rtol=1e-4, atol=1e-12)
    assert aleatoric.min() > 0


def _identity_reconstructor():
    from recon.reconstructors import Reconstructor

    conv = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
    return Reconstructor(conv, init="measurement").requires_grad_(False)


def _heteroscedastic_pairs(sigma: float, size: int = 32):
    """Images at 0.25 (left half) and 1.0 (right half) with noise of sd sigma·x (known variance)."""
    from deepinv.physics import Denoising

    from recon.tasks import Sample

    g = torch.Generator().manual_seed(1)
    x = torch.full((4, 1, size, size), 1.0)
    x[..., : size // 2] = 0.25

    def simulate() -> Sample:
        return Sample(x + sigma * x * torch.randn(x.shape, generator=g), Denoising(), x)

    return simulate


def test_variance_head_learns_a_known_heteroscedastic_variance(tmp_path):
    """Frozen identity 'reconstruction' of y = x + σ·x·n: its error variance is σ²x², which the
    head, trained by Gaussian NLL, must recover in the input's scale (and keep after a round trip)."""
    from recon.uncertainty import (
        aleatoric_variance,
        fit_variance_head,
        load_variance_head,
        save_variance_head,
    )

    sigma = 0.1
    model = _identity_reconstructor()
    simulate = _heteroscedastic_pairs(sigma)
    head = fit_variance_head(model, simulate, steps=300, lr=3e-3)
    sample = simulate()
    a = aleatoric_variance(head, model, sample.y, sample.y, sample.physics).sqrt()
    inner = (slice(None), slice(None), slice(4, -4))  # away from the zero padding of the borders
    left, right = a[inner][..., 4:12].median(), a[inner][..., 20:28].median()
    assert float(right) == pytest.approx(sigma * 1.0, rel=0.2)
    assert float(left) == pytest.approx(sigma * 0.25, rel=0.25)
    save_variance_head(head, tmp_path / "m.variance", {"steps": 300})
    loaded = load_variance_head(tmp_path / "m.variance")
    torch.testing.assert_close(loaded(sample.y, sample.y), head(sample.y, sample.y))
    (tmp_path / "m.variance.safetensors").write_bytes(b"broken")
    with pytest.raises(InputError, match="corrupt variance head"):
        load_variance_head(tmp_path / "m.variance")
    with pytest.raises(InputError, match="no variance head"):
        load_variance_head(tmp_path / "absent")


def test_posterior_maps_add_aleatoric_variance():
    physics = build_operator("mri", (16, 16), acceleration=4.0)
    g = torch.Generator().manual_seed(0)
    samples = 1 + 0.1 * torch.randn(40, 1, 1, 16, 16, generator=g, dtype=torch.complex64)
    variance = torch.rand(1, 1, 16, 16, generator=g) * 0.01
    maps = posterior_maps(samples, physics, coverage=0.9, aleatoric_variance=variance)
    torch.testing.assert_close(maps.epistemic, samples.abs().std(0))
    torch.testing.assert_close(maps.std**2, maps.epistemic**2 + variance)
    torch.testing.assert_close(maps.aleatoric, variance.sqrt())
    z = scipy.stats.norm.ppf(0.95)
    torch.testing.assert_close(maps.upper - maps.mean, float(z) * maps.std)
    assert posterior_maps(samples, physics).aleatoric is None
