"""A third-party plugin, pip-installed from examples/, is discovered from outside and passes the
operator suite; a reconstruction runs with its operator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recon.datasets.phantom import phantom

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "recon-example-plugin"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
    )
    return {**os.environ, "PYTHONPATH": str(site), "RECON_DISABLE_PLUGINS": ""}


def _run(args, env, **kwargs):
    return subprocess.run(args, env=env, capture_output=True, text=True, check=False, **kwargs)


def test_plugin_is_listed(plugin_env):
    done = _run([sys.executable, "-m", "recon", "operators", "--json"], plugin_env)
    assert done.returncode == 0, done.stderr
    entry = next(e for e in json.loads(done.stdout) if e["name"] == "inpainting")
    assert entry["plugin"] == "example-inpainting"
    assert set(entry["params"]) == {"keep", "seed"}
    plugins = json.loads(_run([sys.executable, "-m", "recon", "plugins", "--json"], plugin_env).stdout)
    assert any(
        p["name"] == "example-inpainting" and p["source"].startswith("recon-example-plugin") for p in plugins
    )


def test_plugin_passes_the_operator_suite(plugin_env):
    done = _run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_operators.py",
            "-k",
            "inpainting",
        ],
        plugin_env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_reconstruct_with_plugin_operator(plugin_env, tmp_path):
    image = (phantom((48, 48), 0) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "img.png")
    done = _run(
        [
            sys.executable,
            "-m",
            "recon",
            "reconstruct",
            str(tmp_path / "img.png"),
            "--operator",
            "inpainting",
            "-p",
            "keep=0.5",
            "--out",
            str(tmp_path / "o.h5"),
            "--iterations",
            "20",
        ],
        plugin_env,
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)["metrics"]
    assert metrics["psnr"] > metrics["psnr_zero_filled"] + 1  # TV fills in missing pixels


def test_plugin_can_be_disabled(plugin_env):
    env = {**plugin_env, "RECON_DISABLE_PLUGINS": "example-inpainting"}
    names = [
        e["name"]
        for e in json.loads(_run([sys.executable, "-m", "recon", "operators", "--json"], env).stdout)
    ]
    assert "inpainting" not in names and "mri" in names
