r"""Reconstruct a scan: set up the measurement problem, run a method, score it.

A :class:`Problem` holds the operator :math:`A`, the measurements :math:`y` (normalised) and, when
known, the ground truth. It comes from

- a k-space file: the file's ``mask`` when it has one (already undersampled), otherwise a mask is
  drawn from the operator parameters (retrospective undersampling of fully sampled data);
  multi-coil k-space uses coil maps estimated from the fully sampled centre;
- an image file: the images are the ground truth and :math:`y = A x + n` is simulated with the chosen
  operator and noise (noise levels are relative to the image maximum).

Intensities are normalised internally (by the 99th percentile of :math:`|A^H y|`) and results are
returned in the input's scale. Methods: ``zero-filled`` (the adjoint :math:`A^H y`, magnitude) and
``tv``: :math:`\min_x \frac12\|Ax-y\|^2 + \lambda\,\mathrm{TV}(x)` by deepinv's proximal gradient
descent (step :math:`1/\|A\|^2`) with its TV prior.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import deepinv as dinv
import numpy as np
import torch
from deepinv.physics import Physics
from torch import nn

from recon import layout
from recon.datasets.scan import Scan
from recon.errors import InputError
from recon.fft import ifft2c
from recon.metrics import image_metrics
from recon.operators.masks import mask_function
from recon.operators.mri import CartesianMRI, MulticoilMRI
from recon.physics import build_noise, build_operator, exact_norm, operator_norm, typed_params
from recon.reconstructors import Reconstructor
from recon.registry import get_registry

METHODS = ("learned", "zero-filled", "tv", "tikhonov")
# TV weights for intensities normalised to ~[0, 1], chosen on the validation split (BENCHMARKS.md).
DEFAULT_TV_LAMBDA = {"mri": 0.02, "mri-multicoil": 0.02, "blur": 0.002, "denoise": 0.05}
DEFAULT_TIKHONOV_LAMBDA = {"mri": 0.01, "mri-multicoil": 0.01, "blur": 0.01, "denoise": 0.1}


@dataclass
class Problem:
    """Measurements of one volume, normalised: ``y`` and ``truth`` are divided by ``scale``."""

    physics: Physics
    y: torch.Tensor
    truth: torch.Tensor | None  # (S, 1, H, W) magnitude, normalised
    scale: float
    complex_images: bool
    mask: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    """A reconstruction in the input's intensity scale, float32 ``(S, H, W)`` magnitudes."""

    reconstruction: np.ndarray
    zero_filled: np.ndarray
    truth: np.ndarray | None
    mask: np.ndarray | None
    metrics: dict[str, float] | None
    info: dict[str, Any]


def estimate_coil_maps(kspace: torch.Tensor, center_lines: int) -> torch.Tensor:
    r"""Coil sensitivities from the fully sampled k-space centre: low-resolution coil images
    divided by their root-sum-of-squares, :math:`S_n = \tilde x_n / \sqrt{\sum_m |\tilde x_m|^2}`.

    ``kspace``: complex ``(coils, H, W)``, centred. Returns complex64 ``(coils, H, W)``.
    """
    width = kspace.shape[-1]
    start = (width - center_lines + 1) // 2
    low = torch.zeros_like(kspace)
    low[..., start : start + center_lines] = kspace[..., start : start + center_lines]
    images = ifft2c(low)
    rss = images.abs().pow(2).sum(0, keepdim=True).sqrt()
    return (images / rss.clamp_min(1e-6 * float(rss.max()))).to(torch.complex64)


def _centre_width(line: torch.Tensor) -> int:
    """Width of the contiguous fully sampled block around the centre column of a mask row."""
    sampled = (line > 0).tolist()
    middle = len(sampled) // 2
    left = right = middle
    while left > 0 and sampled[left - 1]:
        left -= 1
    while right < len(sampled) - 1 and sampled[right + 1]:
        right += 1
    return max(2, right - left + 1) if sampled[middle] else 2


def _mri_mask(scan: Scan, params: Mapping[str, Any]) -> tuple[torch.Tensor, np.ndarray]:
    """The file's mask, or one drawn with fastMRI semantics; returns ((H, W) tensor, stored form)."""
    height, width = scan.image_shape
    if scan.mask is not None:
        stored = scan.mask
    else:
        fn = mask_function(
            params.get("mask", "random"),
            float(params.get("acceleration", 4.0)),
            float(params.get("center_fraction", 0.08)),
        )
        full = fn((height, width), params.get("seed", 0)).numpy()
        stored = full[0] if fn.lines else full
    grid = np.broadcast_to(stored, (height, width)) if stored.ndim == 1 else stored
    return torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32)), stored


def _kspace_problem(
    scan: Scan, operator: str, params: Mapping[str, Any], noise: str | None, seed: int, device: torch.device
) -> Problem:
    if operator not in ("mri", "mri-multicoil"):
        raise InputError(f"k-space input needs an MRI operator, not {operator!r}", scan.source)
    params = typed_params(get_registry("operators").lookup("mri"), params)
    assert scan.kspace is not None
    kspace = torch.from_numpy(scan.kspace).to(device)
    if scan.coils == 1 and kspace.dim() == 4:
        kspace = kspace[:, 0]
    mask, stored = _mri_mask(scan, params)
    mask = mask.to(device)
    if scan.coils > 1:
        maps = estimate_coil_maps(kspace[kspace.shape[0] // 2], _centre_width(mask[mask.shape[0] // 2]))
        physics: Physics = MulticoilMRI(mask, maps.to(device)).to(device)
        y = kspace * mask
        full_images = ifft2c(kspace).abs().pow(2).sum(1, keepdim=True).sqrt()
    else:
        physics = CartesianMRI(mask).to(device)
        y = (kspace * mask)[:, None]
        full_images = ifft2c(kspace).abs()[:, None]
    zero_filled = physics.A_adjoint(y).abs()
    scale = _scale(zero_filled, scan.source)
    y = y / scale
    if noise is not None:
        physics.noise_model = build_noise(noise, seed)
        y = physics.noise(y)
    truth = None
    if scan.images is not None:
        truth = torch.from_numpy(scan.images)[:, None].to(device) / scale
    elif scan.mask is None:  # fully sampled file: its full inverse transform is the truth
        truth = full_images / scale
    return Problem(physics, y, truth, scale, True, stored, {"coils": scan.coils, "params": params})


def _image_problem(
    scan: Scan, operator: str, params: Mapping[str, Any], noise: str | None, seed: int, device: torch.device
) -> Problem:
    assert scan.images is not None
    entry = get_registry("operators").lookup(operator)
    params = typed_params(entry, params)
    physics = build_operator(operator, scan.image_shape, noise=noise, noise_seed=seed, **params).to(device)
    images = torch.from_numpy(scan.images)[:, None].to(device)
    scale = float(images.max())
    if not scale > 0:
        raise InputError("image has no positive values: nothing to reconstruct", scan.source)
    truth = images / scale
    complex_images = entry.meta.get("domain") == "complex"
    x = truth.to(torch.complex64) if complex_images else truth
    with torch.no_grad():
        y = physics(x)
    mask = getattr(physics, "mask", None)  # a k-space sampling mask, when the operator has one
    stored = None
    if isinstance(mask, torch.Tensor) and tuple(mask.shape) == scan.image_shape:
        grid = mask.cpu().numpy()
        stored = grid[0] if bool((grid == grid[:1]).all()) else grid
    return Problem(physics, y, truth, scale, complex_images, stored, {"params": params})


def _scale(zero_filled: torch.Tensor, source: str) -> float:
    value = float(
        torch.quantile(zero_filled.flatten()[:: max(1, zero_filled.numel() // 2**20)].float(), 0.99)
    )
    if not math.isfinite(value) or value <= 0:
        value = float(zero_filled.max())
    if not math.isfinite(value) or value <= 0:
        raise InputError("measured k-space is all zero", source)
    return value


def prepare(
    scan: Scan,
    operator: str = "mri",
    params: Mapping[str, Any] | None = None,
    noise: str | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Problem:
    """Turn a scan into a normalised :class:`Problem` (see the module docstring)."""
    device = torch.device(device)
    params = dict(params or {})
    get_registry("operators").lookup(operator)  # unknown names fail before anything else
    if scan.kspace is not None:
        return _kspace_problem(scan, operator, params, noise, seed, device)
    if scan.images is None:
        raise InputError("file holds neither k-space nor images", scan.source)
    return _image_problem(scan, operator, params, noise, seed, device)


def _channels(problem: Problem) -> tuple[torch.Tensor, bool]:
    """Measurements in deepinv's layout when the images are complex single-coil."""
    y = problem.y
    if problem.complex_images and y.is_complex() and y.dim() == 4 and y.shape[1] == 1:
        return layout.to_channel_pair(y), True
    return y, False


def tv_reconstruction(problem: Problem, lam: float, iterations: int = 100) -> torch.Tensor:
    """TV-regularised least squares by deepinv PGD; returns normalised magnitudes ``(S, 1, H, W)``."""
    if not (math.isfinite(lam) and lam >= 0):
        raise InputError(f"TV lambda must be a non-negative number, got {lam}")
    if iterations < 1:
        raise InputError(f"iterations must be >= 1, got {iterations}")
    physics = problem.physics
    if isinstance(physics, MulticoilMRI):
        return _tv_multicoil(problem, lam, iterations)
    y, paired = _channels(problem)
    example = physics.A_adjoint(y[:1])
    lipschitz = exact_norm(physics) or operator_norm(physics, example, iterations=50)
    solver = dinv.optim.PGD(
        prior=dinv.optim.TVPrior(n_it_max=20),
        data_fidelity=dinv.optim.L2(),
        lambda_reg=lam,
        stepsize=1.0 / lipschitz**2,
        max_iter=iterations,
        early_stop=True,
        thres_conv=1e-5,
    )
    x = solver(y, physics)
    return (layout.to_complex(x) if paired else x).abs()


def _tv_multicoil(problem: Problem, lam: float, iterations: int) -> torch.Tensor:
    """TV for multi-coil data: PGD on complex images with deepinv's TV prox on (real, imaginary)."""
    physics, y = problem.physics, problem.y
    step = 1.0 / (exact_norm(physics) or operator_norm(physics, physics.A_adjoint(y[:1]), iterations=50)) ** 2
    prior = dinv.optim.TVPrior(n_it_max=20)
    x = physics.A_adjoint(y)
    for _ in range(iterations):
        z = x - step * physics.A_adjoint(physics.A(x) - y)
        x = layout.to_complex(prior.prox(layout.to_channel_pair(z), gamma=lam * step))
    return x.abs()


def learned_reconstruction(problem: Problem, model: nn.Module, chunk: int = 8) -> torch.Tensor:
    """Run a :class:`~recon.reconstructors.Reconstructor` slice-batch by slice-batch, in its
    inference form (:meth:`~recon.reconstructors.Reconstructor.for_inference`); magnitudes."""
    model = model.for_inference() if isinstance(model, Reconstructor) else model
    outputs = []
    for start in range(0, problem.y.shape[0], chunk):
        outputs.append(model(problem.y[start : start + chunk], problem.physics).abs())
    return torch.cat(outputs)


def tikhonov_reconstruction(problem: Problem, lam: float) -> torch.Tensor:
    r""":math:`\arg\min_x \|Ax-y\|^2 + \lambda\|x\|^2 = (A^HA + \lambda I)^{-1} A^H y`, through the
    operator's ``prox_l2`` at :math:`z = 0` with :math:`\gamma = 1/\lambda` (closed form for MRI,
    conjugate gradients for blur): the Wiener filter of white signal and noise."""
    if not (math.isfinite(lam) and lam > 0):
        raise InputError(f"Tikhonov lambda must be positive, got {lam}")
    y, paired = _channels(problem)
    x = problem.physics.prox_l2(torch.zeros_like(problem.physics.A_adjoint(y)), y, 1.0 / lam)
    return (layout.to_complex(x) if paired else x).abs()


def reconstruct(
    problem: Problem,
    method: str = "tv",
    *,
    tv_lambda: float | None = None,
    tikhonov_lambda: float | None = None,
    iterations: int = 100,
    operator: str = "mri",
    model: nn.Module | None = None,
) -> Result:
    """Run ``method`` on ``problem``; metrics are computed when the ground truth is known."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
    if method == "learned" and model is None:
        raise InputError("the learned method needs a model (--model)")
    start = time.perf_counter()
    with torch.no_grad():
        zero_filled = problem.physics.A_adjoint(problem.y).abs()
        if method == "zero-filled":
            estimate = zero_filled
        elif method == "learned":
            estimate = learned_reconstruction(problem, model)
        elif method == "tikhonov":
            lam = DEFAULT_TIKHONOV_LAMBDA.get(operator, 0.01) if tikhonov_lambda is None else tikhonov_lambda
            estimate = tikhonov_reconstruction(problem, lam)
        else:
            lam = DEFAULT_TV_LAMBDA.get(operator, 0.01) if tv_lambda is None else tv_lambda
            estimate = tv_reconstruction(problem, lam, iterations)
    seconds = time.perf_counter() - start
    to_numpy = lambda t: (t[:, 0] * problem.scale).float().cpu().numpy()  # noqa: E731
    reconstruction, baseline = to_numpy(estimate), to_numpy(zero_filled)
    truth = metrics = None
    if problem.truth is not None:
        truth = to_numpy(problem.truth)
        reconstruction, baseline = _crop_to(reconstruction, truth.shape), _crop_to(baseline, truth.shape)
        metrics = image_metrics(reconstruction, truth)
        metrics.update({f"{k}_zero_filled": v for k, v in image_metrics(baseline, truth).items()})
    info = {"method": method, "seconds": seconds, **problem.info}
    return Result(reconstruction, baseline, truth, problem.mask, metrics, info)


def _crop_to(volume: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Centre-crop ``(S, H, W)`` to the target size, as fastMRI evaluates cropped targets."""
    height, width = shape[-2:]
    if volume.shape[-2:] == (height, width):
        return volume
    if volume.shape[-2] < height or volume.shape[-1] < width:
        raise InputError(f"target {height}x{width} is larger than the image {volume.shape[-2:]}")
    top, left = (volume.shape[-2] - height) // 2, (volume.shape[-1] - width) // 2
    return np.ascontiguousarray(volume[..., top : top + height, left : left + width])
