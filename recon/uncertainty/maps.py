r"""Posterior maps from K reconstructions, the null-space projector, conformal calibration.

Given samples :math:`x_1..x_K` of the reconstruction (one per weight sample):

- mean :math:`\bar m` and standard deviation :math:`s` of the magnitudes, per pixel (epistemic: the
  networks here have no variance head, so there is no aleatoric term);
- credible bounds at a coverage :math:`c`: with a calibration factor :math:`q` (fitted on validation
  data), :math:`\bar m \pm q\,s`; without one, the empirical :math:`(1\mp c)/2` quantiles of the samples;
- hallucination map (Bhadra et al., IEEE TMI 2021): the part of the posterior spread that lies in
  the operator's null space, :math:`\sqrt{\frac1K\sum_k |P_{\mathcal N}(x_k - \bar x)|^2}`, where the
  measurements say nothing and the network alone decides. For single-coil Cartesian MRI
  :math:`P_{\mathcal N} = F_c^H (1-M) F_c` (two FFTs); for other operators :math:`I - A^\dagger A`.

Calibration (split conformal): on validation images with known truth, the normalised residuals
:math:`r = |x - \bar m| / s` over all pixels give :math:`q` = their
:math:`\lceil (n+1)c \rceil / n` empirical quantile, so that :math:`[\bar m \pm q s]` covers a fraction
:math:`c` of new pixels drawn like the calibration ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from deepinv.physics import Physics
from torch import Tensor

from recon.errors import InputError
from recon.fft import MaskedFFT
from recon.operators.mri import CartesianMRI


def null_space_projector(physics: Physics) -> Callable[[Tensor], Tensor]:
    """:math:`P_{\\mathcal N} = I - A^\\dagger A` (closed form for binary Cartesian MRI masks)."""
    if isinstance(physics, CartesianMRI) and physics.binary:
        cache: dict[tuple[torch.dtype, torch.device], MaskedFFT] = {}

        def project(x: Tensor) -> Tensor:
            key = (x.dtype, x.device)
            if key not in cache:
                cache[key] = MaskedFFT(1 - physics.mask, x.dtype, x.device)
            return cache[key].adjoint(cache[key].forward(x))

        return project
    return lambda x: x - physics.A_dagger(physics.A(x))


@dataclass
class PosteriorMaps:
    """Magnitude maps ``(B, 1, H, W)`` in the input's intensity scale."""

    mean: Tensor
    std: Tensor
    lower: Tensor
    upper: Tensor
    hallucination: Tensor
    coverage: float
    calibrated: bool


def posterior_maps(
    samples: Tensor, physics: Physics, coverage: float = 0.9, scale: float | None = None
) -> PosteriorMaps:
    """Maps from ``samples`` ``(K, B, C, H, W)`` (complex or real); ``scale`` is the calibration
    factor :math:`q` for ``coverage`` (``None``: empirical sample quantiles)."""
    if not 0 < coverage < 1:
        raise InputError(f"coverage must be in (0, 1), got {coverage}")
    if samples.shape[0] < 2:
        raise InputError("uncertainty maps need at least 2 samples")
    magnitudes = samples.abs()
    mean, std = magnitudes.mean(0), magnitudes.std(0)
    if scale is not None:
        lower, upper = (mean - scale * std).clamp_min(0), mean + scale * std
    else:
        tail = (1 - coverage) / 2
        lower, upper = torch.quantile(magnitudes, tail, dim=0), torch.quantile(magnitudes, 1 - tail, dim=0)
    project = null_space_projector(physics)
    centre = samples.mean(0)
    spread = torch.stack([project(x - centre).abs() ** 2 for x in samples]).mean(0).sqrt()
    return PosteriorMaps(mean, std, lower, upper, spread, coverage, scale is not None)


def conformal_scale(means: list[Tensor], stds: list[Tensor], truths: list[Tensor], coverage: float) -> float:
    """Split-conformal factor :math:`q` with :math:`P(|x - \\bar m| \\le q s) \\ge c` on new pixels."""
    if not 0 < coverage < 1:
        raise InputError(f"coverage must be in (0, 1), got {coverage}")
    residuals = []
    for mean, std, truth in zip(means, stds, truths, strict=True):
        floor = 1e-3 * float(truth.abs().max())
        residuals.append(((truth - mean).abs() / std.clamp_min(floor)).flatten().double())
    r = torch.sort(torch.cat(residuals)).values
    n = len(r)
    index = min(n - 1, math.ceil((n + 1) * coverage) - 1)
    return float(r[index])
