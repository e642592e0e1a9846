"""Atomic outputs: write to a temporary name in the target folder, rename when everything worked.

A failure (bad input discovered late, a crash, Ctrl-C) removes the temporary files, so no half-written
output is ever left under the requested name. Also the JSON + safetensors file pairs that weight
samples and codecs are stored as.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
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


def pair_paths(stem: str | os.PathLike) -> tuple[Path, Path]:
    """``STEM.json`` and ``STEM.safetensors`` (the stem's own dots are kept)."""
    stem = Path(stem)
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".safetensors")


def write_pair(stem: str | os.PathLike, document: dict, tensors: dict) -> tuple[Path, Path]:
    """Write a JSON description and its tensors (safetensors, never pickle) atomically, together."""
    from safetensors.torch import save_file

    description, weights = pair_paths(stem)
    with atomic_outputs(description, weights) as (d_tmp, w_tmp):
        d_tmp.write_text(json.dumps(document, indent=1) + "\n")
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(w_tmp))
        shutil.copymode(d_tmp, w_tmp)  # safetensors writes 0600; give the pair the same (umask) mode
    return description, weights


def read_pair(stem: str | os.PathLike, fmt: str, what: str, missing: str) -> tuple[dict, dict]:
    """The JSON description (whose ``format`` must be ``fmt``) and tensors written by
    :func:`write_pair`; a missing, corrupt or foreign pair is an :class:`InputError` naming ``what``."""
    from safetensors.torch import load_file

    description, weights = pair_paths(stem)
    if not description.is_file() or not weights.is_file():
        raise InputError(missing, stem)
    try:
        document = json.loads(description.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"corrupt {what} description ({exc})", description) from None
    if not isinstance(document, dict) or document.get("format") != fmt:
        raise InputError(f"not a recon {what} file (expected format {fmt!r})", description)
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own types on corrupt files
        raise InputError(f"corrupt {what} ({exc})", weights) from None
    return document, tensors
