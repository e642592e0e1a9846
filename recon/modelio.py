"""Saved reconstructors: ``NAME.json`` (what to build) + ``NAME.safetensors`` (the network's weights).

Nothing is unpickled. The JSON holds the format tag, the network (a GraphNet graph, or a registered
network's name and parameters), the reconstructor settings and free metadata (task and operator
parameters, recipe, metrics). Bundled models live in ``recon/bundled`` and are found by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recon.errors import InputError
from recon.files import pair_paths, read_pair, write_pair
from recon.nets.graph import GraphNet
from recon.reconstructors import Reconstructor
from recon.registry import get_registry

FORMAT = "recon.model/1"
BUNDLED = Path(__file__).parent / "bundled"


def bundled_models() -> dict[str, Path]:
    """Names and paths (without suffix) of the models shipped with recon (not their weight samples,
    ``NAME.SAMPLER.samples.json``, which sit beside them)."""
    return {p.stem: p.with_suffix("") for p in sorted(BUNDLED.glob("*.json")) if "." not in p.stem}


def _stem(path: str | Path) -> Path:
    """``m.json`` / ``m.safetensors`` / ``m`` → ``m``; other dots (``model.v2``) stay in the stem."""
    path = Path(path)
    return path.with_name(path.stem) if path.suffix in (".json", ".safetensors") else path


def network_description(
    net: nn.Module, name: str | None = None, params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    if isinstance(net, GraphNet):
        return {"kind": "graph", "graph": net.spec}
    if name is None:
        raise InputError("a network that is not a GraphNet needs its registry name to be saved")
    return {"kind": "registry", "name": name, "params": dict(params or {})}


def save_model(
    model: Reconstructor,
    path: str | Path,
    *,
    metadata: Mapping[str, Any] | None = None,
    network: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``path.json`` and ``path.safetensors`` atomically."""
    stem = _stem(path)
    document = {
        "format": FORMAT,
        "network": dict(network) if network is not None else network_description(model.net),
        "reconstructor": model.config(),
        "metadata": dict(metadata or {}),
    }
    return write_pair(stem, document, model.net.state_dict())


def resolve_model(name_or_path: str | Path) -> Path:
    """A bundled model name (``mri-4x``) or a path to ``.json``/``.safetensors``/stem."""
    bundled = bundled_models()
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    stem = _stem(name_or_path)
    if not pair_paths(stem)[0].is_file():
        known = ", ".join(bundled) or "none"
        raise InputError(f"model not found (bundled models: {known})", name_or_path)
    return stem


def load_model(
    name_or_path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Reconstructor, dict[str, Any]]:
    """Load a reconstructor and its metadata; any inconsistency is an :class:`InputError`."""
    stem = resolve_model(name_or_path)
    document, tensors = read_pair(stem, FORMAT, "model", "model weights or description not found")
    try:
        network = document["network"]
        if network["kind"] == "graph":
            net: nn.Module = GraphNet(network["graph"])
        elif network["kind"] == "registry":
            net = get_registry("networks").build(network["name"], **network["params"])
        else:
            raise InputError(f"unknown network kind {network['kind']!r}", stem)
        model = Reconstructor(net, **document["reconstructor"])
        metadata = document.get("metadata", {})
        if not isinstance(metadata, dict) or not isinstance(metadata.get("task", {}), dict):
            raise InputError("malformed model description (metadata and its task must be objects)", stem)
    except KeyError as exc:
        raise InputError(f"incomplete model description (missing {exc})", stem) from None
    except (TypeError, ValueError, AttributeError) as exc:  # a field of the wrong type or value
        raise InputError(f"malformed model description ({exc})", stem) from None
    expected = model.net.state_dict()
    if set(tensors) != set(expected) or any(tensors[k].shape != v.shape for k, v in expected.items()):
        raise InputError("weights do not match the model description", stem)
    if not all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point()):
        raise InputError("the model's weights are not all finite", stem)
    model.net.load_state_dict(tensors)
    return model.to(device).eval(), dict(metadata)
