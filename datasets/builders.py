"""``recon datasets build NAME --out DIR``: fastMRI-layout datasets from data that ships in packages.

Nothing is downloaded. ``packaged-mr`` turns the real MR volumes inside dipy and nibabel (listed in
:data:`VOLUMES`, with licences) into single-coil k-space: each magnitude slice is scaled by its
volume's maximum, given a smooth random phase (:func:`~recon.datasets.phantom.smooth_phase`) and
transformed with the centred orthonormal FFT. The split is by subject, so no anatomy is shared
between train, validation and test. ``phantoms`` writes procedural phantom volumes; ``sample``
writes the small file bundled with recon for ``make demo``.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.datasets.fastmri import write_fastmri
from recon.datasets.phantom import phantom, smooth_phase
from recon.errors import InputError
from recon.fft import fft2c, ifft2c
from recon.files import output_folder, staged_folder

BUNDLED_SAMPLE = Path(__file__).parent / "data" / "sample_t1_coronal.h5"


def _dipy(name: str) -> str:
    try:
        from dipy.data import get_fnames
    except ImportError:
        raise InputError("building from packaged MR data needs dipy: pip install 'recon[data]'") from None
    return str(get_fnames(name=name))


def _nibabel_file(name: str) -> str:
    try:
        from nibabel.testing import data_path
    except ImportError:
        raise InputError("building from packaged MR data needs nibabel: pip install 'recon[data]'") from None
    return str(Path(data_path) / name)


MNI_MAPS = {  # inside the nilearn package: the T1 image and the grey / white matter probability maps
    kind: f"datasets/data/mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz" for kind in ("t1", "gm", "wm")
}


def mni_template(kind: str = "t1") -> np.ndarray:
    """The MNI ICBM152 2009a symmetric template that nilearn ships, 197×233×189 voxels of 1 mm (uint8
    read as float32, 0–255): ``t1`` (the brain-extracted T1 image), ``gm`` / ``wm`` (grey and white
    matter probability maps).

    The template is the non-linear average of 152 adult brains (Fonov et al., NeuroImage 2011;
    copyright McConnell Brain Imaging Centre, redistributable with its notice). It is located through
    ``importlib`` without importing nilearn, whose import pulls in scikit-learn and pandas.
    """
    import importlib.util

    import nibabel

    if kind not in MNI_MAPS:
        raise InputError(f"unknown MNI template map {kind!r} (known: {', '.join(MNI_MAPS)})")
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the MNI template source needs nilearn: pip install 'recon[data]'")
    path = Path(next(iter(spec.submodule_search_locations))) / MNI_MAPS[kind]
    if not path.is_file():
        raise InputError("this nilearn has no bundled MNI152 2009a template", path)
    return np.asarray(nibabel.load(path).dataobj, dtype=np.float32)


def _nifti_slices(path: str, volume: int = 0) -> np.ndarray:
    import nibabel

    data = np.asarray(nibabel.load(path).dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., volume]
    return np.rot90(np.moveaxis(data, 2, 0), k=1, axes=(1, 2))


@dataclass(frozen=True)
class Volume:
    """A real MR volume shipped inside a package."""

    name: str
    subject: str
    split: str
    source: str
    license: str
    load: Callable[[], np.ndarray]  # (slices, H, W), any scale


VOLUMES: tuple[Volume, ...] = (
    Volume(
        "nibabel-epi-t0",
        "nibabel-example4d",
        "train",
        "nibabel tests/data/example4d.nii.gz, volume 0",
        "MIT",
        lambda: _nifti_slices(_nibabel_file("example4d.nii.gz"), 0),
    ),
    Volume(
        "nibabel-epi-t1",
        "nibabel-example4d",
        "train",
        "nibabel tests/data/example4d.nii.gz, volume 1",
        "MIT",
        lambda: _nifti_slices(_nibabel_file("example4d.nii.gz"), 1),
    ),
    Volume(
        "dipy-piesno",
        "dipy-piesno",
        "train",
        "dipy test_piesno",
        "BSD-3-Clause",
        lambda: _nifti_slices(_dipy("test_piesno")),
    ),
    Volume(
        "dipy-aniso",
        "dipy-aniso",
        "val",
        "dipy aniso_vox",
        "BSD-3-Clause",
        lambda: _nifti_slices(_dipy("aniso_vox")),
    ),
    Volume(
        "dipy-s0",
        "dipy-s0",
        "test",
        "dipy S0_10 (b0 slices)",
        "BSD-3-Clause",
        lambda: _nifti_slices(_dipy("S0_10")),
    ),
    Volume(
        "dipy-t1",
        "dipy-t1",
        "test",
        "dipy t1_coronal_slice",
        "BSD-3-Clause",
        lambda: np.load(_dipy("t1_coronal_slice"))[None].astype(np.float32),
    ),
)


def _seed_for(name: str, seed: int) -> tuple[int, int]:
    return (seed, zlib.crc32(name.encode()))


def simulate_kspace(magnitude: np.ndarray, seed: Any) -> tuple[np.ndarray, np.ndarray]:
    """Single-coil k-space of ``magnitude · exp(i φ)`` with a smooth random phase per slice.

    Returns ``(kspace complex64 (S, H, W), target float32 (S, H, W))``; the target is the magnitude
    of the inverse transform (equal to the input up to float32 rounding).
    """
    rng = np.random.default_rng(seed)
    size = magnitude.shape[-2:]
    phases = np.stack([smooth_phase(size, rng) for _ in range(magnitude.shape[0])])
    image = torch.from_numpy(magnitude.astype(np.float64) * np.exp(1j * phases))
    kspace = fft2c(image).to(torch.complex64)
    target = ifft2c(kspace.to(torch.complex128)).abs().float()
    return kspace.numpy(), target.numpy()


def _keep_signal(slices: np.ndarray, fraction: float = 0.3) -> np.ndarray:
    means = slices.reshape(slices.shape[0], -1).mean(axis=1)
    return slices[means >= fraction * means.max()]


def _write_volume(out: Path, path: Path, volume: Volume, slices: np.ndarray, seed: int) -> dict[str, Any]:
    """Scale ``slices`` to a maximum of 1, simulate k-space, write ``path``; return its manifest record."""
    magnitude = slices / max(float(slices.max()), 1e-12)
    kspace, target = simulate_kspace(magnitude, _seed_for(volume.name, seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    provenance = {"source": volume.source, "license": volume.license, "split": volume.split}
    write_fastmri(
        path,
        kspace,
        target,
        attrs={"acquisition": "simulated single-coil", "patient_id": volume.subject, **provenance},
    )
    return {
        "file": str(path.relative_to(out)),
        "subject": volume.subject,
        "slices": int(kspace.shape[0]),
        "shape": list(kspace.shape[-2:]),
        **provenance,
    }


def build_packaged_mr(out: Path, seed: int = 0) -> dict[str, Any]:
    """Real MR slices from dipy and nibabel, split train / val / test by subject."""
    records = [
        _write_volume(
            out,
            out / volume.split / f"{volume.name}.h5",
            volume,
            _keep_signal(np.ascontiguousarray(volume.load(), dtype=np.float32)),
            seed,
        )
        for volume in VOLUMES
    ]
    return {"name": "packaged-mr", "seed": seed, "volumes": records}


MAX_PHANTOM_VOXELS = 2**30  # 4 GiB of float32 targets (plus their k-space): far beyond any real use


def _check_phantom_options(volumes: int = 10, slices: int = 8, size: int = 128) -> None:
    if volumes < 3:
        raise InputError(f"phantoms needs at least 3 volumes (train, val, test), got {volumes}")
    if slices < 1 or not 16 <= size <= 4096:
        raise InputError(f"phantoms needs at least one slice and a size in [16, 4096], got {slices}, {size}")
    if volumes * slices * size * size > MAX_PHANTOM_VOXELS:
        raise InputError(f"{volumes} × {slices} slices of {size}² is more than {MAX_PHANTOM_VOXELS} voxels")


def build_phantoms(
    out: Path, seed: int = 0, volumes: int = 10, slices: int = 8, size: int = 128
) -> dict[str, Any]:
    """Procedural phantom volumes; the last 10% of volumes (at least one each) are val and test."""
    _check_phantom_options(volumes, slices, size)
    held = max(1, volumes // 10)
    records = []
    for v in range(volumes):
        split = "test" if v >= volumes - held else "val" if v >= volumes - 2 * held else "train"
        magnitude = np.stack([phantom((size, size), (seed, v, s)) for s in range(slices)])
        kspace, target = simulate_kspace(magnitude, (seed, v, 10**6))
        (out / split).mkdir(parents=True, exist_ok=True)
        path = out / split / f"phantom-{v:04d}.h5"
        write_fastmri(path, kspace, target, attrs={"acquisition": "simulated phantom", "split": split})
        records.append(
            {
                "file": str(path.relative_to(out)),
                "split": split,
                "slices": slices,
                "shape": [size, size],
                "source": "recon phantom",
                "license": "BSD-3-Clause",
            }
        )
    return {"name": "phantoms", "seed": seed, "volumes": records}


def build_sample(out: Path, seed: int = 0) -> dict[str, Any]:
    """The bundled demo file: the dipy T1 coronal slice (a test-split subject) as k-space."""
    volume = next(v for v in VOLUMES if v.name == "dipy-t1")
    record = _write_volume(out, out / BUNDLED_SAMPLE.name, volume, volume.load(), seed)
    return {"name": "sample", "seed": seed, "volumes": [record]}


BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "packaged-mr": build_packaged_mr,
    "phantoms": build_phantoms,
    "sample": build_sample,
}


def build_dataset(name: str, out: str | Path, seed: int = 0, **options: Any) -> dict[str, Any]:
    """Run the builder ``name`` into folder ``out`` and write ``manifest.json`` there."""
    if name not in BUILDERS:
        raise InputError(f"unknown dataset {name!r} (known: {', '.join(BUILDERS)})")
    with output_folder(out) as folder, staged_folder(folder) as stage:
        manifest = BUILDERS[name](stage, seed=seed, **options)
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
