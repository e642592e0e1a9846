"""DICOM (pydicom) and NIfTI (nibabel) readers. Both packages are optional extras
(``pip install recon[dicom]`` / ``recon[nifti]``); a missing one gets a clear message.

No patient-identifying DICOM field is copied into ``attrs``.
"""

from __future__ import annotations

import math
import os

import numpy as np

from recon.datasets.scan import Scan, as_image_stack, check_shape
from recon.errors import InputError

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_dicom(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def is_nifti(head: bytes) -> bool:
    return len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00", b"n+2\x00", b"ni2\x00")


def read_dicom(path: str | os.PathLike) -> Scan:
    """Read a DICOM image (single or multi-frame); rescale slope/intercept are applied."""
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
        from pydicom.pixels import apply_modality_lut
    except ImportError:
        raise InputError("reading DICOM needs pydicom: pip install 'recon[dicom]'", path) from None
    try:
        ds = pydicom.dcmread(path)
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise InputError(f"not a readable DICOM file ({exc})", path) from None
    if "PixelData" not in ds:
        raise InputError("DICOM file has no pixel data", path)
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    check_shape((frames, rows, cols), path, "DICOM pixel data")
    try:
        pixels = apply_modality_lut(ds.pixel_array, ds)
    except Exception as exc:  # pydicom raises many types for truncated or unsupported pixel data
        raise InputError(f"DICOM pixel data cannot be decoded ({exc})", path) from None
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4) and ds.get("SamplesPerPixel", 1) > 1:
        pixels = pixels[..., :3] @ np.array([0.2125, 0.7154, 0.0721])
    attrs = {"modality": str(ds.get("Modality", "")), "bit_depth": int(ds.get("BitsStored", 16))}
    return Scan(str(path), images=as_image_stack(np.asarray(pixels), path, "DICOM pixel data"), attrs=attrs)


def read_nifti(path: str | os.PathLike) -> Scan:
    """Read a NIfTI volume; slices run along the third axis (then the fourth, for 4D series)."""
    try:
        import nibabel
        from nibabel.filebasedimages import ImageFileError
    except ImportError:
        raise InputError("reading NIfTI needs nibabel: pip install 'recon[nifti]'", path) from None
    try:
        image = nibabel.load(path)
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (ImageFileError, OSError, ValueError, EOFError) as exc:
        raise InputError(f"not a readable NIfTI file ({exc})", path) from None
    shape = tuple(int(s) for s in image.shape)
    if not 2 <= len(shape) <= 4:
        raise InputError(f"NIfTI volume must have 2 to 4 dimensions, got shape {shape}", path)
    stack = (1 if len(shape) == 2 else math.prod(shape[2:]), shape[0], shape[1])
    check_shape(stack, path, "NIfTI volume")
    try:
        data = np.asarray(image.dataobj, dtype=np.float32)
    except (OSError, ValueError, EOFError, TypeError) as exc:
        raise InputError(f"NIfTI data cannot be read ({exc}); the file may be truncated", path) from None
    slices = data.reshape(shape[0], shape[1], -1, order="F").transpose(2, 0, 1)
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    return Scan(
        str(path), images=as_image_stack(slices, path, "NIfTI volume"), attrs={"voxel_size": str(zooms)}
    )
