"""Weight samples of a reconstructor's network: storage next to the model and batched inference.

``K`` samples are stored as one safetensors file of stacked tensors ``name → (K, *shape)`` plus a JSON
description (sampler, its settings, the conformal calibration per coverage), e.g.
``model.psgld.samples.json`` / ``.safetensors`` beside ``model.json``. The names may cover only a
*subnetwork* (e.g. the last layers, ``subnetwork_parameters``); the other weights are the model's
own. For an unrolled reconstruction the samples may also cover only the last ``iterations`` network
passes (``settings["iterations"]``); the earlier passes use the trained weights.

Inference evaluates all ``K`` reconstructions together, not as a Python loop of ``K`` reconstructions:
what does not depend on the samples runs once (the passes before the sampled ones, and inside the
network the layers before the first sampled one), and the rest runs batched over the samples
(grouped convolutions for GraphNets, ``vmap`` otherwise). On a CPU a network pass over all ``K``
weight sets costs about ``K`` single passes, so the cost of ``K`` samples is set by how much is
shared: sampling only the last of three unrolled passes makes K = 16 cost 6–8 reconstructions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from deepinv.physics import Physics
from torch import Tensor, nn
from torch.func import functional_call, vmap

from recon.errors import InputError
from recon.files import pair_paths, read_pair, write_pair
from recon.modelio import resolve_model
from recon.nets import GraphNet
from recon.nets.stacked import stacked_forward
from recon.reconstructors import Reconstructor
from recon.uncertainty.maps import Calibration

FORMAT = "recon.samples/1"


@dataclass
class WeightSamples:
    """Stacked weight samples (``name → (K, *shape)``) and what produced them."""

    tensors: dict[str, Tensor]
    sampler: str
    settings: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Calibration] = field(default_factory=dict)  # coverage (as text) → factors

    @property
    def count(self) -> int:
        return int(next(iter(self.tensors.values())).shape[0])

    def subset(self, k: int) -> WeightSamples:
        if not 1 <= k <= self.count:
            raise InputError(f"asked for {k} samples, {self.count} are stored")
        return WeightSamples(
            {n: t[:k] for n, t in self.tensors.items()}, self.sampler, self.settings, self.calibration
        )


def samples_path(model: str | Path, sampler: str) -> Path:
    """``<model stem>.<sampler>.samples`` (add ``.json`` / ``.safetensors``)."""
    stem = resolve_model(model)
    return stem.with_name(f"{stem.name}.{sampler}.samples")


def save_samples(samples: WeightSamples, path: str | Path) -> tuple[Path, Path]:
    document = {
        "format": FORMAT,
        "sampler": samples.sampler,
        "count": samples.count,
        "settings": samples.settings,
        "calibration": {c: v.to_json() for c, v in samples.calibration.items()},
    }
    return write_pair(path, document, samples.tensors)


def load_samples(path: str | Path, model: Reconstructor | None = None) -> WeightSamples:
    """Load samples; with ``model`` their names and shapes are checked against its network."""
    document, tensors = read_pair(
        path, FORMAT, "weight samples", "no stored weight samples (run `recon sample` first)"
    )
    weights = pair_paths(path)[1]
    if not tensors:
        raise InputError("weight-sample file holds no tensors", weights)
    counts = {int(t.shape[0]) for t in tensors.values()}
    if len(counts) != 1:
        raise InputError("weight samples disagree on their number", weights)
    if model is not None:
        expected = dict(model.net.named_parameters())
        if any(k not in expected or t.shape[1:] != expected[k].shape for k, t in tensors.items()):
            raise InputError("weight samples do not match the model's network", weights)
    return WeightSamples(
        {k: v.float() for k, v in tensors.items()},
        document["sampler"],
        document.get("settings", {}),
        _calibrations(document.get("calibration", {}), path),
    )


def _calibrations(entries: Any, path: str | Path) -> dict[str, Calibration]:
    if not isinstance(entries, dict):
        raise InputError("the samples' calibration is not a table", path)
    return {str(coverage): Calibration.from_json(value) for coverage, value in entries.items()}


def subnetwork_parameters(net: nn.Module, layers: int = 0) -> list[str]:
    """Names of the parameters of the network's last ``layers`` layers (``0``: every parameter).

    A layer is a module that owns parameters, in registration order; for recon's graph networks the
    convolution nodes in graph order (their gates are left out)."""
    if layers < 0:
        raise InputError(f"layers must be 0 (all) or positive, got {layers}")
    if layers == 0:
        return [name for name, _ in net.named_parameters()]
    convs = getattr(net, "convs", None)
    if isinstance(convs, nn.ModuleDict):
        owners = [(f"convs.{name}", module) for name, module in convs.items()]
    else:
        owners = [(n, m) for n, m in net.named_modules() if any(True for _ in m.parameters(recurse=False))]
    if layers > len(owners):
        raise InputError(f"the network has {len(owners)} layers, asked to sample the last {layers}")
    return [f"{prefix}.{n}" for prefix, module in owners[-layers:] for n, _ in module.named_parameters()]


def stack_parameters(states: list[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """``[{name: tensor}] * K`` → ``{name: (K, ...)}``."""
    return {name: torch.stack([s[name].detach() for s in states]) for name in states[0]}


CPU_SAMPLE_PIXELS = 2**18
"""Samples × image pixels per batched pass on a CPU. Larger batches leave the caches: on the 8×
model, 16 samples of one 256² slice in one pass cost 9.6 reconstructions, in passes of 4 samples
5.8 (2 slices of 128²: 5.2 vs 3.8 in passes of 8)."""


def predict_samples(
    model: Reconstructor, samples: WeightSamples, y: Tensor, physics: Physics, chunk: int | None = None
) -> Tensor:
    """Reconstructions of ``y`` by every weight sample: ``(K, B, C, H, W)``.

    Everything that does not depend on the sampled weights is computed once: the network passes
    before the sampled ones (``iterations`` in the samples' settings) and, inside the network, the
    layers before the first sampled one. GraphNets run all ``chunk`` samples of a pass together
    (:func:`recon.nets.stacked.stacked_forward`, grouped convolutions); other networks through
    ``vmap`` of ``functional_call``. The data steps and the data consistency are ``vmap``-ped.
    ``chunk`` samples run together (default: all on a GPU, ``CPU_SAMPLE_PIXELS`` worth on a CPU)."""
    net = model.net
    weights = {name: p.detach() for name, p in net.named_parameters()}
    device = next(net.parameters()).device
    x0, scale = model.start(y, physics)
    y = y / scale
    first = model.tail_start(int(samples.settings.get("iterations", 0) or 0))
    step = model.step_size(x0, physics) if model.unrolled else 0.0  # once for every pass and sample
    shared = model.body(net, x0, y, physics, stop=first, step=step)
    if chunk is None:
        pixels = x0.shape[0] * x0.shape[-2] * x0.shape[-1]
        chunk = samples.count if device.type != "cpu" else max(1, CPU_SAMPLE_PIXELS // pixels)
    tail = _SampledPasses(model, weights, y, physics, first, step)
    run = tail.stacked if isinstance(net, GraphNet) else tail.vmapped
    outputs = []
    for start in range(0, samples.count, chunk):
        part = {k: v[start : start + chunk].to(device) for k, v in samples.tensors.items()}
        outputs.append(vmap(lambda v: model.consistency(v, y, physics))(run(part, shared)))
    return torch.cat(outputs) * scale


@dataclass(frozen=True)
class _SampledPasses:
    """The passes from ``first`` on, with the weights ``weights`` overridden by each sample's."""

    model: Reconstructor
    weights: Mapping[str, Tensor]
    y: Tensor
    physics: Physics
    first: int
    step: float

    def vmapped(self, sampled: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """``vmap``-ped over the samples (any network)."""
        model, buffers = self.model, dict(self.model.net.named_buffers())

        def passes(part: dict[str, Tensor]) -> Tensor:
            def network(v: Tensor) -> Tensor:
                return functional_call(model.net, ({**self.weights, **part}, buffers), (v,))

            return model.body(network, x, self.y, self.physics, start=self.first, step=self.step)

        return vmap(passes)(sampled)

    def stacked(self, sampled: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Every sample's network evaluated in one grouped pass; ``x`` is shared until the first
        sampled pass, then ``(K, B, ...)``."""
        model, y, physics, step = self.model, self.y, self.physics, self.step
        k = int(next(iter(sampled.values())).shape[0])
        params, names = {**self.weights, **sampled}, set(sampled)
        per_sample = False
        for _ in range(self.first, model.passes):
            if model.unrolled:
                z = (
                    vmap(lambda v: model.data_step(v, y, physics, step))(x)
                    if per_sample
                    else model.data_step(x, y, physics, step)
                )
            else:
                z = x
            like = z if per_sample else z.expand(k, *z.shape)
            net_input = model.to_net(z.flatten(0, 1)).unflatten(0, (k, -1)) if per_sample else model.to_net(z)
            out = stacked_forward(model.net, params, names, net_input, k)
            x = model.from_net(out.flatten(0, 1), like.flatten(0, 1)).unflatten(0, (k, -1))
            per_sample = True
        return x
