"""Bregman optimizers and regularizers against closed forms and hand computations."""

from __future__ import annotations

import copy
import math
import os
import sys

import pytest
import torch
from torch import nn

from recon import InputError, get_registry
from recon.sparsity import L1, AdaBreg, GroupL12, LinBreg, Null, ProxSGD, density, param_groups, sparse_init_
from recon.sparsity.regularizers import build_regularizer


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).double()


def _data(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 6, generator=g, dtype=torch.float64), torch.randn(
        32, 3, generator=g, dtype=torch.float64
    )


def _steps(model, optimizer, steps, x, y):
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def test_linbreg_without_regularizer_is_sgd():
    x, y = _data()
    a, b = _mlp(), _mlp()
    tau, delta = 0.05, 2.0
    linbreg, sgd = (
        LinBreg(a.parameters(), lr=tau, delta=delta),
        torch.optim.SGD(b.parameters(), lr=delta * tau),
    )
    for _ in range(25):
        _steps(a, linbreg, 1, x, y)
        _steps(b, sgd, 1, x, y)
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_linbreg_momentum_matches_its_equations():
    x, y = _data()
    model = _mlp()
    reference = copy.deepcopy(model)
    tau, beta = 0.1, 0.9
    opt = LinBreg(model.parameters(), lr=tau, momentum=beta)
    v = [p.detach().clone() for p in reference.parameters()]  # delta = 1, J = 0: v0 = theta0
    m = [torch.zeros_like(p) for p in v]
    for _ in range(5):
        _steps(model, opt, 1, x, y)
        reference.zero_grad()
        nn.functional.mse_loss(reference(x), y).backward()
        with torch.no_grad():
            for p, vi, mi in zip(reference.parameters(), v, m, strict=True):
                mi.mul_(beta).add_((1 - beta) * tau * p.grad)
                vi.sub_(mi)
                p.copy_(vi)
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


def test_l1_prox_closed_form():
    v = torch.tensor([3.0, -0.5, 1.2, -2.0], dtype=torch.float64)
    torch.testing.assert_close(L1(1.0).prox(v, 2.0), torch.tensor([4.0, 0.0, 0.4, -2.0], dtype=torch.float64))
    torch.testing.assert_close(L1(1.0).prox_many([v, -v], 2.0)[1], -L1(1.0).prox(v, 2.0))


def test_group_prox_closed_form():
    v = torch.tensor([[3.0, 4.0], [0.3, 0.4]], dtype=torch.float64)  # two rows (channels), norms 5 and 0.5
    reg = GroupL12(1.0, "channel")
    expected = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64) * 0.5 * (1 - math.sqrt(2) / 5)
    torch.testing.assert_close(reg.prox(v, 0.5), expected)
    assert float(reg.value(v)) == pytest.approx(math.sqrt(2) * 5.5)
    assert reg.groups(reg.prox(v, 0.5)) == (1, 2)
    conv = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    kernel = GroupL12(0.2, "kernel").prox(conv, 1.0)
    norms = torch.linalg.vector_norm(conv, dim=(2, 3), keepdim=True)
    torch.testing.assert_close(kernel, conv * torch.clamp_min(1 - 0.2 * 5 / norms, 0))
    gates = torch.tensor([0.5, -2.0], dtype=torch.float64)
    torch.testing.assert_close(GroupL12(1.0, "element").prox(gates, 1.0), L1(1.0).prox(gates, 1.0))


@pytest.mark.parametrize("reg", [L1(0.3), GroupL12(0.3, "channel"), GroupL12(0.3, "kernel"), Null()])
def test_prox_is_the_minimiser(reg):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(5, 3, 2, 2, generator=g, dtype=torch.float64)
    delta = 0.7
    theta = reg.prox(v, delta)

    def objective(t):
        return 0.5 * float(((t - delta * v) ** 2).sum()) + delta * float(reg.value(t))

    best = objective(theta)
    for _ in range(200):
        z = theta + 0.05 * torch.randn(theta.shape, generator=g, dtype=torch.float64)
        assert objective(z) >= best - 1e-12


@pytest.mark.parametrize("reg", [L1(0.5), GroupL12(0.5, "channel"), GroupL12(0.5, "kernel")])
def test_prox_of_initial_subgradient_reproduces_weights(reg):
    theta = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    theta[::2] = 0  # zero channels and entries: the subgradient there is 0
    theta[1, 1] = 0
    delta = 1.5
    v0 = reg.subgradient(theta) + theta / delta
    torch.testing.assert_close(reg.prox(v0, delta), theta)


def test_inverse_scale_space_grows_nonzeros():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(80, 40, generator=g, dtype=torch.float64)
    truth = torch.zeros(40, dtype=torch.float64)
    truth[:5] = torch.tensor([4.0, -3.0, 2.0, 1.5, 1.0], dtype=torch.float64)
    b = a @ truth
    theta = nn.Parameter(torch.zeros(40, 1, dtype=torch.float64))  # 2D so it is a regularised weight
    opt = LinBreg([theta], lr=2e-3, reg=L1(1.0))
    counts = []
    for _ in range(400):
        opt.zero_grad()
        (0.5 * ((a @ theta[:, 0] - b) ** 2).sum()).backward()
        opt.step()
        counts.append(int(torch.count_nonzero(theta)))
    assert counts[0] <= 1 and max(counts[:5]) < counts[-1] and counts[-1] >= 5  # sparse first, then grows
    # from theta = 0, v = k·tau·Aᵀb grows linearly: the first entry to cross λ is argmax |Aᵀb|
    opt2 = LinBreg([nn.Parameter(torch.zeros(40, 1, dtype=torch.float64))], lr=2e-3, reg=L1(1.0))
    first = None
    while first is None:
        p = opt2.param_groups[0]["params"][0]
        opt2.zero_grad()
        (0.5 * ((a @ p[:, 0] - b) ** 2).sum()).backward()
        opt2.step()
        nonzero = torch.nonzero(p.detach()[:, 0]).flatten()
        first = int(nonzero[0]) if len(nonzero) else None
    assert first == int(torch.argmax((a.T @ b).abs()))
    assert set(torch.nonzero(theta.detach()[:, 0]).flatten().tolist()) >= {0, 1, 2}


def test_adabreg_matches_hand_computed_two_steps():
    lam, tau, delta, (b1, b2), eps = 0.1, 0.5, 1.0, (0.9, 0.999), 1e-8
    theta = nn.Parameter(torch.tensor([[0.0, 2.0]], dtype=torch.float64))
    opt = AdaBreg([theta], lr=tau, reg=L1(lam), delta=delta, betas=(b1, b2), eps=eps)
    grads = [(0.3, -0.2), (-1.0, 0.4)]
    # by hand, per coordinate
    v = [0.0, lam * 1 + 2.0 / delta]
    m, s = [0.0, 0.0], [0.0, 0.0]
    for t, g in enumerate(grads, start=1):
        theta.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        for i in range(2):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            s[i] = b2 * s[i] + (1 - b2) * g[i] ** 2
            m_hat, s_hat = m[i] / (1 - b1**t), s[i] / (1 - b2**t)
            v[i] -= tau * m_hat / (math.sqrt(s_hat) + eps)
        expected = [delta * math.copysign(max(abs(vi) - lam, 0.0), vi) for vi in v]
        assert theta.detach()[0].tolist() == pytest.approx(expected, abs=1e-12)


def test_proxsgd_matches_its_equation():
    theta = nn.Parameter(torch.tensor([[1.0, -0.05, 0.3]], dtype=torch.float64))
    opt = ProxSGD([theta], lr=0.1, reg=L1(1.0))
    theta.grad = torch.tensor([[0.5, 0.0, -1.0]], dtype=torch.float64)
    opt.step()
    u = torch.tensor([1.0 - 0.05, -0.05, 0.3 + 0.1])
    expected = torch.sign(u) * torch.clamp_min(u.abs() - 0.1, 0)
    torch.testing.assert_close(theta.detach()[0], expected.double())


@pytest.mark.parametrize(
    "make",
    [
        lambda p: LinBreg(p, lr=0.05, reg=GroupL12(0.02), momentum=0.9),
        lambda p: AdaBreg(p, lr=0.01, reg=L1(0.01)),
        lambda p: ProxSGD(p, lr=0.05, reg=L1(0.01), momentum=0.5),
    ],
)
def test_state_dict_round_trip_resumes_identically(make):
    x, y = _data()
    model = _mlp()
    opt = make(model.parameters())
    _steps(model, opt, 5, x, y)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    assert all(isinstance(g["reg"], dict) for g in saved_opt["param_groups"])  # JSON-able config
    _steps(model, opt, 5, x, y)
    resumed = _mlp(seed=9)
    resumed.load_state_dict(saved_model)
    opt2 = make(resumed.parameters())
    opt2.load_state_dict(saved_opt)
    _steps(resumed, opt2, 5, x, y)
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_grad_scaler_unscales_before_the_step():
    x, y = _data()
    a, b = _mlp(), _mlp()
    opt_a, opt_b = (
        AdaBreg(a.parameters(), lr=0.01, reg=L1(0.01)),
        AdaBreg(b.parameters(), lr=0.01, reg=L1(0.01)),
    )
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for _ in range(3):
        opt_a.zero_grad()
        scaler.scale(nn.functional.mse_loss(a(x), y)).backward()
        scaler.step(opt_a)
        scaler.update()
        _steps(b, opt_b, 1, x, y)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


def test_param_groups_and_sparse_init():
    from recon.nets import GraphNet, gated_unet

    net = GraphNet(gated_unet(widths=(8, 16), blocks=1))
    groups = {g["name"]: g for g in param_groups(net, GroupL12(0.1), lr=0.01)}
    assert all(p.dim() == 4 for p in groups["weights"]["params"])
    assert all(p.dim() == 0 for p in groups["gates"]["params"]) and isinstance(groups["gates"]["reg"], L1)
    assert all(p.dim() == 1 for p in groups["unregularised"]["params"])
    assert isinstance(groups["unregularised"]["reg"], Null) and groups["weights"]["lr"] == 0.01
    g = torch.Generator().manual_seed(0)
    sparse_init_(net, density=0.1, grouping="element", generator=g)
    assert density(net) == pytest.approx(0.1, abs=0.03)
    assert all(float(p.detach()) == 0 for p in net.gates.values())
    assert all(float(m.bias.detach().min()) > 0 for m in net.convs.values())
    sparse_init_(net, density=0.25, grouping="channel", generator=g)
    rows = torch.cat([(m.weight.abs().amax(dim=(1, 2, 3)) > 0).float() for m in net.convs.values()])
    assert 0.1 < float(rows.mean()) < 0.45
    for m in net.convs.values():  # channels are either empty or full
        w = m.weight.detach().flatten(1)
        assert bool(((w != 0).all(1) | (w == 0).all(1)).all())
    big = nn.Linear(2000, 200)
    sparse_init_(big, density=0.05, grouping="element", generator=g)
    assert float(big.weight.detach().var()) == pytest.approx(2 / 2000, rel=0.1)  # He variance on average


def test_sparse_start_opens_named_gates_and_activation_scaling_never_amplifies():
    """A row reading only switched-off channels (constant ReLU(bias)) has a tiny output std; scaling it
    to unit variance made weights of 1e8 that exploded once an input switched on."""
    from recon.nets import GLOBAL_RESIDUAL, GraphNet, gated_unet
    from recon.sparsity.init import normalize_activations_

    net = GraphNet(gated_unet(widths=(8, 16, 32), blocks=1))
    g = torch.Generator().manual_seed(3)
    sparse_init_(net, density=0.01, grouping="channel", open_gates=(GLOBAL_RESIDUAL,), generator=g)
    gates = dict(net.named_parameters())
    assert float(gates[GLOBAL_RESIDUAL].detach()) == 1.0
    assert all(
        float(p.detach()) == 0 for n, p in gates.items() if n.startswith("gates.") and n != GLOBAL_RESIDUAL
    )
    before = {n: m.weight.detach().abs().max().item() for n, m in net.convs.items()}
    probe = torch.rand(4, 1, 32, 32, generator=g)
    normalize_activations_(net, probe)
    after = {n: m.weight.detach().abs().max().item() for n, m in net.convs.items()}
    assert all(after[n] <= before[n] * (1 + 1e-6) for n in before)
    with torch.no_grad():
        assert float(net(probe).abs().max()) < 100


def test_regularizer_registry_and_validation():
    assert {"l1", "group-l12", "null"} <= set(get_registry("regularizers"))
    reg = build_regularizer(**GroupL12(0.3, "kernel").config())
    assert isinstance(reg, GroupL12) and reg.lam == 0.3 and reg.grouping == "kernel"
    with pytest.raises(InputError):
        L1(-1.0)
    with pytest.raises(InputError):
        GroupL12(0.1, "rows")
    with pytest.raises(InputError):
        LinBreg([nn.Parameter(torch.zeros(1))], lr=-1)
    with pytest.raises(InputError):
        AdaBreg([nn.Parameter(torch.zeros(1))], delta=0)


def _ddp_worker(rank: int, world: int, port: int, results):
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = nn.parallel.DistributedDataParallel(_mlp())
    opt = LinBreg(model.parameters(), lr=0.05, reg=GroupL12(0.05), momentum=0.9)
    x, y = _data()
    shard = slice(rank * 16, (rank + 1) * 16)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.mse_loss(model(x[shard]), y[shard]).backward()
        opt.step()
    results[rank] = [p.detach().clone() for p in model.module.parameters()]
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="gloo test on Linux")
def test_ddp_ranks_stay_identical_and_match_single_process():
    import torch.multiprocessing as mp

    manager = mp.Manager()
    results = manager.dict()
    port = 29500 + os.getpid() % 1000
    mp.spawn(_ddp_worker, args=(2, port, results), nprocs=2, join=True)
    single = _mlp()
    opt = LinBreg(single.parameters(), lr=0.05, reg=GroupL12(0.05), momentum=0.9)
    x, y = _data()
    _steps(single, opt, 5, x, y)  # the mean over both shards = the full-batch gradient
    for a, b, c in zip(results[0], results[1], single.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c.detach(), rtol=1e-10, atol=1e-12)


def test_density_control_follows_its_measure():
    """λ is multiplied by the factor while the measure is above target·(1 + tol), divided while below
    target·(1 − tol), and left alone in between; only every ``every``-th step looks."""
    from recon.sparsity.schedule import DensityController

    model = _mlp()
    opt = AdaBreg(param_groups(model, GroupL12(0.1, "channel"), L1(0.1)), lr=1e-3)
    readings = iter([0.5, 0.5, 0.1, 0.205])
    control = DensityController(opt, model, 0.2, factor=2.0, every=5, measure=lambda m: next(readings))
    weights = next(g for g in opt.param_groups if g["name"] == "weights")
    first = weights["reg"]
    for step, expected in ((5, 0.2), (7, 0.2), (10, 0.4), (15, 0.2), (20, 0.2)):
        control(step)
        assert weights["reg"].lam == pytest.approx(expected)
    assert control.scale == pytest.approx(2.0) and first.lam == pytest.approx(0.1)


def test_density_control_settles_then_freezes_the_support():
    """From ``settle`` on λ only rises until the measure is within the target; then the zero weights
    stay zero through further steps (θ and v), the others keep training, and λ stays put."""
    from recon.sparsity.schedule import DensityController

    model = _mlp()
    with torch.no_grad():
        sparse_init_(model, density=0.3, grouping="channel", generator=torch.Generator().manual_seed(0))
    opt = AdaBreg(param_groups(model, GroupL12(0.1, "channel"), L1(0.1)), lr=1e-2)
    readings = iter([0.1, 0.3, 0.25, 0.2])
    control = DensityController(
        opt, model, 0.2, factor=2.0, every=5, settle=10, measure=lambda m: next(readings)
    )
    weights = next(g for g in opt.param_groups if g["name"] == "weights")
    for step, lam in ((5, 0.05), (10, 0.1), (15, 0.2)):  # below the band: falls; after settle: only rises
        control(step)
        assert weights["reg"].lam == pytest.approx(lam) and not control.frozen
    x, y = _data()
    _steps(model, opt, 3, x, y)
    control(20)  # 0.2 <= target: frozen
    assert control.frozen and weights["reg"].lam == pytest.approx(0.2)
    zero = {name: (p == 0).clone() for name, p in model.named_parameters() if p.dim() >= 2}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert any(z.any() for z in zero.values()) and any((~z).any() for z in zero.values())
    opt.scale_regularization(1e-3)  # without the frozen support this switches every zero group on
    for step in range(21, 31):
        _steps(model, opt, 1, x, y)
        control(step)  # holds the support; no measure is taken (the readings are used up)
    for name, p in model.named_parameters():
        if name in zero:
            assert not p[zero[name]].any() and not opt.state[p]["v"][zero[name]].any()
            assert not torch.equal(p[~zero[name]], before[name][~zero[name]])
    assert control.scale == pytest.approx(2.0)  # ÷2, ×2, ×2 before the freeze; nothing after
    with pytest.raises(InputError):
        DensityController(opt, model, 0.2, settle=-1)


def test_density_control_prunes_thin_branches_when_it_freezes():
    """``prune`` runs once, as the support is frozen, so a branch it switches off stays off while the
    rest trains; a resumed run's ``freeze(prune=False)`` does not run it."""
    from recon.nets import GraphNet, drop_thin_branches, gated_unet
    from recon.sparsity.schedule import DensityController

    net = GraphNet(gated_unet(widths=(8, 16), blocks=1)).double()
    with torch.no_grad():
        sparse_init_(net, density=1.0, grouping="element", gate_value=1.0)
        net.convs["enc1_b0_conv1"].weight[1:] = 0  # one channel left in the block's bottleneck
    opt = AdaBreg(param_groups(net, GroupL12(1e-6, "channel")), lr=1e-3)
    calls = []

    def prune(model):
        calls.append(drop_thin_branches(model, min_width=2))

    control = DensityController(opt, net, 0.5, every=1, settle=0, measure=lambda m: 0.1, prune=prune)
    control(1)
    assert control.frozen and calls == [["enc1_b0_gate"]]
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    head = net.convs["head"].weight.detach().clone()
    for step in range(2, 5):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
        control(step)
    assert float(net.gates["enc1_b0_gate"].detach()) == 0 and not torch.equal(net.convs["head"].weight, head)
    control.freeze(prune=False)
    assert len(calls) == 1


def test_learning_rate_factor_warms_up_then_follows_its_schedule():
    from recon.sparsity.schedule import cosine_decay, learning_rate_factor

    warm = learning_rate_factor(10, "constant", warmup=4)
    assert [warm(t) for t in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    cosine = learning_rate_factor(10, "cosine", warmup=4)
    assert [cosine(t) for t in (1, 5, 10)] == pytest.approx(
        [0.5 * cosine_decay(10)(1), *map(cosine_decay(10), (5, 10))]
    )
    assert learning_rate_factor(10, "cosine")(10) == pytest.approx(0.05)  # no warm-up: the cosine alone
    with pytest.raises(InputError):
        learning_rate_factor(10, "linear")
