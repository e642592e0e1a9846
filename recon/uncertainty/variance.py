r"""Variance head: the aleatoric part of the uncertainty, beside the weight samples' epistemic part.

Heteroscedastic regression (Kendall & Gal, NeurIPS 2017), fitted after training: the reconstructor
:math:`f` stays frozen and a small head :math:`g` maps the normalised reconstruction
:math:`|f(y)|/s` and starting image :math:`|x_0|` (:math:`s`, :math:`x_0`: the reconstructor's own
scale and start) to a log variance :math:`\ell = g(\cdot)`, trained on simulated pairs by the
Gaussian negative log-likelihood (``torch.nn.GaussianNLLLoss``)

.. math:: \tfrac12\big(\ell + (|x|/s - |f(y)|/s)^2\,e^{-\ell}\big),

so that :math:`a^2 = s^2 e^{\ell}` estimates :math:`E[(|x| - |f(y)|)^2 \mid y]`: the error the
measurements leave open (undersampled k-space, noise), which no weight sample sees. With K weight
samples, the law of total variance splits the predictive variance into the samples' spread
:math:`s_e^2 = \mathrm{Var}_k |f_k(y)|` (epistemic) and :math:`a^2` evaluated at the posterior mean
(aleatoric); the total standard deviation is :math:`\sqrt{s_e^2 + a^2}`.

A few hundred Adam steps of a 4-layer, 16-channel CNN (dilations 1, 2, 4, 1: a 17-pixel receptive
field, as aliasing errors are spatially spread) suffice; no library ships such a head for an
arbitrary frozen reconstructor, hence this module. Stored as ``<model>.variance.json`` /
``.safetensors`` beside the model (no pickle).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from deepinv.physics import Physics
from torch import Tensor, nn

from recon.errors import InputError
from recon.files import read_pair, write_pair
from recon.modelio import resolve_model
from recon.reconstructors import Reconstructor

FORMAT = "recon.variance/1"
LOG_VARIANCE_RANGE = (-20.0, 5.0)
"""Clamp of :math:`\\ell` (normalised units): variances from 2e-9 to 150 times the image scale²."""


class VarianceHead(nn.Module):
    """``(|reconstruction|/s, |x_0|)`` → log variance, both ``(B, 1, H, W)``."""

    def __init__(self, width: int = 16):
        super().__init__()
        if not 1 <= width <= 256:
            raise InputError(f"variance head width must be 1 to 256, got {width}")
        self.width = width
        layers: list[nn.Module] = []
        channels = 2
        for dilation in (1, 2, 4):
            layers += [nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation), nn.ReLU()]
            channels = width
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, reconstruction: Tensor, start: Tensor) -> Tensor:
        return self.layers(torch.cat([reconstruction, start], 1)).clamp(*LOG_VARIANCE_RANGE)


def _log_variance(
    head: VarianceHead, model: Reconstructor, reconstruction: Tensor, y: Tensor, physics: Physics
) -> tuple[Tensor, Tensor]:
    """:math:`\\ell = g(|f(y)|/s, |x_0|)` and the reconstructor's scale :math:`s` ``(B, 1, 1, 1)``."""
    x0, scale = model.start(y, physics)
    return head(reconstruction.abs() / scale, x0.abs()), scale


def aleatoric_variance(
    head: VarianceHead, model: Reconstructor, reconstruction: Tensor, y: Tensor, physics: Physics
) -> Tensor:
    """:math:`a^2 = s^2 e^{\\ell}` in the reconstruction's scale, ``(B, 1, H, W)``."""
    log_variance, scale = _log_variance(head, model, reconstruction, y, physics)
    return log_variance.exp() * scale**2


def fit_variance_head(
    model: Reconstructor,
    batches: Callable[[], Any],
    *,
    steps: int = 400,
    lr: float = 1e-3,
    width: int = 16,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> VarianceHead:
    """Fit a head on ``batches()`` (objects with ``y``, ``physics``, ``target``, e.g.
    :class:`recon.train.SimulatedBatches`) by Gaussian NLL of the frozen ``model``'s magnitude
    error; returns the head (eval mode)."""
    if steps < 1:
        raise InputError(f"steps must be positive, got {steps}")
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, the caller's RNG untouched
        torch.manual_seed(seed)
        head = VarianceHead(width).to(device)
    model = model.eval()
    nll = nn.GaussianNLLLoss(eps=math.exp(LOG_VARIANCE_RANGE[0]))
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    for step in range(1, steps + 1):
        sample = batches()
        with torch.no_grad():
            reconstruction = model(sample.y, sample.physics)
        log_variance, scale = _log_variance(head, model, reconstruction, sample.y, sample.physics)
        loss = nll(reconstruction.abs() / scale, sample.target.abs() / scale, log_variance.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(step, float(loss.detach()))
    return head.eval().requires_grad_(False)


def variance_path(model: str | Path) -> Path:
    """``<model stem>.variance`` (add ``.json`` / ``.safetensors``)."""
    stem = resolve_model(model)
    return stem.with_name(f"{stem.name}.variance")


def save_variance_head(head: VarianceHead, path: str | Path, settings: dict[str, Any]) -> tuple[Path, Path]:
    document = {"format": FORMAT, "width": head.width, "settings": settings}
    return write_pair(path, document, dict(head.state_dict()))


def load_variance_head(path: str | Path, device: Any = "cpu") -> VarianceHead:
    """The head stored at ``path``; a missing or mismatched pair is an :class:`InputError`."""
    missing = "no variance head (run `recon fit-variance`)"
    document, tensors = read_pair(path, FORMAT, "variance head", missing)
    width = document.get("width")
    if not isinstance(width, int):
        raise InputError("variance head description lacks its width", path)
    head = VarianceHead(width)
    try:
        head.load_state_dict(tensors)
    except RuntimeError as exc:
        raise InputError(f"variance head tensors do not match its description: {exc}", path) from None
    return head.to(device).eval().requires_grad_(False)
