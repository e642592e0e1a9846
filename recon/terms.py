"""Training terms: per-run additions to the training loss (robustness, regularisation …).

A term is chosen per run (``recon train --term name:key=value``) from the ``training_terms``
registry, so plugins add terms without touching the trainer. Each step, the trainer calls
``perturb`` (which may replace the sample, e.g. by an adversarial one), computes the prediction and
the task loss, then adds every term's ``penalty``. A term that needs the gradient of the loss with
respect to the measurements sets ``needs_input_grad``; the trainer then tracks it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from recon.registry import get_registry


class TrainingTerm:
    """Base class: both methods are optional."""

    name = "term"
    needs_input_grad = False

    def perturb(self, model: nn.Module, sample: Any, task: Any) -> Any:
        """Return the sample to train on (default: unchanged)."""
        return sample

    def penalty(
        self, model: nn.Module, sample: Any, prediction: Tensor, loss: Tensor, task: Any
    ) -> Tensor | None:
        """An extra loss to add (default: none)."""
        return None

    def config(self) -> dict[str, Any]:
        return {"name": self.name}


def build_terms(specs: list[str]) -> list[TrainingTerm]:
    """Terms from ``"name:key=value,..."`` specs."""
    from recon.physics import parse_spec

    terms = []
    registry = get_registry("training_terms")
    for spec in specs:
        name, texts = parse_spec(spec)
        entry = registry.lookup(name)
        terms.append(entry.build(**entry.parse_params(texts)))
    return terms


def input_gradient(loss: Tensor, y: Tensor) -> Tensor:
    """:math:`\\nabla_y` loss with the graph kept, for penalties trained by double backpropagation."""
    (grad,) = torch.autograd.grad(loss, y, create_graph=True)
    return grad
