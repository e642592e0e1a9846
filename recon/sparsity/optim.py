r"""Bregman optimizers (Bungert, Roith, Tenbrinck, Burger, JMLR 2022) as ``torch.optim.Optimizer``\ s.

Every parameter keeps a subgradient variable ``v`` of :math:`J_\delta = J + \frac{1}{2\delta}\|\cdot\|^2`,
initialised as :math:`v_0 = \partial J(\theta_0) + \theta_0/\delta` so that
:math:`\mathrm{prox}_{\delta J}(\delta v_0) = \theta_0`; each step updates ``v`` with the gradient
and sets :math:`\theta = \mathrm{prox}_{\delta J}(\delta v)`.

- :class:`LinBreg`: :math:`v \leftarrow v - \tau g` (with momentum :math:`\beta`:
  :math:`m \leftarrow \beta m + (1-\beta)\tau g,\ v \leftarrow v - m`). With :math:`J = 0` it is SGD
  with learning rate :math:`\delta\tau`.
- :class:`AdaBreg`: Adam's moments with both bias corrections drive ``v``:
  :math:`v \leftarrow v - \tau\,\hat m_1/(\sqrt{\hat m_2} + \epsilon)`.
- :class:`ProxSGD`: proximal gradient descent,
  :math:`\theta \leftarrow \mathrm{prox}_{\tau J}(\theta - \tau g)`, the baseline of the paper.

Each parameter group carries its own regularizer (``reg``) and ``delta``; :func:`param_groups` builds
groups for a model (weights regularised, biases and normalisation parameters not). The updates use
``torch._foreach_*`` over all tensors of a group. AMP: ``GradScaler.step(optimizer)`` unscales the
gradients first, as for any optimizer; under DDP the gradients arrive averaged, so every rank takes
the same step.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from recon.errors import InputError
from recon.sparsity.regularizers import Null, Regularizer, build_regularizer


def _check(lr: float, delta: float) -> None:
    if not (math.isfinite(lr) and lr >= 0):
        raise InputError(f"learning rate must be a non-negative number, got {lr}")
    if not (math.isfinite(delta) and delta > 0):
        raise InputError(f"delta must be positive, got {delta}")


class _Regularized(torch.optim.Optimizer):
    """Optimizers whose groups carry a ``reg``: ``state_dict`` stores it as its JSON config."""

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        for group in out["param_groups"]:
            group["reg"] = group["reg"].config()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = {**state_dict, "param_groups": [dict(g) for g in state_dict["param_groups"]]}
        for group in state_dict["param_groups"]:
            if isinstance(group.get("reg"), dict):
                group["reg"] = build_regularizer(**group["reg"])
        super().load_state_dict(state_dict)

    @torch.no_grad()
    def scale_regularization(
        self, factor: float, groups: tuple[str, ...] = ("weights", "gates"), keep_weights: bool = False
    ) -> None:
        """Multiply λ of the named groups by ``factor``.

        By default ``v`` is kept, so the next step's prox applies the new threshold: a larger λ
        shrinks every group and switches the weakest off. With ``keep_weights`` the weights do not
        move: :math:`v \\leftarrow v + \\partial J_{new}(\\theta) - \\partial J_{old}(\\theta)` keeps
        :math:`\\mathrm{prox}_{\\delta J_{new}}(\\delta v) = \\theta` (inactive groups keep their ``v``
        and switch on at the new threshold), but then no active group can ever switch off."""
        if not (math.isfinite(factor) and factor > 0):
            raise InputError(f"scale factor must be positive, got {factor}")
        for group in self.param_groups:
            if group.get("name") not in groups:
                continue
            old = group["reg"]
            new = copy.copy(old)
            new.lam = old.lam * factor
            if keep_weights:
                for p in group["params"]:
                    state = self.state[p]
                    if "v" not in state:
                        continue
                    state["v"] += new.subgradient(p.detach()) - old.subgradient(p.detach())
            group["reg"] = new


class _Bregman(_Regularized):
    """Shared machinery of the Bregman optimizers: state initialisation and the prox."""

    def _params_with_grad(self, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        params, grads, vs = [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            state = self.state[p]
            if "v" not in state:
                self._init_state(group, p, state)
            params.append(p)
            grads.append(p.grad)
            vs.append(state["v"])
        return params, grads, vs

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        state["step"] = torch.zeros((), dtype=torch.float64)
        state["v"] = group["reg"].subgradient(p.detach()) + p.detach() / group["delta"]

    @staticmethod
    def _set_weights(group: dict[str, Any], params: list[Tensor], vs: list[Tensor]) -> None:
        torch._foreach_copy_(params, group["reg"].prox_many(vs, group["delta"]))

    def _update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], vs: list[Tensor]
    ) -> None:
        """Move ``vs`` with ``grads`` (the method-specific part of a step)."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, vs = self._params_with_grad(group)
            if not params:
                continue
            for p in params:
                self.state[p]["step"] += 1
            self._update(group, params, grads, vs)
            self._set_weights(group, params, vs)
        return loss

    def reinitialise(self) -> None:
        """Reset ``v`` to :math:`\\partial J(\\theta) + \\theta/\\delta` (after λ or the weights changed)."""
        for group in self.param_groups:
            for p in group["params"]:
                if "v" in self.state[p]:
                    self.state[p]["v"] = group["reg"].subgradient(p.detach()) + p.detach() / group["delta"]

    def regularization(self) -> Tensor:
        """:math:`\\sum_{groups} J(\\theta)` (for logging)."""
        total = torch.zeros(())
        for group in self.param_groups:
            for p in group["params"]:
                total = total + group["reg"].value(p.detach()).cpu()
        return total


class LinBreg(_Bregman):
    """Linearized Bregman iteration, optionally with momentum on ``v``.

    :param lr: step size τ. :param reg: regularizer of the default group. :param delta: δ of the
    elastic-net mirror map. :param momentum: β (0 disables it; the paper uses 0.9).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        reg: Regularizer | None = None,
        delta: float = 1.0,
        momentum: float = 0.0,
    ):
        _check(lr, delta)
        if not 0 <= momentum < 1:
            raise InputError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(params, {"lr": lr, "reg": reg or Null(), "delta": delta, "momentum": momentum})

    def _update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], vs: list[Tensor]
    ) -> None:
        lr, beta = group["lr"], group["momentum"]
        if beta > 0:
            bufs = []
            for p, g in zip(params, grads, strict=True):
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(g)
                bufs.append(state["momentum"])
            torch._foreach_mul_(bufs, beta)
            torch._foreach_add_(bufs, grads, alpha=(1 - beta) * lr)
            torch._foreach_sub_(vs, bufs)
        else:
            torch._foreach_add_(vs, grads, alpha=-lr)


class AdaBreg(_Bregman):
    """Adam-driven Bregman iteration (AdaBreg): Adam's bias-corrected moments update ``v``."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        reg: Regularizer | None = None,
        delta: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        _check(lr, delta)
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or eps <= 0:
            raise InputError(f"invalid betas {betas} or eps {eps}")
        super().__init__(params, {"lr": lr, "reg": reg or Null(), "delta": delta, "betas": betas, "eps": eps})

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        super()._init_state(group, p, state)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], vs: list[Tensor]
    ) -> None:
        beta1, beta2 = group["betas"]
        states = [self.state[p] for p in params]
        m1 = [s["exp_avg"] for s in states]
        m2 = [s["exp_avg_sq"] for s in states]
        steps = [float(s["step"]) for s in states]
        torch._foreach_lerp_(m1, grads, 1 - beta1)
        torch._foreach_mul_(m2, beta2)
        torch._foreach_addcmul_(m2, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(m2)
        torch._foreach_div_(denom, [math.sqrt(1 - beta2**t) for t in steps])
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_addcdiv_(vs, m1, denom, [-group["lr"] / (1 - beta1**t) for t in steps])


class ProxSGD(_Regularized):
    """Proximal SGD: :math:`\\theta \\leftarrow \\mathrm{prox}_{\\tau J}(\\theta - \\tau g)`, optionally
    with heavy-ball momentum on the gradient."""

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-2, reg: Regularizer | None = None, momentum: float = 0.0
    ):
        _check(lr, 1.0)
        if lr == 0:
            raise InputError("ProxSGD needs a positive learning rate")
        super().__init__(params, {"lr": lr, "reg": reg or Null(), "momentum": momentum})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            lr = group["lr"]
            if group["momentum"] > 0:
                bufs = [self.state[p].setdefault("momentum", torch.zeros_like(p)) for p in params]
                torch._foreach_mul_(bufs, group["momentum"])
                torch._foreach_add_(bufs, grads)
                grads = bufs
            # prox_{τJ}(θ − τg) = prox_{δJ}(δv) with δ = τ and v = (θ − τg)/τ
            v = torch._foreach_add(params, grads, alpha=-lr)
            torch._foreach_div_(v, lr)
            torch._foreach_copy_(params, group["reg"].prox_many(v, lr))
        return loss


def is_gate(name: str, p: Tensor) -> bool:
    """Scalar gates (skip connections, residual blocks) are 0-d parameters named ``gates.*``."""
    return name.startswith("gates.") or name.endswith(".gate")


def param_groups(
    model: nn.Module, reg: Regularizer, gate_reg: Regularizer | None = None, **options: Any
) -> list[dict[str, Any]]:
    """Parameter groups for a Bregman optimizer.

    Weights with two or more dimensions get ``reg``; scalar gates get ``gate_reg`` (default: ℓ1 with
    the same λ); biases and normalisation parameters (one dimension) are unregularised. ``options``
    (``lr``, ``delta`` …) apply to every group.
    """
    from recon.sparsity.regularizers import L1

    weights, gates, plain = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if is_gate(name, p):
            gates.append(p)
        elif p.dim() >= 2:
            weights.append(p)
        else:
            plain.append(p)
    groups = [
        {"params": weights, "reg": reg, "name": "weights", **options},
        {"params": gates, "reg": gate_reg or L1(reg.lam), "name": "gates", **options},
        {"params": plain, "reg": Null(), "name": "unregularised", **options},
    ]
    return [g for g in groups if g["params"]]
