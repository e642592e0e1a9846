"""recon: plugin-based imaging inverse problems on PyTorch and deepinv.

Public API (plugins and the built-in operators use only this and the documented submodules):

- :func:`build_operator`, :func:`build_noise`: operators and noise models by registered name;
- :func:`get_registry`, :func:`list_plugins`, :data:`hookimpl`: the plugin system;
- :class:`InputError`: bad input a user can fix (exit code 2 from the CLI).

The operator functions are imported on first use (PEP 562 ``__getattr__``): ``recon.physics``
imports deepinv, which imports torchvision and ``torch._dynamo`` (about 1.7 s of a 4 s start-up
here), and commands that never build an operator (``recon compress`` / ``decompress``) need none
of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from recon.errors import InputError, PluginError, ReconError
from recon.hookspecs import hookimpl
from recon.registry import PluginLoadWarning, get_registry, list_plugins, reset_plugins

if TYPE_CHECKING:
    from recon.physics import build_noise, build_operator, exact_norm, operator_norm, parse_spec

__version__ = "0.1.0"

_PHYSICS = frozenset({"build_noise", "build_operator", "exact_norm", "operator_norm", "parse_spec"})

__all__ = [
    "InputError",
    "PluginError",
    "PluginLoadWarning",
    "ReconError",
    "__version__",
    "build_noise",
    "build_operator",
    "exact_norm",
    "get_registry",
    "hookimpl",
    "list_plugins",
    "operator_norm",
    "parse_spec",
    "reset_plugins",
]


def __getattr__(name: str) -> Any:
    if name in _PHYSICS:
        value = getattr(importlib.import_module("recon.physics"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'recon' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _PHYSICS)
