r"""Sparse initialisation for inverse-scale-space training.

Each weight (``grouping="element"``) or each group (``"channel"``: a whole output channel,
``"kernel"``: one k×k kernel) is kept with probability :math:`r` (default 1%). Kept weights are
drawn from He's normal distribution with the variance scaled by :math:`1/r`, so the expected
output variance matches a dense He initialisation. Biases are dense and, for ReLU networks,
a small positive constant, so that units whose weights are all zero still pass a signal and do not
collapse. Gates (``gates.*``) are set to ``gate_value`` (0: skips start closed). Randomness comes
only from ``generator``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from recon.errors import InputError
from recon.sparsity.optim import is_gate


@torch.no_grad()
def sparse_init_(
    model: nn.Module,
    density: float = 0.01,
    *,
    grouping: Literal["element", "channel", "kernel"] = "channel",
    bias: float = 0.01,
    gate_value: float = 0.0,
    generator: torch.Generator | None = None,
    keep_dense: tuple[str, ...] = (),
) -> nn.Module:
    """Initialise ``model`` in place; parameters whose name starts with an entry of ``keep_dense``
    get a dense He initialisation (e.g. the output layer)."""
    if not 0 < density <= 1:
        raise InputError(f"density must be in (0, 1], got {density}")
    for name, p in model.named_parameters():
        if is_gate(name, p):
            p.fill_(gate_value)
        elif p.dim() >= 2:
            fan_in = p[0].numel()
            std = math.sqrt(2.0 / fan_in)
            values = torch.randn(p.shape, generator=generator, dtype=p.dtype) * std
            if not (keep_dense and name.startswith(keep_dense)):
                shape = {
                    "element": p.shape,
                    "channel": p.shape[:1] + (1,) * (p.dim() - 1),
                    "kernel": p.shape[:2] + (1,) * (p.dim() - 2),
                }[grouping]
                keep = torch.rand(shape, generator=generator) < density
                values = values * keep / math.sqrt(density)
            p.copy_(values)
        else:
            p.fill_(bias)
    return model


def density(model: nn.Module, *, weights_only: bool = True) -> float:
    """Fraction of non-zero entries among the weights (tensors of two or more dimensions)."""
    total = nonzero = 0
    for name, p in model.named_parameters():
        if weights_only and (p.dim() < 2 or is_gate(name, p)):
            continue
        total += p.numel()
        nonzero += int(torch.count_nonzero(p))
    return nonzero / max(total, 1)
