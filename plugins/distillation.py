r"""Knowledge distillation: a trained (dense) teacher's reconstruction as a second target.

.. math::  \min_\theta \; L(f_\theta(y), x) + w\,L(f_\theta(y), f_T(y))

with :math:`L` the task's loss and :math:`f_T` a trained reconstructor for the same operator (Hinton,
Vinyals and Dean, 2015, for regression: the teacher's output is a smoother target than the noisy
truth that a small network can follow). Used to train a sparse network towards its dense twin
(``recon train --recipe mri-4x --term distill:teacher=runs/mri-4x-dense/model``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from recon import InputError
from recon.modelio import load_model
from recon.terms import TrainingTerm


class Distillation(TrainingTerm):
    name = "distill"

    def __init__(self, teacher: str | nn.Module, weight: float = 1.0):
        """``teacher``: a model file or name (``recon.modelio.load_model``), or a reconstructor
        (copied, so the caller's model is left as it is)."""
        if not weight >= 0:
            raise InputError(f"distillation weight must be non-negative, got {weight}")
        self.weight = float(weight)
        if isinstance(teacher, nn.Module):
            self.path, self.teacher = None, copy.deepcopy(teacher)
        else:
            self.path, (self.teacher, _) = str(teacher), load_model(teacher)
        self.teacher.eval().requires_grad_(False)

    def penalty(self, model: nn.Module, sample: Any, prediction: Tensor, loss: Tensor, task: Any) -> Tensor:
        teacher = self.teacher.to(prediction.device)
        with torch.no_grad():
            target = teacher(sample.y.detach(), sample.physics).to(prediction.dtype)
        return self.weight * task.loss(prediction, target)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "teacher": self.path, "weight": self.weight}


def distill(teacher: str, weight: float = 1.0) -> Distillation:
    """Knowledge distillation: loss + weight·L(prediction, teacher's reconstruction)."""
    return Distillation(teacher, weight)
