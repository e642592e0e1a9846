r"""Adversarial training to first order: the gradient-norm (total-variation) penalty.

Training against the worst perturbation in an :math:`\ell_\infty` ball of radius :math:`\varepsilon`
around the measurements is, to first order,

.. math::  \min_\theta \; \mathbb{E}\,\big[L(\theta; y) + \varepsilon\,\|\nabla_y L(\theta; y)\|_1\big]

(the dual norm of :math:`\ell_\infty`; :math:`\ell_2` balls give :math:`\|\cdot\|_2`), the
total-variation regularisation of Bungert, García Trillos and Murray. The penalty is computed by
double backpropagation; ``eps`` is relative to the measurement scale of one sample.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn

from recon import InputError
from recon.terms import TrainingTerm, input_gradient


class GradientNorm(TrainingTerm):
    name = "adversarial-tv"
    needs_input_grad = True

    def __init__(self, eps: float = 0.01, norm: Literal["linf", "l2"] = "linf"):
        if not eps >= 0:
            raise InputError(f"eps must be non-negative, got {eps}")
        self.eps, self.norm = float(eps), norm

    def penalty(self, model: nn.Module, sample: Any, prediction: Tensor, loss: Tensor, task: Any) -> Tensor:
        grad = input_gradient(loss, sample.y).flatten(1)
        if grad.is_complex():
            grad = grad.abs()
        scale = sample.y.detach().abs().flatten(1).amax(dim=1)
        dual = grad.abs().sum(dim=1) if self.norm == "linf" else grad.norm(dim=1)
        return self.eps * (scale * dual).mean()

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "eps": self.eps, "norm": self.norm}


def adversarial_tv(eps: float = 0.01, norm: Literal["linf", "l2"] = "linf") -> GradientNorm:
    """First-order adversarial training: loss + eps·‖∇_y loss‖_* (double backprop)."""
    return GradientNorm(eps, norm)
