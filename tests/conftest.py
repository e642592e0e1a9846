"""Shared fixtures: small fastMRI-layout files, a CLI runner, a clean plugin host per test."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.cli import main
from recon.datasets.builders import simulate_kspace
from recon.datasets.fastmri import write_fastmri
from recon.datasets.phantom import phantom
from recon.registry import reset_plugins

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _fresh_plugins():
    reset_plugins()
    yield
    reset_plugins()


@pytest.fixture
def make_volume(tmp_path):
    """Write a small phantom volume as fully sampled single-coil k-space; returns its path."""

    def make(
        name: str = "vol.h5", slices: int = 2, size: tuple[int, int] = (32, 32), seed: int = 0, **kwargs
    ) -> Path:
        magnitude = np.stack([phantom(size, (seed, s)) for s in range(slices)])
        kspace, target = simulate_kspace(magnitude, seed)
        path = tmp_path / name
        write_fastmri(path, kspace, target, **kwargs)
        return path

    return make


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def cli(capsys):
    """Run ``recon`` in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
