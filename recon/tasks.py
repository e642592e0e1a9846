r"""Learning tasks: how a clean image :math:`x` becomes the network's input, and how results are scored.

- ``denoise``: :math:`y = x + \sigma n`.
- ``deblur``: :math:`y = k * x + \sigma n` (Gaussian kernel, reflect boundary).
- ``mri``: :math:`y = |A^H A x|`, the zero-filled magnitude for a fresh fastMRI random mask per
  batch (post-processing reconstruction; single coil, noise-free by default).
- ``autoencoder``: :math:`y = x` (the network must reproduce its input through its bottleneck).

Noise and masks are drawn from the ``torch.Generator`` passed in, never from the global RNG.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from recon.errors import InputError
from recon.metrics import image_metrics
from recon.operators.masks import mask_function
from recon.operators.mri import CartesianMRI
from recon.physics import build_operator


def _noise(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    if sigma == 0:
        return x
    return x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


class Task:
    """Base class: ``measure(x, generator)`` returns the network input for clean images ``x``."""

    name = "task"
    in_channels = out_channels = 1

    def measure(self, x: Tensor, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {"task": self.name}


class DenoiseTask(Task):
    name = "denoise"

    def __init__(self, sigma: float = 0.1):
        if not sigma >= 0:
            raise InputError(f"sigma must be non-negative, got {sigma}")
        self.sigma = float(sigma)

    def measure(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return _noise(x, self.sigma, generator)

    def config(self) -> dict[str, Any]:
        return {"task": self.name, "sigma": self.sigma}


class DeblurTask(Task):
    name = "deblur"

    def __init__(self, blur_sigma: float = 2.0, sigma: float = 0.01):
        if not (blur_sigma > 0 and sigma >= 0):
            raise InputError(f"invalid deblurring task: blur sigma {blur_sigma}, noise {sigma}")
        self.blur_sigma, self.sigma = float(blur_sigma), float(sigma)
        self._operators: dict[tuple[int, int, torch.device], Any] = {}

    def measure(self, x: Tensor, generator: torch.Generator) -> Tensor:
        key = (*x.shape[-2:], x.device)
        if key not in self._operators:
            self._operators[key] = build_operator(
                "blur", tuple(x.shape[-2:]), sigma=self.blur_sigma, boundary="reflect"
            ).to(x.device)
        return _noise(self._operators[key].A(x), self.sigma, generator)

    def config(self) -> dict[str, Any]:
        return {"task": self.name, "blur_sigma": self.blur_sigma, "sigma": self.sigma}


class MRITask(Task):
    name = "mri"

    def __init__(
        self,
        acceleration: float = 4.0,
        center_fraction: float = 0.08,
        mask: str = "random",
        sigma: float = 0.0,
    ):
        self.mask_fn = mask_function(mask, acceleration, center_fraction)
        self.acceleration, self.center_fraction, self.mask, self.sigma = (
            acceleration,
            center_fraction,
            mask,
            sigma,
        )

    def operator(self, shape: tuple[int, int], seed: int, device: torch.device) -> CartesianMRI:
        return CartesianMRI(self.mask_fn(shape, seed)).to(device)

    def measure(self, x: Tensor, generator: torch.Generator) -> Tensor:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        physics = self.operator(tuple(x.shape[-2:]), seed, x.device)
        k = physics.A(x.to(torch.complex64))
        if self.sigma > 0:
            noise = torch.randn(k.shape, generator=generator, dtype=torch.complex64).to(x.device)
            k = k + self.sigma * noise * (physics.mask > 0)
        return physics.A_adjoint(k).abs().to(x.dtype)

    def config(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "acceleration": self.acceleration,
            "center_fraction": self.center_fraction,
            "mask": self.mask,
            "sigma": self.sigma,
        }


class AutoencoderTask(Task):
    name = "autoencoder"

    def measure(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return x


TASKS: dict[str, type[Task]] = {t.name: t for t in (DenoiseTask, DeblurTask, MRITask, AutoencoderTask)}


def build_task(name: str, **params: Any) -> Task:
    """The task ``name``; string parameters (from the command line) take the type of the default."""
    if name not in TASKS:
        raise InputError(f"unknown task {name!r} (known: {', '.join(TASKS)})")
    defaults = {k: p.default for k, p in inspect.signature(TASKS[name]).parameters.items()}
    typed = {}
    for key, value in params.items():
        if key not in defaults:
            known = ", ".join(defaults) or "none"
            raise InputError(f"task {name!r} has no parameter {key!r} (known: {known})")
        try:
            typed[key] = type(defaults[key])(value) if isinstance(value, str) else value
        except ValueError:
            kind = type(defaults[key]).__name__
            raise InputError(f"task parameter {key}={value!r} is not a {kind}") from None
    return TASKS[name](**typed)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: Task,
    images: Sequence[np.ndarray],
    *,
    seed: int = 1234,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Mean PSNR / SSIM of ``model`` on whole held-out images (each with its own seeded measurement),
    with the measurement itself (``*_input``) as the baseline."""
    model.eval()
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "psnr_input": [], "ssim_input": []}
    for i, image in enumerate(images):
        x = torch.from_numpy(np.asarray(image, dtype=np.float32))[None, None].to(device)
        y = task.measure(x, torch.Generator().manual_seed(seed + i))
        prediction = model(y)
        for suffix, estimate in (("", prediction), ("_input", y)):
            m = image_metrics(estimate[0].float().cpu(), x[0].cpu())
            scores["psnr" + suffix].append(m["psnr"])
            scores["ssim" + suffix].append(m["ssim"])
    model.train()
    return {k: float(np.mean(v)) for k, v in scores.items()}
