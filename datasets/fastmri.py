"""fastMRI-layout HDF5 files: reader, writer and a lazy per-slice torch ``Dataset``.

Layout (https://github.com/facebookresearch/fastMRI, data README): ``kspace`` complex64
``(slices, [coils,] H, W)``, centred; target ``reconstruction_esc`` (single coil) or
``reconstruction_rss`` (multi coil) float32 ``(slices, h, w)``; optional ``mask`` ``(W,)`` on
undersampled (test) files; attributes such as ``acquisition``, ``max``, ``norm``, ``patient_id``.
Files written here load in ``deepinv.datasets.FastMRISliceDataset``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from recon.datasets.scan import (
    Scan,
    as_image_stack,
    as_kspace,
    as_mask_array,
    check_finite,
    check_shape,
)
from recon.errors import InputError
from recon.files import atomic_output

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
TARGET_KEYS = ("reconstruction_esc", "reconstruction_rss")


def _open(path: str | os.PathLike) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except OSError as exc:
        raise InputError(f"not a readable HDF5 file ({_short(exc)})", path) from None


def _short(exc: BaseException) -> str:
    return str(exc).split("(")[0].strip() or type(exc).__name__


def _dataset(f: h5py.File, key: str, path: str | os.PathLike) -> h5py.Dataset:
    item = f.get(key)
    if not isinstance(item, h5py.Dataset):
        raise InputError(f"{key!r} is not a dataset", path)
    return item


def _read(ds: h5py.Dataset, path: str | os.PathLike, index: Any = ()) -> np.ndarray:
    try:
        return ds[index]
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(
            f"cannot read {ds.name!r} ({_short(exc)}); the file may be truncated", path
        ) from None


def _kspace_dataset(f: h5py.File, path: str | os.PathLike) -> h5py.Dataset:
    if "kspace" not in f:
        raise InputError("no 'kspace' dataset (not a fastMRI-layout file)", path)
    ds = _dataset(f, "kspace", path)
    if ds.dtype.kind != "c":
        raise InputError(f"'kspace' must be complex, got {ds.dtype}", path)
    if ds.ndim not in (3, 4):
        raise InputError(f"'kspace' must have shape (slices, [coils,] H, W), got {ds.shape}", path)
    check_shape(ds.shape, path, "kspace")
    return ds


def _target_dataset(f: h5py.File, path: str | os.PathLike, slices: int) -> h5py.Dataset | None:
    for key in TARGET_KEYS:
        if key in f:
            ds = _dataset(f, key, path)
            if ds.ndim != 3 or ds.shape[0] != slices:
                raise InputError(f"{key!r} must have shape ({slices}, h, w), got {ds.shape}", path)
            check_shape(ds.shape, path, key)
            return ds
    return None


def _attrs(f: h5py.File) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in f.attrs.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, (str, int, float, bool)):
            out[key] = value
    return out


def read_fastmri(path: str | os.PathLike) -> Scan:
    """Read a whole fastMRI-layout volume, validating every dataset before it is loaded."""
    with _open(path) as f:
        ds = _kspace_dataset(f, path)
        target_ds = _target_dataset(f, path, ds.shape[0])
        kspace = as_kspace(_read(ds, path), path)
        images = None
        if target_ds is not None:
            images = as_image_stack(_read(target_ds, path), path, target_ds.name.strip("/"))
        mask = None
        if "mask" in f:
            mask = as_mask_array(_read(_dataset(f, "mask", path), path), kspace.shape[-2:], path)
        return Scan(str(path), kspace=kspace, images=images, mask=mask, attrs=_attrs(f))


def write_fastmri(
    path: str | os.PathLike,
    kspace: np.ndarray,
    target: np.ndarray | None = None,
    *,
    mask: np.ndarray | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write a fastMRI-layout file atomically (temporary name, then rename).

    The target goes to ``reconstruction_esc`` for single-coil and ``reconstruction_rss`` for
    multi-coil k-space; ``max`` and ``norm`` attributes are filled from it as fastMRI does.
    """
    path = Path(path)
    kspace = as_kspace(np.asarray(kspace), path)
    header: dict[str, Any] = {"acquisition": "unknown", "patient_id": path.stem}
    if target is not None:
        target = as_image_stack(np.asarray(target), path, "target")
        if target.shape[0] != kspace.shape[0]:
            raise InputError(f"target has {target.shape[0]} slices, kspace {kspace.shape[0]}", path)
        header.update(max=float(target.max()), norm=float(np.linalg.norm(target)))
    header.update(attrs or {})
    if mask is not None:
        mask = as_mask_array(mask, kspace.shape[-2:], path)
    with atomic_output(path) as temp, h5py.File(temp, "w") as f:
        f.create_dataset("kspace", data=kspace)
        if target is not None:
            f.create_dataset(TARGET_KEYS[0] if kspace.ndim == 3 else TARGET_KEYS[1], data=target)
        if mask is not None:
            f.create_dataset("mask", data=mask)
        for key, value in header.items():
            f.attrs[key] = value
    return path


class SliceDataset(torch.utils.data.Dataset):
    """Lazy per-slice access to fastMRI-layout files (a folder or a list of files).

    Only shapes are read at construction; each item opens its file and reads one slice, so the
    dataset works with ``DataLoader`` workers. An item is a dict with ``kspace`` (complex64
    ``(coils, H, W)``, coils = 1 for single coil), ``target`` (float32 ``(1, h, w)``, absent when the
    file has none), ``mask`` (when the file has one), ``fname`` and ``slice``.
    """

    def __init__(
        self,
        files: str | os.PathLike | Sequence[str | os.PathLike],
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ):
        if isinstance(files, (str, os.PathLike)):
            root = Path(files)
            if not root.is_dir():
                raise InputError("not a folder", root)
            paths = sorted(root.glob("*.h5"))
        else:
            paths = [Path(p) for p in files]
        if not paths:
            raise InputError("no .h5 files found", files if isinstance(files, (str, os.PathLike)) else None)
        self.transform = transform
        self.index: list[tuple[Path, int]] = []
        for path in paths:
            with _open(path) as f:
                slices = _kspace_dataset(f, path).shape[0]
                _target_dataset(f, path, slices)
            self.index.extend((path, i) for i in range(slices))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> Any:
        path, i = self.index[item]
        with _open(path) as f:
            kspace = _read(_kspace_dataset(f, path), path, i)
            kspace = kspace[None] if kspace.ndim == 2 else kspace
            check_finite(kspace, path, "kspace")
            sample: dict[str, Any] = {
                "kspace": torch.from_numpy(kspace.astype(np.complex64)),
                "fname": path.name,
                "slice": i,
            }
            target_ds = _target_dataset(f, path, len(f["kspace"]))
            if target_ds is not None:
                target = _read(target_ds, path, i).astype(np.float32)
                check_finite(target, path, target_ds.name)
                sample["target"] = torch.from_numpy(target)[None]
            if "mask" in f:
                mask = as_mask_array(_read(_dataset(f, "mask", path), path), kspace.shape[-2:], path)
                sample["mask"] = torch.from_numpy(mask)
        return self.transform(sample) if self.transform is not None else sample
