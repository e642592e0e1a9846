"""The plugin host: built-ins, entry points, broken and conflicting plugins, disabling, listing."""

from __future__ import annotations

import sys
import textwrap
from importlib import metadata
from typing import Literal

import pytest

from recon import registry
from recon.errors import InputError, PluginError
from recon.registry import PluginHost, PluginLoadWarning, get_registry, make_entry

GOOD = '''
from recon import hookimpl

def ramp(img_size, slope: float = 1.0):
    """A test operator."""
    return ("ramp", img_size, slope)

@hookimpl
def recon_register_operators(register):
    register("ramp", ramp)
'''
BROKEN = "raise ImportError('missing dependency xyz')\n"
MISSPELT = """
def recon_register_operator(register):
    register("typo", lambda img_size: None)
"""
CONFLICT = """
from recon import hookimpl

@hookimpl
def recon_register_operators(register):
    register("mri", lambda img_size: None)
"""
FAILING_HOOK = """
from recon import hookimpl

@hookimpl
def recon_register_operators(register):
    register("half", lambda img_size: None)
    raise RuntimeError("boom")
"""


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """Install modules as entry points: ``plugins({"name": source, ...})``."""

    def install(sources: dict[str, str]) -> None:
        eps = []
        for name, source in sources.items():
            module = f"recon_test_{name}"
            (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
            eps.append(metadata.EntryPoint(name=name, value=module, group="recon"))
            sys.modules.pop(module, None)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.setattr(registry.metadata, "entry_points", lambda group: eps if group == "recon" else [])

    return install


def test_builtins_registered():
    ops = get_registry("operators")
    assert {"mri", "mri-multicoil", "blur", "denoise"} <= set(ops)
    assert ops["mri"].plugin == "recon.operators"
    assert {p.name for p in ops["mri"].params} >= {"acceleration", "center_fraction", "mask", "seed"}
    assert "img_size" not in {p.name for p in ops["mri"].params}
    assert set(get_registry("networks")) >= {"unet", "dncnn"}
    assert set(get_registry("dataset_readers")) >= {"fastmri-h5", "dicom", "nifti", "image", "npy"}


def test_entry_point_plugin_is_loaded(plugins):
    plugins({"good": GOOD})
    host = PluginHost()
    entry = host.registry("operators")["ramp"]
    assert entry.plugin == "good"
    assert entry.description == "A test operator."
    assert entry.build(img_size=(4, 4), slope=2.0) == ("ramp", (4, 4), 2.0)
    assert host.infos["good"].hooks == ("recon_register_operators",)


def test_broken_plugin_warns_and_the_rest_works(plugins):
    plugins({"broken": BROKEN, "good": GOOD})
    with pytest.warns(PluginLoadWarning, match="'broken'.*missing dependency xyz"):
        host = PluginHost()
    assert "broken" not in host.infos
    assert {"ramp", "mri"} <= set(host.registry("operators"))


def test_misspelt_hook_is_caught(plugins):
    plugins({"misspelt": MISSPELT})
    with pytest.warns(PluginLoadWarning, match="'misspelt'.*recon_register_operator"):
        host = PluginHost()
    assert "misspelt" not in host.infos
    assert "typo" not in host.registry("operators")


def test_conflicting_names_name_both_plugins(plugins):
    plugins({"clash": CONFLICT})
    host = PluginHost()
    with pytest.raises(PluginError, match=r"'recon\.operators'.*'clash'"):
        host.registry("operators")


def test_failing_hook_is_skipped_without_partial_entries(plugins):
    plugins({"failing": FAILING_HOOK})
    with pytest.warns(PluginLoadWarning, match="'failing'.*boom"):
        ops = PluginHost().registry("operators")
    assert "half" not in ops and "mri" in ops


@pytest.mark.parametrize(("env", "expected"), [("all", False), ("good", False), ("other", True)])
def test_disable_entry_points(plugins, monkeypatch, env, expected):
    plugins({"good": GOOD})
    monkeypatch.setenv("RECON_DISABLE_PLUGINS", env)
    assert ("ramp" in PluginHost().registry("operators")) is expected


def test_disable_builtin_by_name(monkeypatch):
    monkeypatch.setenv("RECON_DISABLE_PLUGINS", "recon.operators")
    host = PluginHost()
    assert "mri" not in host.registry("operators")
    assert "unet" in host.registry("networks")


def test_unknown_names_are_input_errors():
    with pytest.raises(InputError, match="unknown operator 'mrri'; did you mean 'mri'"):
        get_registry("operators").lookup("mrri")
    with pytest.raises(InputError, match="no parameter 'speed'"):
        get_registry("operators")["mri"].build(img_size=(8, 8), speed=3)
    with pytest.raises(InputError, match="unknown registry kind"):
        get_registry("gadgets")


def test_invalid_registration_names():
    with pytest.raises(PluginError, match="invalid"):
        make_entry("operators", "Bad Name", "p", lambda: None, None, {})
    with pytest.raises(PluginError, match="not callable"):
        make_entry("operators", "ok", "p", 42, None, {})


def _typed(
    mode: Literal["a", "b"] = "a",
    size: tuple[int, int] = (1, 1),
    flag: bool = False,
    level: float | None = None,
    count: int = 3,
) -> None:
    """Typed factory."""


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("mode", "b", "b"),
        ("size", "3,4", (3, 4)),
        ("size", "5x6", (5, 6)),
        ("flag", "yes", True),
        ("flag", "0", False),
        ("level", "none", None),
        ("level", "0.5", 0.5),
        ("count", "7", 7),
    ],
)
def test_parameter_parsing(name, text, value):
    entry = make_entry("operators", "typed", "p", _typed, None, {})
    assert entry.param(name).parse(text) == value


@pytest.mark.parametrize(
    ("name", "text"), [("mode", "c"), ("size", "1,2,3"), ("flag", "maybe"), ("count", "2.5"), ("level", "x")]
)
def test_parameter_parsing_errors(name, text):
    entry = make_entry("operators", "typed", "p", _typed, None, {})
    with pytest.raises(InputError, match=name):
        entry.param(name).parse(text)


def test_cli_listings(cli):
    result = cli("operators", "--json")
    assert result.code == 0
    entries = result.json()
    mri = next(e for e in entries if e["name"] == "mri")
    assert mri["plugin"] == "recon.operators" and mri["description"]
    assert mri["params"]["acceleration"] == {"type": "float", "default": 4.0, "required": False}
    plugins = cli("plugins", "--json").json()
    assert {"recon.operators", "recon.networks", "recon.datasets.readers"} <= {p["name"] for p in plugins}
    assert all(p["source"] == "built-in" for p in plugins if p["name"].startswith("recon."))
    text = cli("list", "noise_models")
    assert text.code == 0 and "rician" in text.out
    assert cli("list", "gadgets").code == 2
