"""The plugin host: pluggy manager, built-in and entry-point plugins, typed registries.

Built-in plugins (``DEFAULT_PLUGINS``) are registered first, then the modules named by entry points
in the group ``recon``. A plugin that fails to import (or implements a hook that does not exist)
is reported with a :class:`PluginLoadWarning` naming it and skipped; the rest keeps working.
``RECON_DISABLE_PLUGINS=all`` turns entry-point autoloading off; a comma list
(``RECON_DISABLE_PLUGINS=foo,recon.operators``) skips the plugins of those names, built-ins included.

Every hook ``recon_register_<kind>(register)`` fills one :class:`Registry`. Each implementation is
called with its own ``register`` so that every :class:`Entry` records which plugin made it; two
plugins registering one name raise :class:`~recon.errors.PluginError` naming both.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import threading
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from recon import hookspecs
from recon.errors import InputError, PluginError

ENTRY_POINT_GROUP = "recon"
DISABLE_ENV = "RECON_DISABLE_PLUGINS"
DEFAULT_PLUGINS: tuple[str, ...] = (
    "recon.operators",
    "recon.networks",
    "recon.datasets.readers",
    "recon.sparsity",
    "recon.plugins",
)
HOOK_PREFIX = "recon_register_"
# Parameters that recon itself supplies when it calls a factory of that kind.
CONTEXT_PARAMS: dict[str, frozenset[str]] = {
    "operators": frozenset({"img_size"}),
    "noise_models": frozenset({"rng"}),
    "dataset_readers": frozenset({"path"}),
    "networks": frozenset({"in_channels", "out_channels"}),
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded and was skipped."""


def kinds() -> tuple[str, ...]:
    """Registry kinds, one per ``recon_register_<kind>`` hook spec."""
    return tuple(name[len(HOOK_PREFIX) :] for name in vars(hookspecs) if name.startswith(HOOK_PREFIX))


@dataclass(frozen=True)
class Param:
    """One keyword parameter of a factory, read from its signature."""

    name: str
    default: Any
    annotation: Any
    required: bool

    def parse(self, text: str) -> Any:
        """Convert a command-line string to this parameter's type (``InputError`` if it cannot)."""
        try:
            return _coerce(text, self.annotation, self.default)
        except (TypeError, ValueError) as exc:
            raise InputError(f"parameter {self.name}={text!r}: {exc}") from None

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": _type_name(self.annotation, self.default),
            "default": None if self.required else _jsonable(self.default),
            "required": self.required,
        }


@dataclass(frozen=True)
class Entry:
    """A registered factory: what ``recon operators`` lists and ``Entry.build`` calls."""

    kind: str
    name: str
    plugin: str
    factory: Callable[..., Any]
    description: str
    params: tuple[Param, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.params) or "none"
        raise InputError(f"{self.kind[:-1]} {self.name!r} has no parameter {name!r} (known: {known})")

    def parse_params(self, texts: Mapping[str, str]) -> dict[str, Any]:
        """Typed parameters from ``{"name": "text"}`` pairs (command-line values)."""
        return {k: self.param(k).parse(v) for k, v in texts.items()}

    def build(self, /, **params: Any) -> Any:
        """Call the factory after checking that every parameter is known."""
        context = CONTEXT_PARAMS.get(self.kind, frozenset())
        for key in params:
            if key not in context:
                self.param(key)
        missing = [p.name for p in self.params if p.required and p.name not in params]
        if missing:
            raise InputError(f"{self.kind[:-1]} {self.name!r} needs parameter(s): {', '.join(missing)}")
        return self.factory(**params)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "plugin": self.plugin,
            "description": self.description,
            "params": {p.name: p.as_dict() for p in self.params},
            **{k: _jsonable(v) for k, v in self.meta.items() if not callable(v)},
        }


class Registry(Mapping[str, Entry]):
    """Entries of one kind by name (a read-only mapping)."""

    def __init__(self, kind: str, entries: Mapping[str, Entry]):
        self.kind = kind
        self._entries = dict(sorted(entries.items()))

    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, name: str) -> Entry:
        """The entry called ``name``, or an :class:`InputError` listing the known names."""
        if name in self._entries:
            return self._entries[name]
        close = difflib.get_close_matches(name, self._entries, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(self._entries) or "none installed"
        raise InputError(f"unknown {self.kind[:-1].replace('_', ' ')} {name!r}{hint} (known: {known})")

    def build(self, name: str, /, **params: Any) -> Any:
        return self.lookup(name).build(**params)


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin: its name, module, where it came from and the hooks it implements."""

    name: str
    module: str
    source: str
    hooks: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "module": self.module, "source": self.source, "hooks": list(self.hooks)}


class _PluginManager(pluggy.PluginManager):
    """Treats every ``recon_*`` function as a hook implementation, marked or not (as pytest does with
    ``pytest_*``), so that ``check_pending`` catches a misspelt hook name instead of ignoring it."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("recon_") and inspect.isroutine(getattr(plugin, name, None)):
            opts = {}
        return opts


class PluginHost:
    """A pluggy manager with recon's loading rules and the registries it fills."""

    def __init__(self, default_plugins: tuple[str, ...] = DEFAULT_PLUGINS, autoload: bool | None = None):
        self.pm = _PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.builtin: set[str] = set()
        self._registries: dict[str, Registry] = {}
        disabled = {s.strip() for s in os.environ.get(DISABLE_ENV, "").split(",") if s.strip()}
        for module_name in default_plugins:
            if module_name not in disabled:
                self._add(importlib.import_module(module_name), module_name, "built-in")
                self.builtin.add(module_name)
        self.pm.check_pending()
        if autoload is None:
            autoload = "all" not in disabled
        if autoload:
            self._load_entry_points(disabled)

    def _add(self, plugin: object, name: str, source: str) -> None:
        self.pm.register(plugin, name=name)
        hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()))
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.infos[name] = PluginInfo(name, module, source, hooks)

    def _load_entry_points(self, disabled: set[str]) -> None:
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in disabled:
                continue
            if self.pm.has_plugin(ep.name):
                _warn(ep.name, f"a plugin named {ep.name!r} is already loaded")
                continue
            dist = getattr(ep, "dist", None)
            source = f"{dist.name} {dist.version}" if dist is not None else ep.value
            try:
                plugin = ep.load()
                self._add(plugin, ep.name, source)
                self.pm.check_pending()
            except Exception as exc:  # a broken plugin must not take recon down
                if self.pm.has_plugin(ep.name):
                    self.pm.unregister(name=ep.name)
                self.infos.pop(ep.name, None)
                _warn(ep.name, f"{type(exc).__name__}: {exc}")

    def registry(self, kind: str) -> Registry:
        """The registry of ``kind`` (built on first use, then cached)."""
        if kind not in self._registries:
            if kind not in kinds():
                raise InputError(f"unknown registry kind {kind!r} (known: {', '.join(kinds())})")
            self._registries[kind] = self._collect(kind)
        return self._registries[kind]

    def _collect(self, kind: str) -> Registry:
        entries: dict[str, Entry] = {}
        hook = getattr(self.pm.hook, HOOK_PREFIX + kind)
        for impl in hook.get_hookimpls():  # registration order: built-ins first
            mine: dict[str, Entry] = {}

            def register(
                name: str,
                factory: Callable[..., Any],
                *,
                description: str | None = None,
                _plugin: str = impl.plugin_name,
                _mine: dict = mine,
                **meta: Any,
            ) -> None:
                entry = make_entry(kind, name, _plugin, factory, description, meta)
                clash = entries.get(name) or _mine.get(name)
                if clash is not None:
                    raise PluginError(
                        f"{kind[:-1]} {name!r} is registered twice: by plugin {clash.plugin!r} "
                        f"and by plugin {_plugin!r}"
                    )
                _mine[name] = entry

            try:
                impl.function(**{arg: register for arg in impl.argnames})
            except PluginError:
                raise
            except Exception as exc:
                if impl.plugin_name in self.builtin:
                    raise
                _warn(impl.plugin_name, f"{HOOK_PREFIX}{kind} failed: {type(exc).__name__}: {exc}")
                continue
            entries.update(mine)
        return Registry(kind, entries)


def make_entry(
    kind: str,
    name: str,
    plugin: str,
    factory: Callable[..., Any],
    description: str | None,
    meta: Mapping[str, Any],
) -> Entry:
    """Validate a registration and read the factory's parameters from its signature."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise PluginError(
            f"plugin {plugin!r}: invalid {kind[:-1]} name {name!r} "
            "(lower-case letters, digits, '.', '_', '-')"
        )
    if not callable(factory):
        raise PluginError(f"plugin {plugin!r}: factory for {name!r} is not callable")
    if description is None:
        doc = inspect.getdoc(factory) or ""
        description = doc.strip().splitlines()[0] if doc.strip() else ""
    return Entry(kind, name, plugin, factory, description, _params(kind, factory), dict(meta))


def _params(kind: str, factory: Callable[..., Any]) -> tuple[Param, ...]:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return ()
    try:  # a class is registered as its own factory: its constructor's annotations
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except Exception:
        hints = {}
    skip = CONTEXT_PARAMS.get(kind, frozenset())
    out = []
    for p in signature.parameters.values():
        if p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            continue
        required = p.default is inspect.Parameter.empty
        out.append(Param(p.name, None if required else p.default, hints.get(p.name, p.annotation), required))
    return tuple(out)


def _coerce(text: str, annotation: Any, default: Any) -> Any:
    """Parse ``text`` as ``annotation`` (bool, int, float, str, Literal, tuple, ``X | None``)."""
    if annotation is inspect.Parameter.empty or isinstance(annotation, str):
        annotation = type(default) if default is not None else str
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if text.lower() == "none" and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(text, arg, None)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is typing.Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise ValueError(f"expected one of {', '.join(map(str, args))}")
    if origin in (tuple, list):
        parts = [t for t in re.split(r"[,x]", text) if t.strip()]
        item = args[0] if args else float
        values = [_coerce(t.strip(), item, None) for t in parts]
        if args and args[-1] is not Ellipsis and len(args) != len(values):
            raise ValueError(f"expected {len(args)} comma-separated values")
        return tuple(values) if origin is tuple else values
    if annotation is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if annotation is int:
        return int(text)
    if annotation is float:
        return float(text)
    return annotation(text) if callable(annotation) else text


def _type_name(annotation: Any, default: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return type(default).__name__ if default is not None else "any"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def _warn(plugin: str, problem: str) -> None:
    warnings.warn(f"recon plugin {plugin!r} skipped: {problem}", PluginLoadWarning, stacklevel=3)


_host: PluginHost | None = None
_lock = threading.Lock()


def plugin_host() -> PluginHost:
    """The process-wide plugin host (created on first use)."""
    global _host
    with _lock:
        if _host is None:
            _host = PluginHost()
        return _host


def reset_plugins() -> None:
    """Forget the loaded plugins; the next call loads them again (tests, long-lived processes)."""
    global _host
    with _lock:
        _host = None


def get_registry(kind: str) -> Registry:
    """The registry of ``kind``: ``operators``, ``noise_models``, ``networks``, ``dataset_readers`` …"""
    return plugin_host().registry(kind)


def list_plugins() -> list[PluginInfo]:
    return list(plugin_host().infos.values())
