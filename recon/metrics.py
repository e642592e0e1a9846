"""Image-quality metrics with fastMRI's conventions, computed with deepinv's metric classes.

For a volume ``(S, H, W)`` with ground truth ``x`` and data range ``max(x)``:
PSNR is over the whole volume (fastMRI ``psnr``), SSIM the mean over slices, NMSE
:math:`\\|\\hat x - x\\|^2 / \\|x\\|^2` over the volume.
"""

from __future__ import annotations

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
    ssim = SSIM(max_pixel=data_range)(pred[:, None], ref[:, None]).mean()
    nmse = NMSE()(pred[None], ref[None])
    return {"psnr": float(psnr), "ssim": float(ssim), "nmse": float(nmse)}
