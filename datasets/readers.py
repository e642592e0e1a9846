"""Built-in dataset-reader plugin, :func:`read_scan`, which picks a reader for a file, and
:func:`input_files`, the files of a folder that some reader claims.

A reader is chosen by content first (each reader's ``sniff`` looks at the first bytes), then by
file suffix, so a misnamed file is still read correctly and an unknown one gets a clear error.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from recon.datasets.fastmri import HDF5_MAGIC, read_fastmri
from recon.datasets.images import IMAGE_SUFFIXES, NPY_MAGIC, read_image, read_npy
from recon.datasets.medical import (
    DICOM_SUFFIXES,
    NIFTI_SUFFIXES,
    is_dicom,
    is_nifti,
    read_dicom,
    read_nifti,
)
from recon.datasets.scan import Scan
from recon.errors import InputError
from recon.hookspecs import Register, hookimpl
from recon.registry import get_registry

_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"\xff\xd8\xff", b"BM")


@hookimpl
def recon_register_dataset_readers(register: Register) -> None:
    register(
        "fastmri-h5", read_fastmri, suffixes=(".h5", ".hdf5"), sniff=lambda head: head.startswith(HDF5_MAGIC)
    )
    register("npy", read_npy, suffixes=(".npy",), sniff=lambda head: head.startswith(NPY_MAGIC))
    register("dicom", read_dicom, suffixes=DICOM_SUFFIXES, sniff=is_dicom)
    register("nifti", read_nifti, suffixes=NIFTI_SUFFIXES, sniff=is_nifti)
    register("image", read_image, suffixes=IMAGE_SUFFIXES, sniff=lambda head: head.startswith(_IMAGE_MAGIC))


def read_scan(path: str | os.PathLike, reader: str | None = None) -> Scan:
    """Read ``path`` with the named reader, or the one that recognises the file."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path)
    if not path.is_file():
        raise InputError("not a regular file", path)
    if path.stat().st_size == 0:
        raise InputError("file is empty", path)
    readers = get_registry("dataset_readers")
    if reader is not None:
        return readers.lookup(reader).factory(path)
    with open(path, "rb") as handle:
        head = handle.read(512)
    for entry in readers.values():
        sniff = entry.meta.get("sniff")
        if sniff is not None and sniff(head):
            return entry.factory(path)
    name = path.name.lower()
    for entry in readers.values():
        if any(name.endswith(s) for s in entry.meta.get("suffixes", ())):
            return entry.factory(path)
    raise InputError(f"unrecognised file format (supported: {' '.join(sorted(reader_suffixes()))})", path)


def reader_suffixes() -> set[str]:
    """Every file suffix a registered dataset reader claims."""
    return {s for e in get_registry("dataset_readers").values() for s in e.meta.get("suffixes", ())}


def input_files(folder: Path, suffixes: Iterable[str] | None = None) -> list[Path]:
    """Files in ``folder`` with one of ``suffixes`` (default: :func:`reader_suffixes`); hidden files
    skipped, none found is an :class:`InputError`."""
    suffixes = tuple(reader_suffixes() if suffixes is None else suffixes)
    files = [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and any(p.name.lower().endswith(s) for s in suffixes)
    ]
    if not files:
        raise InputError("no readable files in this folder", folder)
    return files
