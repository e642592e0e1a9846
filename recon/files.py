"""Atomic outputs: write to a temporary name in the target folder, rename when everything worked.

A failure (bad input discovered late, a crash, Ctrl-C) removes the temporary files, so no half-written
output is ever left under the requested name.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recon.errors import InputError


def temporary_name(path: Path) -> Path:
    """A hidden sibling of ``path`` that keeps its suffix (h5py and PIL pick formats by suffix)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{''.join(path.suffixes)}")


@contextmanager
def atomic_outputs(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """Yield temporary paths for ``paths``; on success rename each onto its final name."""
    finals = [Path(p) for p in paths]
    for final in finals:
        if not final.parent.is_dir():
            raise InputError("output folder does not exist", final.parent)
        if final.is_dir():
            raise InputError("output path is a directory", final)
    temps = [temporary_name(final) for final in finals]
    try:
        yield temps
        for temp, final in zip(temps, finals, strict=True):
            if not temp.exists():
                raise RuntimeError(f"output {final} was not written")
        for temp, final in zip(temps, finals, strict=True):
            os.replace(temp, final)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Single-file form of :func:`atomic_outputs`."""
    with atomic_outputs(path) as (temp,):
        yield temp
