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
        if final.is_dir():
            raise InputError("output path is a directory", final)
    for folder in {final.parent for final in finals}:
        check_writable(folder)
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


def check_writable(folder: str | os.PathLike) -> None:
    """``folder`` exists and a file can be created in it (a probe is made and removed), so that an
    unwritable output is found before any work is done."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("output folder does not exist", folder)
    probe = temporary_name(folder / "probe")
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"cannot write in this folder ({exc.strerror})", folder) from None


@contextmanager
def output_folder(path: str | os.PathLike) -> Iterator[Path]:
    """The run folder ``path``, created (with its parents) if needed and checked to be writable; if
    the block fails, the folders it created are removed again when nothing was written in them."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError("output exists and is not a folder", folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder ({exc.strerror})", folder) from None
    try:
        check_writable(folder)
        yield folder
    except BaseException:
        for made in created:  # innermost first
            try:
                made.rmdir()
            except OSError:  # not empty: what was written stays (checkpoints can be resumed)
                break
        raise


@contextmanager
def staged_folder(folder: Path) -> Iterator[Path]:
    """A hidden temporary folder inside ``folder`` to write into; on success its files move to
    the same places under ``folder`` (each one complete), on failure it is deleted."""
    stage = temporary_name(folder / "stage")
    stage.mkdir()
    try:
        yield stage
        for file in sorted(p for p in stage.rglob("*") if p.is_file()):
            target = folder / file.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


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
    check_replaceable(stem, document.get("format"))
    with atomic_outputs(description, weights) as (d_tmp, w_tmp):
        d_tmp.write_text(json.dumps(document, indent=1) + "\n")
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(w_tmp))
        shutil.copymode(d_tmp, w_tmp)  # safetensors writes 0600; give the pair the same (umask) mode
    return description, weights


def check_replaceable(stem: str | os.PathLike, fmt: str | None) -> None:
    """A pair is only written over a pair of the same format: never over a model when writing
    weight samples, or over a file that is not a recon pair at all."""
    description, weights = pair_paths(stem)
    if not description.exists() and not weights.exists():
        return
    try:
        existing = json.loads(description.read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        existing = None
    if existing is None or existing != fmt:
        raise InputError(f"would overwrite a file that is not a {fmt} file; choose another name", description)


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
