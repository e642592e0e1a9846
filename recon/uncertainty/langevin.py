r"""Langevin samplers on a list of parameter tensors, for any potential
:math:`U(\theta) = -\log p(\theta\,|\,\text{data})`.

``grad(theta)`` returns :math:`\nabla U` (exact or a minibatch estimate) and, for pSGLD's
preconditioner, the mean minibatch gradient of the log-likelihood :math:`\bar g` (``None`` to use
:math:`\nabla U`). Both samplers update ``theta`` in place and return copies of every ``thin``-th
state after ``burn_in`` steps. Randomness comes only from ``generator``.

**pSGLD** (Li, Chen, Carlson, Carin, AAAI 2016), correction term Γ dropped as usual:
:math:`V \leftarrow \alpha V + (1-\alpha)\,\bar g \odot \bar g`, :math:`G = 1/(\lambda + \sqrt V)`,
:math:`\theta \leftarrow \theta - \frac{\epsilon}{2} G \nabla U + \mathcal N(0, \epsilon\, T\, G)`.

**BAOAB** (Leimkuhler & Matthews), unit mass, friction :math:`\gamma`, step :math:`h`:
B: :math:`p \leftarrow p - \frac h2 \nabla U`; A: :math:`\theta \leftarrow \theta + \frac h2 p`;
O: :math:`p \leftarrow c\,p + \sqrt{T(1-c^2)}\,\xi` with :math:`c = e^{-\gamma h}`; A; B with a fresh
gradient. The O-step noise scales with :math:`\sqrt T` (one public implementation uses :math:`T`,
which samples the wrong temperature: the Gaussian-target test catches that).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm import tqdm

from recon.errors import InputError

Gradient = Callable[[list[Tensor]], tuple[list[Tensor], list[Tensor] | None]]


def _check(step: float, temperature: float, burn_in: int, thin: int, count: int) -> None:
    if not (step > 0 and math.isfinite(step)) or temperature < 0:
        raise InputError(
            f"step size must be positive and temperature non-negative (got {step}, {temperature})"
        )
    if burn_in < 0 or thin < 1 or count < 1:
        raise InputError(f"invalid schedule: burn_in {burn_in}, thin {thin}, samples {count}")


def _noise(like: list[Tensor], generator: torch.Generator) -> list[Tensor]:
    return [torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device) for t in like]


@torch.no_grad()
def psgld(
    theta: list[Tensor],
    grad: Gradient,
    *,
    step: float,
    count: int,
    burn_in: int = 100,
    thin: int = 10,
    alpha: float = 0.99,
    lam: float = 1e-5,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> list[list[Tensor]]:
    """Preconditioned stochastic-gradient Langevin dynamics; returns ``count`` states."""
    _check(step, temperature, burn_in, thin, count)
    generator = generator or torch.Generator().manual_seed(0)
    v = [torch.zeros_like(t) for t in theta]
    kept: list[list[Tensor]] = []
    total = burn_in + count * thin
    for it in tqdm(range(1, total + 1), desc="psgld", disable=not progress, leave=False):
        g_u, g_bar = grad(theta)
        g_bar = g_bar if g_bar is not None else g_u
        torch._foreach_mul_(v, alpha)
        torch._foreach_addcmul_(v, g_bar, g_bar, value=1 - alpha)
        precond = torch._foreach_sqrt(v)
        torch._foreach_add_(precond, lam)
        torch._foreach_reciprocal_(precond)
        torch._foreach_addcmul_(theta, precond, g_u, value=-step / 2)
        noise = _noise(theta, generator)
        torch._foreach_mul_(noise, torch._foreach_sqrt(precond))
        torch._foreach_add_(theta, noise, alpha=math.sqrt(step * temperature))
        if it > burn_in and (it - burn_in) % thin == 0:
            kept.append([t.detach().clone() for t in theta])
    return kept


@torch.no_grad()
def baoab(
    theta: list[Tensor],
    grad: Gradient,
    *,
    step: float,
    count: int,
    burn_in: int = 100,
    thin: int = 10,
    friction: float = 1.0,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> list[list[Tensor]]:
    """Underdamped Langevin dynamics with the BAOAB splitting; returns ``count`` states."""
    _check(step, temperature, burn_in, thin, count)
    if friction <= 0:
        raise InputError(f"friction must be positive, got {friction}")
    generator = generator or torch.Generator().manual_seed(0)
    c = math.exp(-friction * step)
    momentum = _noise(theta, generator)
    torch._foreach_mul_(momentum, math.sqrt(temperature))
    g_u = grad(theta)[0]
    kept: list[list[Tensor]] = []
    total = burn_in + count * thin
    for it in tqdm(range(1, total + 1), desc="baoab", disable=not progress, leave=False):
        torch._foreach_add_(momentum, g_u, alpha=-step / 2)  # B
        torch._foreach_add_(theta, momentum, alpha=step / 2)  # A
        torch._foreach_mul_(momentum, c)  # O
        torch._foreach_add_(momentum, _noise(theta, generator), alpha=math.sqrt(temperature * (1 - c * c)))
        torch._foreach_add_(theta, momentum, alpha=step / 2)  # A
        g_u = grad(theta)[0]
        torch._foreach_add_(momentum, g_u, alpha=-step / 2)  # B
        if it > burn_in and (it - burn_in) % thin == 0:
            kept.append([t.detach().clone() for t in theta])
    return kept
