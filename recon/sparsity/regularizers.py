r"""Sparsity regularizers for Bregman training: value, proximal map and subgradient.

The optimizers keep a subgradient variable :math:`v \in \partial J_\delta(\theta)` of the elastic-net
mirror map :math:`J_\delta = J + \frac{1}{2\delta}\|\cdot\|^2` and recover the weights as
:math:`\theta = \mathrm{prox}_{\delta J}(\delta v)`; :meth:`Regularizer.prox` computes exactly that.

- :class:`L1`, :math:`J = \lambda\|\theta\|_1`:
  :math:`\mathrm{prox}_{\delta J}(\delta v) = \delta\,\mathrm{sign}(v)\max(|v| - \lambda, 0)`.
- :class:`GroupL12`, :math:`J = \lambda \sum_g \sqrt{n_g}\,\|\theta_g\|_2`:
  :math:`\theta_g = \delta v_g \max(0, 1 - \lambda\sqrt{n_g}/\|v_g\|_2)`; a group is active iff
  :math:`\|v_g\|_2 > \lambda\sqrt{n_g}`. Groups: ``channel`` (an output channel / neuron: all of
  ``weight[o]``), ``kernel`` (one k×k kernel ``weight[o, i]``), ``element`` (every entry: scalar
  gates of skip connections or residual blocks, where :math:`n_g = 1` and this is ℓ1).
- :class:`Null`: :math:`J = 0` (biases, normalisation layers): :math:`\theta = \delta v`.

Each regularizer acts on one tensor at a time, vectorised over its groups; :class:`L1` and
:class:`Null` also have multi-tensor ``prox_many`` versions built on ``torch._foreach_*``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from recon.errors import InputError

Grouping = Literal["channel", "kernel", "element"]
GROUPINGS: tuple[Grouping, ...] = ("channel", "kernel", "element")


class Regularizer:
    """Base class; ``lam`` is the regularisation strength λ (a float, may be changed in training)."""

    name = "base"

    def __init__(self, lam: float = 0.0):
        if not (math.isfinite(lam) and lam >= 0):
            raise InputError(f"regularisation strength must be a non-negative number, got {lam}")
        self.lam = float(lam)

    def value(self, theta: Tensor) -> Tensor:
        raise NotImplementedError

    def prox(self, v: Tensor, delta: float) -> Tensor:
        """:math:`\\mathrm{prox}_{\\delta J}(\\delta v)`."""
        raise NotImplementedError

    def subgradient(self, theta: Tensor) -> Tensor:
        """An element of :math:`\\partial J(\\theta)` (zero where :math:`J` is not differentiable)."""
        raise NotImplementedError

    def prox_many(self, vs: list[Tensor], delta: float) -> list[Tensor]:
        return [self.prox(v, delta) for v in vs]

    def groups(self, theta: Tensor) -> tuple[int, int]:
        """``(active, total)`` groups of ``theta`` (active = non-zero)."""
        return int(torch.count_nonzero(theta)), theta.numel()

    def config(self) -> dict[str, Any]:
        """JSON-able description; ``build_regularizer(**config)`` rebuilds it."""
        return {"name": self.name, "lam": self.lam}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class Null(Regularizer):
    """No regularisation: the Bregman iteration reduces to plain (momentum / adaptive) SGD."""

    name = "null"

    def __init__(self, lam: float = 0.0):
        super().__init__(0.0)

    def value(self, theta: Tensor) -> Tensor:
        return theta.new_zeros(())

    def prox(self, v: Tensor, delta: float) -> Tensor:
        return v * delta

    def prox_many(self, vs: list[Tensor], delta: float) -> list[Tensor]:
        return torch._foreach_mul(vs, delta)

    def subgradient(self, theta: Tensor) -> Tensor:
        return torch.zeros_like(theta)

    def config(self) -> dict[str, Any]:
        return {"name": self.name}


class L1(Regularizer):
    """:math:`\\lambda\\|\\theta\\|_1` (unstructured sparsity)."""

    name = "l1"

    def value(self, theta: Tensor) -> Tensor:
        return self.lam * theta.abs().sum()

    def prox(self, v: Tensor, delta: float) -> Tensor:
        return delta * torch.sign(v) * torch.clamp_min(v.abs() - self.lam, 0)

    def prox_many(self, vs: list[Tensor], delta: float) -> list[Tensor]:
        shrunk = torch._foreach_abs(vs)
        torch._foreach_sub_(shrunk, self.lam)
        torch._foreach_clamp_min_(shrunk, 0.0)
        torch._foreach_mul_(shrunk, torch._foreach_sign(vs))
        torch._foreach_mul_(shrunk, delta)
        return shrunk

    def subgradient(self, theta: Tensor) -> Tensor:
        return self.lam * torch.sign(theta)


def _group_dims(theta: Tensor, grouping: Grouping) -> tuple[int, ...]:
    """Dimensions reduced inside one group."""
    if grouping == "element" or theta.dim() <= 1:
        return ()
    if grouping == "channel":
        return tuple(range(1, theta.dim()))
    if grouping == "kernel":
        return tuple(range(2, theta.dim())) if theta.dim() > 2 else ()
    raise InputError(f"unknown grouping {grouping!r} (known: channel, kernel, element)")


class GroupL12(Regularizer):
    """:math:`\\lambda\\sum_g\\sqrt{n_g}\\|\\theta_g\\|_2` with groups of the given ``grouping``."""

    name = "group-l12"

    def __init__(self, lam: float = 0.0, grouping: Grouping = "channel"):
        super().__init__(lam)
        if grouping not in GROUPINGS:
            raise InputError(f"unknown grouping {grouping!r} (known: {', '.join(GROUPINGS)})")
        self.grouping = grouping

    def _norms(self, t: Tensor) -> tuple[Tensor, float]:
        dims = _group_dims(t, self.grouping)
        if not dims:
            return t.abs(), 1.0
        return torch.linalg.vector_norm(t, dim=dims, keepdim=True), math.sqrt(
            math.prod(t.shape[d] for d in dims)
        )

    def value(self, theta: Tensor) -> Tensor:
        norms, root_n = self._norms(theta)
        return self.lam * root_n * norms.sum()

    def prox(self, v: Tensor, delta: float) -> Tensor:
        norms, root_n = self._norms(v)
        scale = torch.clamp_min(1 - self.lam * root_n / norms.clamp_min(torch.finfo(v.dtype).tiny), 0)
        return v * (delta * scale)

    def subgradient(self, theta: Tensor) -> Tensor:
        norms, root_n = self._norms(theta)
        return self.lam * root_n * theta / torch.where(norms > 0, norms, torch.ones_like(norms))

    def groups(self, theta: Tensor) -> tuple[int, int]:
        norms, _ = self._norms(theta)
        return int(torch.count_nonzero(norms)), norms.numel()

    def config(self) -> dict[str, Any]:
        return {**super().config(), "grouping": self.grouping}


def l1(lam: float = 0.01) -> L1:
    """ℓ1 norm (unstructured sparsity)."""
    return L1(lam)


def group_l12(lam: float = 0.01, grouping: Grouping = "channel") -> GroupL12:
    """Group ℓ1,2 norm with √n_g weights over channels, kernels or elements."""
    return GroupL12(lam, grouping)


def null() -> Null:
    """No regularisation."""
    return Null()


def weight_regularizer(lam: float, grouping: Grouping) -> Regularizer:
    """The weights' regularizer for sparsity of ``grouping``: :class:`L1` for single weights (the
    same as element groups, with the multi-tensor prox), :class:`GroupL12` otherwise."""
    return L1(lam) if grouping == "element" else GroupL12(lam, grouping)


def build_regularizer(name: str, **params: Any) -> Regularizer:
    """A regularizer from the registry (``recon list regularizers``), e.g. from ``config()``."""
    from recon.registry import get_registry

    return get_registry("regularizers").build(name, **params)
