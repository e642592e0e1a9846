r"""Learned reconstructors: any operator paired with a network.

``Reconstructor(net)(y, physics)`` returns an image estimate :math:`\hat x`:

1. an initial image :math:`x_0` = :math:`A^H y` (``init="adjoint"``) or :math:`y` itself
   (``"measurement"``, for square operators such as denoising or deblurring);
2. normalisation by :math:`s` = the 99th percentile of :math:`|x_0|` per sample, so the network sees
   the same intensity range whatever the scanner scale (the result is multiplied back by :math:`s`);
3. the network: once (post-processing) or ``unrolled`` times with a shared network,
   :math:`x \leftarrow f_\theta(x - \eta A^H(Ax - y))`, :math:`\eta = 1/\|A\|^2`;
4. optional data consistency: ``"replace"`` (measured k-space replaces the estimate's, binary MRI
   masks) or ``"soft"``: :math:`\arg\min_x \frac{\gamma}{2}\|Ax-y\|^2 + \frac12\|x-\hat x\|^2`,
   the operator's ``prox_l2`` (closed form for MRI, conjugate gradients otherwise).

Complex images (MRI) reach a 2-channel network as (real, imaginary), or a 1-channel network as
magnitude (the phase of :math:`x_0` is put back on its output).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from deepinv.physics import Physics
from torch import Tensor, nn

from recon import layout
from recon.errors import InputError
from recon.nets import inference_network
from recon.physics import exact_norm, operator_norm

Init = Literal["adjoint", "measurement"]
Consistency = Literal["none", "replace", "soft"]


def _channels(net: nn.Module) -> int:
    spec = getattr(net, "spec", None)
    if isinstance(spec, dict):
        return int(spec["in_channels"])
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise InputError("cannot tell how many input channels the network has")


def percentile_scale(x: Tensor, q: float = 0.99) -> Tensor:
    """Per-sample ``q``-quantile of ``|x|`` (shape ``(B, 1, 1, 1)``), never below a tiny positive value."""
    flat = x.abs().flatten(1)
    if flat.shape[1] > 2**20:  # torch.quantile has a size limit; a strided subsample is enough
        flat = flat[:, :: flat.shape[1] // 2**20 + 1]
    scale = torch.quantile(flat, q, dim=1)
    fallback = flat.amax(dim=1)
    scale = torch.where(scale > 0, scale, fallback).clamp_min(1e-12)
    return scale.view(-1, *([1] * (x.dim() - 1)))


MAX_UNROLLED = 64  # passes of an unrolled network: published ones use 5-12


class Reconstructor(nn.Module):
    """Operator + network; see the module docstring. ``net`` is any image-to-image module."""

    def __init__(
        self,
        net: nn.Module,
        *,
        init: Init = "adjoint",
        dc: Consistency = "none",
        dc_weight: float = 1.0,
        unrolled: int = 0,
    ):
        super().__init__()
        if init not in ("adjoint", "measurement") or dc not in ("none", "replace", "soft"):
            raise InputError(f"invalid reconstructor: init {init!r}, data consistency {dc!r}")
        if not 0 <= unrolled <= MAX_UNROLLED or not (math.isfinite(dc_weight) and dc_weight > 0):
            raise InputError(f"invalid reconstructor: unrolled {unrolled}, dc_weight {dc_weight}")
        self.net = net
        self.init, self.dc, self.dc_weight, self.unrolled = init, dc, float(dc_weight), int(unrolled)
        self.channels = _channels(net)

    def for_inference(self) -> Reconstructor:
        """This reconstructor with its network in the fastest form for its device
        (:func:`recon.nets.inference_network`: the same outputs, to float rounding)."""
        return Reconstructor(inference_network(self.net), **self.config()).eval()

    def config(self) -> dict[str, Any]:
        return {"init": self.init, "dc": self.dc, "dc_weight": self.dc_weight, "unrolled": self.unrolled}

    def to_net(self, x: Tensor) -> Tensor:
        """The network's view of an image: complex → (real, imaginary) channels or magnitude."""
        if not x.is_complex():
            return x
        return layout.to_channel_pair(x) if self.channels == 2 else x.abs()

    def from_net(self, out: Tensor, like: Tensor) -> Tensor:
        """Back from the network's output to an image like ``like`` (magnitude outputs get its phase)."""
        if not like.is_complex():
            return out
        if self.channels == 2:
            return torch.complex(out[:, :1], out[:, 1:2])
        return torch.polar(out.abs(), like.angle())

    @property
    def passes(self) -> int:
        """How many times the network runs in one reconstruction."""
        return max(self.unrolled, 1)

    def tail_start(self, iterations: int) -> int:
        """The first of the last ``iterations`` network passes (``0``: all passes, so pass 0)."""
        if not 0 <= iterations <= self.passes:
            raise InputError(f"iterations must be 0 (all) to {self.passes} for this model, got {iterations}")
        return self.passes - iterations if iterations else 0

    def body(
        self,
        network: Callable[[Tensor], Tensor],
        x: Tensor,
        y: Tensor,
        physics: Physics,
        start: int = 0,
        stop: int | None = None,
        step: float | None = None,
    ) -> Tensor:
        r"""The normalised estimate before data consistency, with ``network`` for the net: passes
        ``start .. stop-1`` from the state ``x`` (the starting image for ``start = 0``); ``step``:
        the data step :math:`\eta` when already known (see :meth:`step_size`)."""
        stop = self.passes if stop is None else stop
        if start >= stop:
            return x
        if not self.unrolled:
            return self.from_net(network(self.to_net(x)), x)
        step = self.step_size(x, physics) if step is None else step
        for _ in range(start, stop):
            z = self.data_step(x, y, physics, step)
            x = self.from_net(network(self.to_net(z)), z)
        return x

    def step_size(self, x: Tensor, physics: Physics) -> float:
        r""":math:`\eta = 1/\|A\|^2` (closed form where known, else power iteration on ``x``'s shape)."""
        return 1.0 / (exact_norm(physics) or operator_norm(physics, x[:1].detach(), iterations=30)) ** 2

    def data_step(self, x: Tensor, y: Tensor, physics: Physics, step: float) -> Tensor:
        r"""One gradient step on the data term, :math:`x - \eta A^H(Ax - y)` (unrolled passes)."""
        return x - step * physics.A_adjoint(physics.A(x) - y)

    def consistency(self, x: Tensor, y: Tensor, physics: Physics) -> Tensor:
        """Data consistency (none, replace or soft) of a normalised estimate."""
        if self.dc == "none":
            return x
        gamma = 1e8 if self.dc == "replace" else self.dc_weight
        if self.dc == "replace" and not (hasattr(physics, "binary") and physics.binary):
            raise InputError("replace data consistency needs an MRI operator with a binary mask")
        return physics.prox_l2(x, y, gamma)

    def start(self, y: Tensor, physics: Physics) -> tuple[Tensor, Tensor]:
        """The normalised starting image and its scale :math:`s`."""
        x0 = physics.A_adjoint(y) if self.init == "adjoint" else y
        scale = percentile_scale(x0)
        return x0 / scale, scale

    def net_input(self, y: Tensor, physics: Physics) -> Tensor:
        """What the network sees first (for data-dependent initialisation)."""
        return self.to_net(self.start(y, physics)[0])

    def forward(self, y: Tensor, physics: Physics) -> Tensor:
        x, scale = self.start(y, physics)
        y = y / scale
        return self.consistency(self.body(self.net, x, y, physics), y, physics) * scale
