"""Image metrics: closed forms, scale invariance, and SSIM's float32 path against float64."""

import math

import pytest
import torch
from deepinv.loss.metric import SSIM

from recon.errors import InputError
from recon.metrics import image_metrics


def _volume(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    truth = torch.rand(3, 40, 48, generator=g, dtype=torch.float64)
    noisy = (truth + 0.05 * torch.randn(truth.shape, generator=g, dtype=torch.float64)).clamp(min=0)
    return noisy, truth


def test_psnr_and_nmse_closed_forms() -> None:
    truth = torch.zeros(2, 16, 16, dtype=torch.float64)
    truth[:, 4:12, 4:12] = 2.0  # data range 2
    pred = truth + 0.1  # every pixel off by 0.1
    metrics = image_metrics(pred, truth)
    # deepinv holds the peak in float32: agreement to 1e-4 dB
    assert metrics["psnr"] == pytest.approx(10 * math.log10(2.0**2 / 0.1**2), abs=1e-4)
    assert metrics["nmse"] == pytest.approx(0.1**2 * truth.numel() / float((truth**2).sum()), rel=1e-9)
    assert image_metrics(truth, truth)["ssim"] == pytest.approx(1.0, abs=1e-6)


def test_ssim_matches_float64_and_ignores_intensity_scale() -> None:
    noisy, truth = _volume()
    reference = SSIM(max_pixel=float(truth.max()))(noisy[:, None], truth[:, None]).mean()  # float64
    ssim = image_metrics(noisy, truth)["ssim"]
    assert ssim == pytest.approx(float(reference), abs=1e-5)
    assert 0.2 < ssim < 0.99  # the noise is visible: a real comparison, not a degenerate one
    for scale in (4095.0, 1e-7):  # raw scanner values, tiny k-space magnitudes
        assert image_metrics(noisy * scale, truth * scale)["ssim"] == pytest.approx(ssim, abs=1e-6)


def test_bad_volumes_are_input_errors() -> None:
    noisy, truth = _volume()
    with pytest.raises(InputError, match="differ in shape"):
        image_metrics(noisy[:2], truth)
    with pytest.raises(InputError, match="empty or not finite"):
        image_metrics(noisy, torch.zeros_like(truth))
