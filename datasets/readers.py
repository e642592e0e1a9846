"""Built-in dataset-reader plugin and :func:`read_scan`, which picks a reader for a file.

A reader is chosen by content first (each reader's ``sniff`` looks at the first bytes), then by
file suffix, so a misnamed file is still read correctly and an unknown one gets a clear error.
"""

from __future__ import annotations

import os
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
    formats = sorted({s for e in readers.values() for s in e.meta.get("suffixes", ())})
    raise InputError(f"unrecognised file format (supported: {' '.join(formats)})", path)
