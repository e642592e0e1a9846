"""Weight samples of a reconstructor's network: storage next to the model and batched inference.

``K`` samples are stored as one safetensors file of stacked tensors ``name → (K, *shape)`` plus a JSON
description (sampler, its settings, the calibration factor), e.g. ``model.psgld.samples.json`` /
``.safetensors`` beside ``model.json``. Inference evaluates all ``K`` networks in one batched call with
``torch.func.functional_call`` under ``vmap``: the convolutions of the ``K`` weight sets become one
grouped convolution instead of ``K`` Python-level forward passes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from deepinv.physics import Physics
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.func import functional_call, vmap

from recon.errors import InputError
from recon.files import atomic_outputs
from recon.modelio import resolve_model
from recon.reconstructors import Reconstructor

FORMAT = "recon.samples/1"


@dataclass
class WeightSamples:
    """Stacked weight samples (``name → (K, *shape)``) and what produced them."""

    tensors: dict[str, Tensor]
    sampler: str
    settings: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, float] = field(default_factory=dict)  # coverage (as text) → interval scale

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
    path = Path(path)
    description, weights = path.with_name(path.name + ".json"), path.with_name(path.name + ".safetensors")
    document = {
        "format": FORMAT,
        "sampler": samples.sampler,
        "count": samples.count,
        "settings": samples.settings,
        "calibration": samples.calibration,
    }
    with atomic_outputs(description, weights) as (d_tmp, w_tmp):
        d_tmp.write_text(json.dumps(document, indent=1) + "\n")
        save_file({k: v.detach().cpu().contiguous() for k, v in samples.tensors.items()}, str(w_tmp))
    return description, weights


def load_samples(path: str | Path, model: Reconstructor | None = None) -> WeightSamples:
    """Load samples; with ``model`` their names and shapes are checked against its network."""
    path = Path(path)
    description, weights = path.with_name(path.name + ".json"), path.with_name(path.name + ".safetensors")
    if not description.is_file() or not weights.is_file():
        raise InputError("no stored weight samples (run `recon sample` first)", path)
    try:
        document = json.loads(description.read_text())
        tensors = load_file(str(weights))
    except Exception as exc:  # corrupt JSON or safetensors
        raise InputError(f"corrupt weight samples ({exc})", path) from None
    if document.get("format") != FORMAT or not tensors:
        raise InputError("not a recon weight-sample file", description)
    counts = {int(t.shape[0]) for t in tensors.values()}
    if len(counts) != 1:
        raise InputError("weight samples disagree on their number", weights)
    if model is not None:
        expected = dict(model.net.named_parameters())
        if set(expected) != set(tensors) or any(tensors[k].shape[1:] != p.shape for k, p in expected.items()):
            raise InputError("weight samples do not match the model's network", weights)
    return WeightSamples(
        {k: v.float() for k, v in tensors.items()},
        document["sampler"],
        document.get("settings", {}),
        document.get("calibration", {}),
    )


def stack_parameters(states: list[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """``[{name: tensor}] * K`` → ``{name: (K, ...)}``."""
    return {name: torch.stack([s[name].detach() for s in states]) for name in states[0]}


def predict_samples(
    model: Reconstructor, samples: WeightSamples, y: Tensor, physics: Physics, chunk: int = 16
) -> Tensor:
    """Reconstructions of ``y`` by every weight sample: ``(K, B, C, H, W)``.

    Normalisation, unrolled data steps and data consistency run on the ``K·B`` batch; only the network
    is evaluated per sample, batched with ``vmap`` over the stacked weights (``chunk`` samples at a
    time bound the memory)."""
    net = model.net
    buffers = dict(net.named_buffers())
    device = next(net.parameters()).device
    x0, scale = model.start(y, physics)
    y = y / scale
    batch = y.shape[0]
    outputs = []
    for start in range(0, samples.count, chunk):
        part = {k: v[start : start + chunk].to(device) for k, v in samples.tensors.items()}
        k = next(iter(part.values())).shape[0]

        def network(x: Tensor, part: dict[str, Tensor] = part, k: int = k) -> Tensor:
            per_sample = x.reshape(k, batch, *x.shape[1:])
            out = vmap(lambda p, xi: functional_call(net, (p, buffers), (xi,)))(part, per_sample)
            return out.reshape(k * batch, *out.shape[2:])

        x_k, y_k = (t.repeat(k, *([1] * (t.dim() - 1))) for t in (x0, y))
        estimate = model.consistency(model.body(network, x_k, y_k, physics), y_k, physics)
        outputs.append(estimate.reshape(k, batch, *estimate.shape[1:]) * scale)
    return torch.cat(outputs)
