"""Image-quality metrics with fastMRI's conventions, computed with deepinv's metric classes.

For a volume ``(S, H, W)`` with ground truth ``x`` and data range ``max(x)``:
PSNR is over the whole volume (fastMRI ``psnr``), SSIM the mean over slices, NMSE
:math:`\\|\\hat x - x\\|^2 / \\|x\\|^2` over the volume.

PSNR and NMSE are computed in float64. SSIM's local means and variances are convolutions with an
11×11 window, and torch runs float64 convolutions on the CPU on a slow fallback path: 16 s for 16
slices of 256², against 0.4 s in float32. The float32 values agree to 1e-5, so SSIM is computed
in float32, on the images divided by the data range.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from deepinv.loss.metric import NMSE, PSNR, SSIM

from recon.errors import InputError


def _volume(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).detach().cpu().double()
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3:
        raise InputError(f"metrics expect (slices, H, W) volumes, got shape {tuple(t.shape)}")
    return t


def image_metrics(
    prediction: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor
) -> dict[str, float]:
    """``{"psnr": dB, "ssim": ..., "nmse": ...}`` of a magnitude volume against its ground truth."""
    pred, ref = _volume(prediction), _volume(truth)
    if pred.shape != ref.shape:
        raise InputError(f"prediction {tuple(pred.shape)} and truth {tuple(ref.shape)} differ in shape")
    data_range = float(ref.max())
    if not np.isfinite(data_range) or data_range <= 0:
        raise InputError("ground truth is empty or not finite")
    psnr = PSNR(max_pixel=data_range)(pred[None], ref[None])
    # SSIM is invariant to scaling both images and the range together: scaled to [0, 1] first, so
    # that float32 holds its squared constants for data at any intensity scale
    ssim = SSIM(max_pixel=1.0)((pred / data_range)[:, None].float(), (ref / data_range)[:, None].float())
    ssim = ssim.double().mean()
    nmse = NMSE()(pred[None], ref[None])
    return {"psnr": float(psnr), "ssim": float(ssim), "nmse": float(nmse)}


# --------------------------------------------------------------------------- uncertainty calibration


def _flat(*arrays: np.ndarray | torch.Tensor) -> list[torch.Tensor]:
    out = [
        torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).detach().double().flatten()
        for a in arrays
    ]
    if len({t.numel() for t in out}) != 1:
        raise InputError("uncertainty metrics need arrays of one size")
    return out


def coverage(lower: Any, upper: Any, truth: Any) -> float:
    """Fraction of pixels whose true value lies in ``[lower, upper]``."""
    lo, hi, x = _flat(lower, upper, truth)
    return float(((x >= lo) & (x <= hi)).double().mean())


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n, ties get their average rank."""
    order = torch.argsort(values)
    sorted_values = values[order]
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=values.dtype)
    unique, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    if len(unique) < len(values):  # average the ranks inside each group of ties
        sums = torch.zeros(len(unique), dtype=values.dtype).index_add_(0, inverse, ranks[order])
        ranks[order] = (sums / counts)[inverse]
    return ranks


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation (Pearson correlation of the tie-averaged ranks)."""
    x, y = _flat(a, b)
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / torch.sqrt((rx**2).sum() * (ry**2).sum()).clamp_min(1e-300))


def auroc(scores: Any, positives: Any) -> float:
    """Area under the ROC curve of ``scores`` for the boolean ``positives`` (Mann–Whitney U)."""
    s, p = _flat(scores, positives)
    p = p > 0.5
    n_pos, n_neg = int(p.sum()), int((~p).sum())
    if n_pos == 0 or n_neg == 0:
        raise InputError("AUROC needs both positive and negative pixels")
    ranks = _ranks(s)
    return float((ranks[p].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ause(uncertainty: Any, error: Any, steps: int = 50) -> float:
    """Area under the sparsification error: remove pixels in order of decreasing uncertainty and in
    order of decreasing true error (the oracle); the mean remaining error of the two curves, their
    difference integrated over the removed fraction, normalised by the mean error (0 is perfect)."""
    u, e = _flat(uncertainty, error)
    n = len(e)
    by_u, by_e = e[torch.argsort(u, descending=True)], e[torch.argsort(e, descending=True)]
    fractions = torch.linspace(0, 0.99, steps, dtype=torch.float64)
    curve = []
    for f in fractions:
        start = int(f * n)
        curve.append(float(by_u[start:].mean() - by_e[start:].mean()))
    return float(np.trapezoid(curve, fractions.numpy()) / max(float(e.mean()), 1e-300))
