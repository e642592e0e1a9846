r"""Posterior maps from K reconstructions, the null-space projector, conformal calibration.

Given samples :math:`x_1..x_K` of the reconstruction (one per weight sample):

- mean :math:`\bar m` and standard deviation of the magnitudes, per pixel: the samples' spread
  :math:`s_e` (epistemic) and, when the model has a variance head (``recon.uncertainty.variance``),
  its aleatoric :math:`a`; the total is :math:`s = \sqrt{s_e^2 + a^2}` (:math:`s = s_e` without one);
- credible bounds at a coverage :math:`c`: calibrated on validation data, :math:`\bar m \pm q_b\,\tilde s`
  (below); uncalibrated, the empirical :math:`(1\mp c)/2` quantiles of the samples (Gaussian
  :math:`\bar m \pm z_c s` with a variance head);
- hallucination map (Bhadra et al., IEEE TMI 2021): the part of the posterior spread that lies in
  the operator's null space, :math:`\sqrt{\frac1K\sum_k |P_{\mathcal N}(x_k - \bar x)|^2}`, where the
  measurements say nothing and the network alone decides. For single-coil Cartesian MRI
  :math:`P_{\mathcal N} = F_c^H (1-M) F_c` (two FFTs); for other operators :math:`I - A^\dagger A`.

Calibration (Mondrian split conformal, Vovk et al. 2005): the score of a pixel is its normalised
residual :math:`r = |x - \bar m| / \tilde s` with :math:`\tilde s = \max(s, \epsilon\,p)`, where
:math:`p` is the slice's peak mean magnitude and :math:`\epsilon` = ``WIDTH_FLOOR`` (no interval is
narrower than :math:`q\epsilon p`: a pixel whose samples all agree is not known exactly). The
validation pixels are split into ``bins`` groups by their relative spread :math:`s/p` (equal-count
bins), and each group gets its own factor :math:`q_b`, the :math:`\lceil (n_b+1)c \rceil / n_b`
empirical quantile of its scores. The bounds are :math:`\bar m \pm q_{b(x)} \tilde s`.

Why groups: one pooled factor covers a fraction :math:`c` of pixels drawn in the *calibration mix*
of confident and unconfident pixels; a new scan with a different mix (the test subjects' large dark
backgrounds, where the samples agree, against the validation volume's almost none) then gets a
different coverage (on the held-out MR slices, four samplers: 0.91–0.94 at 4× but 0.95–0.97 at 8×).
With a factor per spread group the coverage holds within each group, so it depends far less on the
mix (0.87–0.93 at 4×, 0.90–0.95 at 8×; BENCHMARKS.md). The same :math:`\tilde s` is used when fitting
and when applying the factors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    std: Tensor  # total: sqrt(epistemic² + aleatoric²)
    epistemic: Tensor
    aleatoric: Tensor | None  # None without a variance head
    lower: Tensor
    upper: Tensor
    hallucination: Tensor
    coverage: float
    calibrated: bool


def predictive_moments(
    samples: Tensor, aleatoric_variance: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Mean magnitude, epistemic spread :math:`s_e`, aleatoric :math:`a` (``None`` without a
    variance head) and total :math:`s = \\sqrt{s_e^2 + a^2}` of ``samples`` ``(K, B, C, H, W)``."""
    magnitudes = samples.abs()
    mean, epistemic = magnitudes.mean(0), magnitudes.std(0)
    if aleatoric_variance is None:
        return mean, epistemic, None, epistemic
    aleatoric = aleatoric_variance.clamp_min(0).sqrt()
    return mean, epistemic, aleatoric, torch.sqrt(epistemic**2 + aleatoric**2)


def posterior_maps(
    samples: Tensor,
    physics: Physics,
    coverage: float = 0.9,
    calibration: Calibration | None = None,
    aleatoric_variance: Tensor | None = None,
) -> PosteriorMaps:
    """Maps from ``samples`` ``(K, B, C, H, W)`` (complex or real); ``calibration``: the conformal
    factors fitted for ``coverage`` (``None``: uncalibrated); ``aleatoric_variance``: a variance
    head's :math:`a^2` ``(B, 1, H, W)`` at the posterior mean."""
    if not 0 < coverage < 1:
        raise InputError(f"coverage must be in (0, 1), got {coverage}")
    if samples.shape[0] < 2:
        raise InputError("uncertainty maps need at least 2 samples")
    mean, epistemic, aleatoric, std = predictive_moments(samples, aleatoric_variance)
    if calibration is not None:
        lower, upper = calibration.bounds(mean, std)
    elif aleatoric is not None:
        z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor((1 + coverage) / 2)))
        lower, upper = (mean - z * std).clamp_min(0), mean + z * std
    else:
        tail = (1 - coverage) / 2
        magnitudes = samples.abs()
        lower, upper = torch.quantile(magnitudes, tail, dim=0), torch.quantile(magnitudes, 1 - tail, dim=0)
    project = null_space_projector(physics)
    centre = samples.mean(0)
    spread = torch.stack([project(x - centre).abs() ** 2 for x in samples]).mean(0).sqrt()
    return PosteriorMaps(
        mean, std, epistemic, aleatoric, lower, upper, spread, coverage, calibration is not None
    )


WIDTH_FLOOR = 1e-3
"""Smallest interval scale, as a fraction of the slice's peak mean magnitude."""

CALIBRATION_BINS = 4
"""Spread groups of the Mondrian calibration (each holds a quarter of the validation pixels)."""


def _peak(mean: Tensor) -> Tensor:
    """Each slice's largest mean magnitude, broadcastable against ``(..., H, W)``."""
    return mean.flatten(-2).amax(-1).clamp_min(torch.finfo(mean.dtype).tiny)[..., None, None]


def relative_spread(mean: Tensor, std: Tensor) -> Tensor:
    """:math:`s/p`: what the spread groups are formed by."""
    return std / _peak(mean)


def interval_scale(mean: Tensor, std: Tensor) -> Tensor:
    """:math:`\\tilde s = \\max(s, \\epsilon p)` per pixel (``mean``, ``std``: ``(..., H, W)``)."""
    return torch.maximum(std, WIDTH_FLOOR * _peak(mean))


@dataclass(frozen=True)
class Calibration:
    """Conformal factors :math:`q_b` for the spread groups split at ``edges`` (relative spread
    :math:`s/p`, ascending); one group and no edges is the classical single factor."""

    edges: tuple[float, ...]
    factors: tuple[float, ...]

    def __post_init__(self) -> None:
        valid = len(self.factors) == len(self.edges) + 1 and all(
            math.isfinite(v) and v >= 0 for v in (*self.edges, *self.factors)
        )
        if not valid or list(self.edges) != sorted(self.edges):
            raise InputError(f"malformed calibration: edges {self.edges}, factors {self.factors}")

    def factors_for(self, mean: Tensor, std: Tensor) -> Tensor:
        """The factor of every pixel's spread group."""
        edges = torch.tensor(self.edges, dtype=std.dtype, device=std.device)
        factors = torch.tensor(self.factors, dtype=std.dtype, device=std.device)
        return factors[torch.bucketize(relative_spread(mean, std).contiguous(), edges)]

    def bounds(self, mean: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
        """:math:`\\bar m \\pm q_b \\tilde s`, the lower bound clamped at 0 (magnitudes)."""
        half_width = self.factors_for(mean, std) * interval_scale(mean, std)
        return (mean - half_width).clamp_min(0), mean + half_width

    def to_json(self) -> dict[str, list[float]]:
        return {"edges": list(self.edges), "factors": list(self.factors)}

    @classmethod
    def from_json(cls, value: Any) -> Calibration:
        """From :meth:`to_json`'s form, or a bare number (one factor, as older files store it)."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return cls((), (float(value),))
        if isinstance(value, dict) and set(value) == {"edges", "factors"}:
            try:
                return cls(tuple(map(float, value["edges"])), tuple(map(float, value["factors"])))
            except (TypeError, ValueError):
                pass
        raise InputError(f"malformed calibration entry: {value!r}")


def _conformal_quantile(scores: Tensor, coverage: float) -> float:
    """The :math:`\\lceil (n+1)c \\rceil`-th smallest of ``n`` scores (the largest if that is past ``n``)."""
    ordered = torch.sort(scores).values
    n = len(ordered)
    return float(ordered[min(n - 1, math.ceil((n + 1) * coverage) - 1)])


def conformal_calibration(
    means: list[Tensor],
    stds: list[Tensor],
    truths: list[Tensor],
    coverage: float,
    bins: int = CALIBRATION_BINS,
) -> Calibration:
    """Mondrian split-conformal factors with :math:`P(|x - \\bar m| \\le q_b \\tilde s) \\ge c` within
    each of ``bins`` equal-count spread groups (arrays ``(..., H, W)`` of magnitudes)."""
    if not 0 < coverage < 1:
        raise InputError(f"coverage must be in (0, 1), got {coverage}")
    if bins < 1:
        raise InputError(f"calibration needs at least one spread group, got {bins}")
    spreads, scores = [], []
    for mean, std, truth in zip(means, stds, truths, strict=True):
        mean, std, truth = mean.double(), std.double(), truth.double()
        spreads.append(relative_spread(mean, std).flatten())
        scores.append(((truth - mean).abs() / interval_scale(mean, std)).flatten())
    spread, score = torch.cat(spreads), torch.cat(scores)
    n = len(score)
    if n < bins / (1 - coverage):
        raise InputError(
            f"{n} calibration pixels are too few for {bins} spread groups at coverage {coverage}"
        )
    ordered = torch.sort(spread).values  # equal-count edges (sorting, not torch.quantile: any size)
    edges = ordered[[b * n // bins - 1 for b in range(1, bins)]]  # group b ends at its largest value
    group = torch.bucketize(spread, edges)
    pooled = _conformal_quantile(score, coverage)
    factors = [  # ties can leave a group empty: it gets the pooled factor
        _conformal_quantile(score[group == b], coverage) if bool((group == b).any()) else pooled
        for b in range(bins)
    ]
    return Calibration(tuple(float(e) for e in edges), tuple(factors))
