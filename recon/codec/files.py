"""Image files in and out of the codec: NPY, PNG, TIFF (8/16-bit), DICOM pixel data and fastMRI-layout
h5 image datasets; one file or a folder.

Integer images are coded exactly. Float images (fastMRI's ``reconstruction_rss`` / ``_esc``, float
NPY) are first quantised to 16 bits, ``round(x / scale)`` with ``scale = max / 65535``, and come back
as float32 ``integers × scale``: "lossless" is then exact for the 16-bit quantised values, with an
error of at most ``scale / 2``. Outputs are written under a temporary name and renamed at the end.
(The readers of :mod:`recon.datasets` are not used here: they return float grayscale stacks, and a
lossless codec needs the stored integers and channels as they are.)
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from recon.codec.codec import Quality, compress, decompress_with_header
from recon.codec.container import MAX_SCALE, MIN_SCALE
from recon.codec.model import CodecModel
from recon.errors import InputError
from recon.files import atomic_outputs

SUFFIXES = {".npy": "npy", ".png": "png", ".tif": "tiff", ".tiff": "tiff", ".dcm": "dicom", ".h5": "h5"}
EXTENSION = {"npy": ".npy", "png": ".png", "tiff": ".tif", "dicom": ".dcm", "h5": ".h5"}
H5_KEYS = ("reconstruction_rss", "reconstruction_esc", "target", "image")


def kind_of(path: Path) -> str:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InputError(
            f"unsupported file type {path.suffix!r} (known: {', '.join(sorted(SUFFIXES))})", path
        )
    return kind


def _as_integers(array: np.ndarray, path: Path) -> tuple[np.ndarray, float]:
    """Integer images as they are; float images quantised to uint16 with their scale."""
    if array.size == 0 or array.ndim not in (2, 3):
        raise InputError(f"expected a non-empty 2-D image or 3-D stack, got shape {array.shape}", path)
    if array.dtype in (np.uint8, np.uint16):
        return array, 0.0
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 65535:
            raise InputError("integer pixels must lie in [0, 65535] (signed data is not supported)", path)
        return array.astype(np.uint16), 0.0
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"unsupported pixel type {array.dtype}", path)
    if not np.isfinite(array).all():
        raise InputError("image contains NaN or infinite values", path)
    if array.min() < 0:
        raise InputError("float images must be non-negative (magnitude images)", path)
    top = float(array.max())
    scale = top / 65535 if top > 0 else 1.0
    if not MIN_SCALE <= scale <= MAX_SCALE:
        raise InputError(f"float pixels up to {top:g} are outside the range the codec stores (float32)", path)
    return np.round(array.astype(np.float64) / scale).astype(np.uint16), scale


def read_array(path: str | Path, dataset: str | None = None) -> tuple[np.ndarray, str, float]:
    """``(integer array, kind, scale)`` of an image file (``scale`` 0 for integer data)."""
    path = Path(path)
    kind = kind_of(path)
    if not path.is_file():
        raise InputError("no such file", path)
    try:
        if kind == "npy":
            array = np.load(path, allow_pickle=False)
        elif kind in ("png", "tiff"):
            import imagecodecs

            array = imagecodecs.imread(str(path), codec=kind)  # that decoder only: one error message
        elif kind == "dicom":
            import pydicom

            array = pydicom.dcmread(path).pixel_array
        else:
            with h5py.File(path, "r") as f:
                key = dataset or next((k for k in H5_KEYS if k in f), None)
                if key is None or key not in f or not isinstance(f[key], h5py.Dataset):
                    raise InputError(f"no image dataset {dataset or ' / '.join(H5_KEYS)} in this file", path)
                array = f[key][()]
    except InputError:
        raise
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc).strip() else ""
        reason = "".join(c if c.isprintable() else "?" for c in reason)[:200]
        raise InputError(f"cannot read {kind} image ({type(exc).__name__}: {reason})", path) from None
    array, scale = _as_integers(np.asarray(array), path)
    return array, kind, scale


def write_array(path: Path, array: np.ndarray, kind: str, dataset: str = "reconstruction_rss") -> None:
    """Write ``array`` as ``kind`` to ``path`` (atomically)."""
    with atomic_outputs(path) as (tmp,):
        if kind == "npy":
            with open(tmp, "wb") as f:
                np.save(f, array, allow_pickle=False)
        elif kind in ("png", "tiff"):
            import imagecodecs

            data = imagecodecs.png_encode(array) if kind == "png" else imagecodecs.tiff_encode(array)
            tmp.write_bytes(data)
        elif kind == "dicom":
            _write_dicom(tmp, array)
        else:
            with h5py.File(tmp, "w") as f:
                f.create_dataset(dataset, data=array)


def _write_dicom(path: Path, array: np.ndarray) -> None:
    """A minimal Secondary Capture DICOM holding the pixel data (metadata is not carried over)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
        raise InputError("DICOM output takes one 2-D integer image")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = array.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = array.dtype.itemsize * 8
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    ds.PixelData = np.ascontiguousarray(array).tobytes()
    ds.save_as(path, enforce_file_format=True)


def compress_file(
    source: Path,
    out: Path,
    model: CodecModel,
    quality: Quality,
    dataset: str | None = None,
    fast: bool = False,
) -> dict[str, float | str]:
    """Compress one image file into ``out`` (.rcz); returns a summary with the measured bpp."""
    array, kind, scale = read_array(source, dataset)
    data = compress(array, model, quality, kind=kind, scale=scale, fast=fast)
    with atomic_outputs(out) as (tmp,):
        tmp.write_bytes(data)
    return {"input": str(source), "output": str(out), "bytes": len(data), "bpp": 8 * len(data) / array.size}


def decompress_file(source: Path, out: Path, model: CodecModel, keep_kind: bool = False) -> dict[str, str]:
    """Decode one ``.rcz`` file into ``out``; with ``keep_kind``, ``out`` is a stem that gets the suffix
    of the file type the data came from."""
    if not source.is_file():
        raise InputError("no such file", source)
    array, header = decompress_with_header(source.read_bytes(), model)
    if keep_kind:
        out = out.with_name(out.name + EXTENSION[header.kind])
    kind = kind_of(out)
    if header.scale:
        array = (array * header.scale).astype(np.float32)  # float64 product, rounded once
        if kind in ("png", "tiff", "dicom"):
            raise InputError(f"float data (from {header.kind}) cannot be written as {kind}; use .npy or .h5")
    write_array(out, array, kind)
    return {"input": str(source), "output": str(out)}
