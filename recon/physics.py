"""Build operators and noise models by name, the way the CLI and plugins do.

``build_operator("mri", (320, 320), acceleration=8, noise="gaussian:sigma=0.01", seed=0)``
looks the names up in the registries (built-ins and plugins alike), checks the parameters and
attaches a seeded noise model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from deepinv.physics import Physics
from deepinv.physics.noise import NoiseModel

from recon.errors import InputError
from recon.registry import Entry, get_registry

MAX_SIDE = 16384


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"name:key=value,key=value"`` → ``("name", {"key": "value", ...})``."""
    name, _, rest = spec.partition(":")
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"expected key=value in {spec!r}, got {item!r}")
        params[key.strip()] = value.strip()
    if not name.strip():
        raise InputError(f"missing a name in {spec!r}")
    return name.strip(), params


def typed_params(entry: Entry, params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters for ``entry``: strings are parsed with the factory's annotations, others kept."""
    return {k: entry.param(k).parse(v) if isinstance(v, str) else v for k, v in params.items()}


def check_img_size(img_size: tuple[int, int]) -> tuple[int, int]:
    """Validated ``(H, W)``: two positive integers no larger than ``MAX_SIDE``."""
    try:
        height, width = (int(s) for s in img_size)
    except (TypeError, ValueError):
        raise InputError(f"image size must be two integers, got {img_size!r}") from None
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise InputError(f"image size {height}x{width} outside 1..{MAX_SIDE}")
    return height, width


def build_noise(
    spec: str | None, seed: int | None = None, params: Mapping[str, Any] | None = None
) -> NoiseModel | None:
    """A seeded noise model from ``"name:key=value"`` (``None`` or ``"none"`` for no noise)."""
    if spec is None or spec == "none":
        return None
    name, texts = parse_spec(spec)
    entry = get_registry("noise_models").lookup(name)
    values = {**entry.parse_params(texts), **(params or {})}
    rng = None if seed is None else torch.Generator().manual_seed(int(seed))
    return entry.build(rng=rng, **values)


def build_operator(
    name: str,
    img_size: tuple[int, int],
    *,
    noise: str | None = None,
    noise_seed: int | None = None,
    **params: Any,
) -> Physics:
    """The registered operator ``name`` for images of ``img_size``; ``params`` may be typed values
    or command-line strings (parsed with the factory's annotations)."""
    entry = get_registry("operators").lookup(name)
    physics = entry.build(img_size=check_img_size(img_size), **typed_params(entry, params))
    model = build_noise(noise, noise_seed)
    if model is not None:
        physics.noise_model = model
    return physics


def operator_norm(
    physics: Physics, example: torch.Tensor, iterations: int = 100, tol: float = 1e-6, seed: int = 0
) -> float:
    r""":math:`\|A\|_2` by power iteration on :math:`A^H A` (complex-aware; seeded start)."""
    generator = torch.Generator(device=example.device).manual_seed(seed)
    x = torch.randn(example.shape, dtype=example.dtype, device=example.device, generator=generator)
    x = x / torch.linalg.vector_norm(x)
    value = 0.0
    for _ in range(iterations):
        y = physics.A_adjoint(physics.A(x))
        new = float(torch.vdot(x.flatten(), y.flatten()).real)
        x = y / torch.linalg.vector_norm(y)
        if abs(new - value) <= tol * max(abs(new), 1e-30):
            value = new
            break
        value = new
    return math.sqrt(max(value, 0.0))


def exact_norm(physics: Physics) -> float | None:
    """:math:`\\|A\\|_2` in closed form when the operator knows it (``physics.exact_norm()``)."""
    method = getattr(physics, "exact_norm", None)
    return method() if callable(method) else None
