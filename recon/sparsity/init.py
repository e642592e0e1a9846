r"""Sparse initialisation for inverse-scale-space training.

Each weight (``grouping="element"``) or each group (``"channel"``: a whole output channel,
``"kernel"``: one k×k kernel) is kept with probability :math:`r` (default 1%). Kept weights are
drawn from He's normal distribution with the variance scaled by :math:`1/r`, so the expected
output variance matches a dense He initialisation. At least ``min_groups`` groups per tensor are kept:
with channel groups and :math:`r = 1\%` most layers would otherwise start empty, and an empty layer
passes no gradient, so nothing before it could ever switch on. Biases are dense and, for ReLU networks,
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
    open_gates: tuple[str, ...] = (),
    min_groups: int = 1,
) -> nn.Module:
    """Initialise ``model`` in place; parameters whose name starts with an entry of ``keep_dense``
    get a dense He initialisation (e.g. the output layer). Every weight tensor keeps at least
    ``min_groups`` groups, so that a signal path (and a gradient path) runs through every layer.
    Gates named in ``open_gates`` start at 1 whatever ``gate_value`` is (e.g. a post-processing
    network's global residual: it should learn the correction, not spend its first steps learning
    the identity)."""
    if not 0 < density <= 1:
        raise InputError(f"density must be in (0, 1], got {density}")
    for name, p in model.named_parameters():
        if is_gate(name, p):
            p.fill_(1.0 if name in open_gates else gate_value)
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
                scores = torch.rand(shape, generator=generator)
                keep = scores < density
                if min_groups > 0:  # force the min_groups lowest scores on
                    flat = scores.flatten()
                    keep.view(-1)[torch.topk(flat, min(min_groups, flat.numel()), largest=False).indices] = (
                        True
                    )
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


@torch.no_grad()
def normalize_activations_(
    model: nn.Module,
    probe: torch.Tensor,
    target: float = 1.0,
    last_target: float = 0.1,
    max_gain: float = 1.0,
) -> nn.Module:
    """Layer-sequential unit-variance rescaling (Mishkin & Matas, "All you need is a good init", 2016).

    In forward order, each convolution or linear layer with non-zero weights is run on ``probe`` and
    its weights are scaled so that its pre-activation output has standard deviation ``target`` over
    the channels it computes (``last_target`` for the last layer: a network starts close to its skip
    connections rather than with unit-variance noise on its output). A sparse start needs this: with
    whole channels switched off, the live fan-in of a layer is unknown beforehand, and a fixed 1/r
    variance scaling would make the signal explode or vanish through a deep, thin path.

    A layer's gain is capped at ``max_gain`` (default 1: weights are only ever shrunk; the 1/r
    variance of :func:`sparse_init_` already makes up for the missing fan-in). In a sparse start a
    live row often reads only constant inputs (switched-off channels pass ReLU(bias)), so its output
    is nearly constant and its measured std tiny; scaling it up by 1/std gave weights of 10⁸ that
    blew the loss up by 10⁷ as soon as training switched a real input on.
    """
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for index, layer in enumerate(layers):
        if not bool(torch.count_nonzero(layer.weight)):
            continue
        out = _output_of(model, layer, probe)
        rows = layer.weight.flatten(1).abs().amax(dim=1) > 0
        bias = layer.bias.view(1, -1, *([1] * (out.dim() - 2))) if layer.bias is not None else 0
        std = float((out - bias).transpose(0, 1)[rows].std())
        if std > 0 and torch.isfinite(torch.tensor(std)):
            wanted = last_target if index == len(layers) - 1 else target
            layer.weight.mul_(min(wanted / std, max_gain))
    return model


def _output_of(model: nn.Module, layer: nn.Module, probe: torch.Tensor) -> torch.Tensor:
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    try:
        model(probe)
    finally:
        handle.remove()
    return captured[0]
