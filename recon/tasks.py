r"""Learning tasks: how a clean image :math:`x` becomes measurements, and how results are scored.

``task.simulate(x, generator)`` returns a :class:`Sample`: measurements ``y``, the operator that made
them and the target image. A :class:`~recon.reconstructors.Reconstructor` maps ``(y, physics)`` back.

- ``denoise``: :math:`y = x + \sigma n` (identity operator).
- ``deblur``: :math:`y = k * x + \sigma n` (Gaussian kernel, reflect boundary).
- ``mri``: the magnitude image gets a smooth random phase, then :math:`y = M F_c x` (+ complex noise)
  with a fresh fastMRI mask per batch; the target is the complex image.
- ``autoencoder``: :math:`y = x` (the network must reproduce its input through its bottleneck).

Noise, masks and phases are drawn from the ``torch.Generator`` passed in, never from the global RNG.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from deepinv.physics import Physics
from deepinv.physics.noise import ZeroNoise
from torch import Tensor, nn

from recon.datasets.phantom import smooth_phase
from recon.errors import InputError
from recon.metrics import image_metrics
from recon.operators.masks import mask_function
from recon.operators.mri import CartesianMRI
from recon.operators.noise import Denoise
from recon.physics import build_operator


@dataclass
class Sample:
    """Measurements ``y`` of ``target`` through ``physics``."""

    y: Tensor
    physics: Physics
    target: Tensor


def _noise(y: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    if sigma == 0:
        return y
    noise = torch.randn(y.shape, generator=generator, dtype=y.dtype)
    return y + sigma * noise.to(y.device)


def _seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


class Task:
    """Base class: ``simulate(x, generator)`` turns clean images ``(B, 1, H, W)`` into a Sample."""

    name = "task"
    init = "measurement"  # the reconstructor's starting image: "adjoint" (Aᴴy) or "measurement" (y)
    complex_images = False

    def simulate(self, x: Tensor, generator: torch.Generator) -> Sample:
        raise NotImplementedError

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Mean squared error (over real and imaginary parts for complex images)."""
        if prediction.is_complex():
            return F.mse_loss(torch.view_as_real(prediction), torch.view_as_real(target))
        return F.mse_loss(prediction, target)

    def config(self) -> dict[str, Any]:
        return {"task": self.name}


def identity_operator() -> Physics:
    return Denoise(noise_model=ZeroNoise())


class DenoiseTask(Task):
    name = "denoise"

    def __init__(self, sigma: float = 0.1):
        if not sigma >= 0:
            raise InputError(f"sigma must be non-negative, got {sigma}")
        self.sigma = float(sigma)

    def simulate(self, x: Tensor, generator: torch.Generator) -> Sample:
        return Sample(_noise(x, self.sigma, generator), identity_operator().to(x.device), x)

    def config(self) -> dict[str, Any]:
        return {"task": self.name, "operator": "denoise", "sigma": self.sigma}


class DeblurTask(Task):
    name = "deblur"

    def __init__(self, blur_sigma: float = 2.0, sigma: float = 0.01):
        if not (blur_sigma > 0 and sigma >= 0):
            raise InputError(f"invalid deblurring task: blur sigma {blur_sigma}, noise {sigma}")
        self.blur_sigma, self.sigma = float(blur_sigma), float(sigma)
        self._operators: dict[tuple[int, int, torch.device], Physics] = {}

    def operator(self, shape: tuple[int, int], device: torch.device) -> Physics:
        key = (*shape, device)
        if key not in self._operators:
            self._operators[key] = build_operator(
                "blur", shape, sigma=self.blur_sigma, boundary="reflect"
            ).to(device)
        return self._operators[key]

    def simulate(self, x: Tensor, generator: torch.Generator) -> Sample:
        physics = self.operator(tuple(x.shape[-2:]), x.device)
        return Sample(_noise(physics.A(x), self.sigma, generator), physics, x)

    def config(self) -> dict[str, Any]:
        return {"task": self.name, "operator": "blur", "blur_sigma": self.blur_sigma, "sigma": self.sigma}


class MRITask(Task):
    name = "mri"
    init = "adjoint"
    complex_images = True

    def __init__(
        self,
        acceleration: float = 4.0,
        center_fraction: float = 0.08,
        mask: str = "random",
        sigma: float = 0.0,
        phase: float = 3.14159,
    ):
        self.mask_fn = mask_function(mask, acceleration, center_fraction)
        self.acceleration, self.center_fraction, self.mask = float(acceleration), float(center_fraction), mask
        self.sigma, self.phase = float(sigma), float(phase)

    def simulate(self, x: Tensor, generator: torch.Generator) -> Sample:
        shape = tuple(x.shape[-2:])
        rng = np.random.default_rng(_seed(generator))
        phases = np.stack([smooth_phase(shape, rng, self.phase) for _ in range(x.shape[0])])[:, None]
        image = torch.polar(x.float(), torch.from_numpy(phases).to(x.device))
        physics = CartesianMRI(self.mask_fn(shape, _seed(generator))).to(x.device)
        y = physics.A(image)
        if self.sigma > 0:
            noise = torch.randn(y.shape, generator=generator, dtype=torch.complex64).to(x.device)
            y = y + self.sigma * noise * (physics.mask > 0)
        return Sample(y, physics, image)

    def config(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "operator": "mri",
            "acceleration": self.acceleration,
            "center_fraction": self.center_fraction,
            "mask": self.mask,
            "sigma": self.sigma,
        }


class AutoencoderTask(Task):
    name = "autoencoder"

    def simulate(self, x: Tensor, generator: torch.Generator) -> Sample:
        return Sample(x, identity_operator().to(x.device), x)


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
def image_scores(
    model: nn.Module,
    task: Task,
    images: Sequence[np.ndarray],
    *,
    seed: int = 1234,
    device: str | torch.device = "cpu",
) -> dict[str, list[float]]:
    """PSNR / SSIM of a reconstructor ``model(y, physics)`` on each whole held-out image (image ``i``
    measured with seed ``seed + i``), magnitudes against the clean image; ``*_input`` scores the
    starting image (``Aᴴy`` or ``y``) as the baseline."""
    was_training = model.training
    model.eval()
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "psnr_input": [], "ssim_input": []}
    for i, image in enumerate(images):
        x = torch.from_numpy(np.asarray(image, dtype=np.float32))[None, None].to(device)
        sample = task.simulate(x, torch.Generator().manual_seed(seed + i))
        prediction = model(sample.y, sample.physics)
        start = sample.physics.A_adjoint(sample.y) if task.init == "adjoint" else sample.y
        for suffix, estimate in (("", prediction), ("_input", start)):
            m = image_metrics(estimate[0].abs().float().cpu(), x[0].cpu())
            scores["psnr" + suffix].append(m["psnr"])
            scores["ssim" + suffix].append(m["ssim"])
    model.train(was_training)
    return scores


def mean_scores(scores: dict[str, list[float]]) -> dict[str, float]:
    """Each of :func:`image_scores`' lists averaged over the images."""
    return {k: float(np.mean(v)) for k, v in scores.items()}


def evaluate(model: nn.Module, task: Task, images: Sequence[np.ndarray], **options: Any) -> dict[str, float]:
    """Mean PSNR / SSIM over ``images`` (``options``: ``seed``, ``device``, as :func:`image_scores`)."""
    return mean_scores(image_scores(model, task, images, **options))
