"""recon: plugin-based imaging inverse problems on PyTorch and deepinv.

Public API (plugins and the built-in operators use only this and the documented submodules):

- :func:`build_operator`, :func:`build_noise`: operators and noise models by registered name;
- :func:`get_registry`, :func:`list_plugins`, :data:`hookimpl`: the plugin system;
- :class:`InputError`: bad input a user can fix (exit code 2 from the CLI).
"""

from recon.errors import InputError, PluginError, ReconError
from recon.hookspecs import hookimpl
from recon.physics import build_noise, build_operator, exact_norm, operator_norm, parse_spec
from recon.registry import PluginLoadWarning, get_registry, list_plugins, reset_plugins

__version__ = "0.1.0"

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
