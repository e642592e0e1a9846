"""recon.allocator: freed buffers are reused without page faults; user settings are respected."""

import ctypes
import json
import os
import subprocess
import sys

import pytest

GLIBC = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
pytestmark = pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")

# A network pass in miniature: ten 4 MB buffers alive together, all freed at the end, five times.
SCRIPT = """
import json, resource, sys
import numpy as np
from recon.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffers = [np.ones(1 << 20, dtype=np.float32) for _ in range(10)]
    del buffers
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _run(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_retained_memory_is_reused_without_page_faults() -> None:
    default, retained = _run("default"), _run("retain")
    assert retained["applied"] is True
    pages = 10 * (4 << 20) // 4096  # the ten buffers' pages
    # glibc's adaptive thresholds hand back fresh pages on each pass (how many varies: 50-100%)
    assert min(default["faults"][2:]) > pages // 10
    assert max(retained["faults"][2:]) < pages // 20  # the heap's pages are reused


def test_user_allocator_settings_are_left_alone() -> None:
    assert _run("retain", MALLOC_TRIM_THRESHOLD_="1000000")["applied"] is False
