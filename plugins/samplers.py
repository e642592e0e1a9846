r"""Built-in samplers over a trained reconstructor's network weights.

All four return :class:`recon.uncertainty.WeightSamples` (K stacked weight sets) that
``recon.uncertainty.predict_samples`` evaluates in one batched pass.

- ``psgld`` / ``baoab``: Langevin dynamics on the tempered posterior
  :math:`U(\theta) = \frac{N}{2\sigma^2}\,\overline{\|f_\theta(y) - x\|^2} + \frac{\|\theta\|^2}{2\sigma_p^2}`
  (Gaussian likelihood with :math:`\sigma^2` the trained model's mean squared error per value, ``N``
  the effective number of training images, Gaussian prior), started from the trained weights, with
  minibatch gradients on fresh simulated measurements. ``lr`` is pSGLD's step in Adam-like units
  (:math:`\epsilon = 2\,\mathrm{lr}/N`).
- ``mc-dropout``: channel dropout (rate ``p``) fine-tuned for ``steps`` steps, then ``K`` dropout
  masks, folded into the weights (dropping a channel = zeroing its row and bias; ReLU(m·z) = m·ReLU(z)
  for m ≥ 0, with the usual 1/(1-p) rescaling of kept channels). The default ``p = 0.2`` was chosen on
  the validation volume: against 0.1 it localises large errors better at both 4× and 8× (AUROC
  +0.02) for ≤ 0.15 dB of the mean's PSNR; 0.3 helps 4× further but not 8× (BENCHMARKS.md).
- ``ensemble``: ``K`` members fine-tuned for ``steps`` steps from the trained weights, each with its
  own seed, data order and a perturbation of relative size ``perturbation`` (of each tensor's
  RMS). (Independent training from scratch, the classical deep ensemble, is ``recon train`` with K
  seeds; too slow for a CPU.)

Every sampler takes ``layers``: ``0`` samples every weight; ``N`` samples only the network's last ``N``
layers (subnetwork inference, Daxberger et al. 2021; last-layer Bayesian nets), the rest stays at the
trained weights. The samples then store only those layers, and inference computes the shared earlier
layers once for all ``K`` samples (see ``recon.uncertainty.samples``). For unrolled reconstructions
``iterations`` = ``m`` samples the weights of the last ``m`` network passes only: the earlier passes
keep the trained weights (held constant while sampling), so inference runs them once for all ``K``.
With a shared network this is the posterior over an untied copy of the last pass's weights given the
trained earlier passes, the unrolled counterpart of last-layer sampling.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from recon import InputError
from recon.nets import GraphNet
from recon.reconstructors import Reconstructor
from recon.tasks import Task
from recon.train import MAX_STEPS, SimulatedBatches
from recon.uncertainty import WeightSamples, stack_parameters, subnetwork_parameters
from recon.uncertainty.langevin import baoab as baoab_chain
from recon.uncertainty.langevin import psgld as psgld_chain


def _per_sample_sse(prediction: Tensor, target: Tensor) -> Tensor:
    diff = prediction - target
    if diff.is_complex():
        diff = torch.view_as_real(diff)
    return diff.pow(2).flatten(1).sum(1)


def _sampled(model: Reconstructor, layers: int) -> dict[str, nn.Parameter]:
    """The parameters a sampler moves (the last ``layers`` layers; all for 0); the others are frozen."""
    names = set(subnetwork_parameters(model.net, layers))
    chosen = {}
    for name, p in model.net.named_parameters():
        p.requires_grad_(name in names)
        if name in names:
            chosen[name] = p
    return chosen


def _reconstruction(
    model: Reconstructor,
    sample: Any,
    iterations: int,
    trained: Mapping[str, Tensor],
    network: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """The model's reconstruction of a simulated ``sample`` with ``network`` (default: its net) in
    the last ``iterations`` network passes (``0``: all); the earlier passes use the ``trained``
    weights as constants, as ``recon.uncertainty.predict_samples`` evaluates such samples."""
    network = model.net if network is None else network
    x, scale = model.start(sample.y, sample.physics)
    y = sample.y / scale
    first = model.tail_start(iterations)
    with torch.no_grad():
        x = model.body(lambda v: functional_call(model.net, trained, (v,)), x, y, sample.physics, stop=first)
    x = model.body(network, x, y, sample.physics, start=first)
    return model.consistency(x, y, sample.physics) * scale


def _trained(model: Reconstructor) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in model.net.named_parameters()}


class LangevinSampler:
    """Shared set-up of pSGLD and BAOAB on the network weights (the registered samplers are the
    classes themselves: their constructor's keywords are the CLI's ``name:key=value`` options)."""

    name = "langevin"

    def __init__(
        self,
        *,
        step: float,
        burn_in: int,
        thin: int,
        temperature: float,
        data_size: float,
        prior_std: float,
        batch: int,
        layers: int,
        iterations: int,
    ):
        if data_size <= 0 or prior_std <= 0 or batch < 1:
            raise InputError("data_size and prior_std must be positive and batch at least 1")
        self.step, self.burn_in, self.thin, self.temperature = step, burn_in, thin, temperature
        self.data_size, self.prior_std, self.batch, self.layers = data_size, prior_std, batch, layers
        self.iterations = iterations

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def _gradient(
        self,
        model: Reconstructor,
        stream: SimulatedBatches,
        noise_var: float,
        params: list[Tensor],
        trained: Mapping[str, Tensor],
    ):

        def grad(theta: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
            sample = stream()
            with torch.enable_grad():
                prediction = _reconstruction(model, sample, self.iterations, trained)
                nll = _per_sample_sse(prediction, sample.target).mean() / (2 * noise_var)
                grads = torch.autograd.grad(nll, params)
            g_bar = [-g for g in grads]
            g_u = [self.data_size * g + t / self.prior_std**2 for g, t in zip(grads, theta, strict=True)]
            return g_u, g_bar

        return grad

    def run(
        self,
        model: Reconstructor,
        task: Task,
        data: Any,
        count: int,
        *,
        generator: torch.Generator,
        device: torch.device,
        progress: bool = False,
    ) -> WeightSamples:
        model = copy.deepcopy(model).to(device).train()
        model.tail_start(self.iterations)  # validates
        trained = _trained(model)
        stream = SimulatedBatches(task, data, self.batch, generator, device)
        with torch.no_grad():
            errors = [task.loss(model(s.y, s.physics), s.target) for s in (stream() for _ in range(4))]
        noise_var = float(torch.stack(errors).mean())
        sampled = _sampled(model, self.layers)
        params = list(sampled.values())
        grad = self._gradient(model, stream, noise_var, params, trained)
        states = self._chain(params, grad, count, generator, progress)
        names = list(sampled)
        settings = {**self.settings(), "noise_var": noise_var}
        return WeightSamples(
            stack_parameters([dict(zip(names, s, strict=True)) for s in states]), self.name, settings
        )


class PSGLD(LangevinSampler):
    """Preconditioned SGLD on the network weights (Li et al. 2016); ``layers``: sample only the last N."""

    name = "psgld"

    def __init__(
        self,
        lr: float = 1e-4,
        burn_in: int = 100,
        thin: int = 10,
        temperature: float = 1.0,
        data_size: float = 64.0,
        prior_std: float = 1.0,
        batch: int = 4,
        alpha: float = 0.99,
        layers: int = 0,
        iterations: int = 0,
    ):
        super().__init__(
            step=2 * lr / data_size,
            burn_in=burn_in,
            thin=thin,
            temperature=temperature,
            data_size=data_size,
            prior_std=prior_std,
            batch=batch,
            layers=layers,
            iterations=iterations,
        )
        self.alpha = alpha

    def _chain(self, params, grad, count, generator, progress):
        return psgld_chain(
            params,
            grad,
            step=self.step,
            count=count,
            burn_in=self.burn_in,
            thin=self.thin,
            alpha=self.alpha,
            temperature=self.temperature,
            generator=generator,
            progress=progress,
        )


class BAOAB(LangevinSampler):
    """Underdamped Langevin (BAOAB splitting) on the network weights; ``layers``: only the last N."""

    name = "baoab"

    def __init__(
        self,
        step: float = 1e-5,
        burn_in: int = 100,
        thin: int = 10,
        temperature: float = 1.0,
        data_size: float = 64.0,
        prior_std: float = 1.0,
        batch: int = 4,
        friction: float = 10.0,
        layers: int = 0,
        iterations: int = 0,
    ):
        super().__init__(
            step=step,
            burn_in=burn_in,
            thin=thin,
            temperature=temperature,
            data_size=data_size,
            prior_std=prior_std,
            batch=batch,
            layers=layers,
            iterations=iterations,
        )
        self.friction = friction

    def _chain(self, params, grad, count, generator, progress):
        return baoab_chain(
            params,
            grad,
            step=self.step,
            count=count,
            burn_in=self.burn_in,
            thin=self.thin,
            friction=self.friction,
            temperature=self.temperature,
            generator=generator,
            progress=progress,
        )


def _check_fine_tuning(steps: int, lr: float) -> None:
    if not (0 <= steps <= MAX_STEPS and math.isfinite(lr) and lr > 0):
        raise InputError(f"fine-tuning needs steps in [0, {MAX_STEPS}] and a positive lr, got {steps}, {lr}")


def _fine_tune(
    task: Task,
    stream: SimulatedBatches,
    steps: int,
    lr: float,
    params: list[Tensor],
    reconstruction: Callable[[Any], Tensor],
) -> None:
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        sample = stream()
        loss = task.loss(reconstruction(sample), sample.target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


class MCDropout:
    """Channel dropout, fine-tuned then sampled (Gal & Ghahramani 2016); ``layers``: only the last N."""

    name = "mc-dropout"

    def __init__(
        self,
        p: float = 0.2,
        steps: int = 200,
        lr: float = 1e-4,
        batch: int = 4,
        layers: int = 0,
        iterations: int = 0,
    ):
        if not 0 < p < 1:
            raise InputError(f"dropout rate must be in (0, 1), got {p}")
        _check_fine_tuning(steps, lr)
        self.p, self.steps, self.lr, self.batch, self.layers = p, steps, lr, batch, layers
        self.iterations = iterations

    @staticmethod
    def _dropped_convs(net: GraphNet, sampled: Mapping[str, Tensor]) -> list[str]:
        """The sampled convolutions that get channel dropout (the output convolutions never do)."""
        fixed = set((net.spec.get("meta", {}) or {}).get("fixed", ["head"]))
        return [name for name in net.convs if name not in fixed and f"convs.{name}.weight" in sampled]

    def _masked(
        self, net: GraphNet, sampled: Mapping[str, Tensor], convs: list[str], generator: torch.Generator
    ) -> dict[str, Tensor]:
        """The sampled parameters with a fresh channel-dropout mask folded into ``convs``."""
        params = dict(net.named_parameters())
        out = {name: params[name] for name in sampled}
        for name in convs:
            conv = net.convs[name]
            keep = (torch.rand(conv.out_channels, generator=generator) >= self.p).to(conv.weight.dtype)
            scale = (keep / (1 - self.p)).to(conv.weight.device)
            out[f"convs.{name}.weight"] = params[f"convs.{name}.weight"] * scale.view(-1, 1, 1, 1)
            out[f"convs.{name}.bias"] = params[f"convs.{name}.bias"] * scale
        return out

    def run(
        self,
        model: Reconstructor,
        task: Task,
        data: Any,
        count: int,
        *,
        generator: torch.Generator,
        device: torch.device,
        progress: bool = False,
    ) -> WeightSamples:
        if not isinstance(model.net, GraphNet):
            raise InputError("MC dropout needs a GraphNet (channel masks are folded into its weights)")
        model = copy.deepcopy(model).to(device).train()
        model.tail_start(self.iterations)  # validates
        trained = _trained(model)
        sampled = _sampled(model, self.layers)
        convs = self._dropped_convs(model.net, sampled)
        if not convs:
            raise InputError(f"no layer to drop out among the last {self.layers} (output layers are exempt)")
        stream = SimulatedBatches(task, data, self.batch, generator, device)
        weights = dict(model.net.named_parameters())
        buffers = dict(model.net.named_buffers())

        def dropped(sample):
            masked = {**weights, **self._masked(model.net, sampled, convs, generator)}
            net = lambda x: functional_call(model.net, (masked, buffers), (x,))  # noqa: E731
            return _reconstruction(model, sample, self.iterations, trained, net)

        _fine_tune(task, stream, self.steps, self.lr, list(sampled.values()), dropped)
        with torch.no_grad():
            states = [
                {k: v.detach().clone() for k, v in self._masked(model.net, sampled, convs, generator).items()}
                for _ in range(count)
            ]
        return WeightSamples(stack_parameters(states), self.name, dict(vars(self)))


class Ensemble:
    """Fine-tuned ensemble from perturbed copies of the trained weights; ``layers``: only the last N
    (a multi-head ensemble on a shared trunk)."""

    name = "ensemble"

    def __init__(
        self,
        steps: int = 100,
        lr: float = 2e-4,
        perturbation: float = 0.05,
        batch: int = 4,
        layers: int = 0,
        iterations: int = 0,
    ):
        _check_fine_tuning(steps, lr)
        if not (math.isfinite(perturbation) and perturbation >= 0):
            raise InputError(f"perturbation must be a non-negative number, got {perturbation}")
        self.steps, self.lr, self.perturbation = steps, lr, perturbation
        self.batch, self.layers, self.iterations = batch, layers, iterations

    def run(
        self,
        model: Reconstructor,
        task: Task,
        data: Any,
        count: int,
        *,
        generator: torch.Generator,
        device: torch.device,
        progress: bool = False,
    ) -> WeightSamples:
        model.tail_start(self.iterations)  # validates
        trained = _trained(model)
        states = []
        for member in range(count):
            copy_ = copy.deepcopy(model).to(device).train()
            sampled = _sampled(copy_, self.layers)
            with torch.no_grad():
                for p in sampled.values():
                    noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
                    p.add_(noise * self.perturbation * p.detach().pow(2).mean().sqrt())  # relative to the RMS
            stream = SimulatedBatches(
                task, data, self.batch, torch.Generator().manual_seed(int(member) + 7), device
            )
            stream.step = member * self.steps
            reconstruction = functools.partial(
                _reconstruction, copy_, iterations=self.iterations, trained=trained
            )
            _fine_tune(task, stream, self.steps, self.lr, list(sampled.values()), reconstruction)
            states.append({k: v.detach().clone() for k, v in sampled.items()})
        return WeightSamples(stack_parameters(states), self.name, dict(vars(self)))
