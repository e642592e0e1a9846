"""Readers and writers: fastMRI h5 (with deepinv interop), images, NPY, DICOM, NIfTI; phantoms; builders."""

from __future__ import annotations

import json

import deepinv as dinv
import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from recon import InputError
from recon.datasets.builders import VOLUMES, build_dataset, simulate_kspace
from recon.datasets.fastmri import SliceDataset, read_fastmri, write_fastmri
from recon.datasets.phantom import PhantomDataset, phantom, smooth_phase
from recon.datasets.readers import read_scan
from recon.fft import ifft2c


def test_fastmri_round_trip(make_volume):
    path = make_volume(slices=3, size=(32, 24), attrs={"acquisition": "CORPD_FBK"})
    scan = read_fastmri(path)
    assert scan.kspace.shape == (3, 32, 24) and scan.kspace.dtype == np.complex64
    assert scan.images.shape == (3, 32, 24) and scan.images.dtype == np.float32
    assert scan.attrs["acquisition"] == "CORPD_FBK"
    assert scan.attrs["max"] == pytest.approx(float(scan.images.max()))
    assert scan.attrs["norm"] == pytest.approx(float(np.linalg.norm(scan.images)), rel=1e-6)
    # the target is the magnitude of the centred inverse FFT of the stored k-space
    magnitude = ifft2c(torch.from_numpy(scan.kspace).to(torch.complex128)).abs().numpy()
    np.testing.assert_allclose(scan.images, magnitude, rtol=1e-5, atol=1e-6)


def test_fastmri_mask_and_multicoil(tmp_path):
    kspace = (np.random.default_rng(0).standard_normal((2, 4, 16, 12)) + 0j).astype(np.complex64)
    mask = np.zeros(12, dtype=np.float32)
    mask[::3] = 1
    path = write_fastmri(tmp_path / "mc.h5", kspace * mask, np.ones((2, 16, 12)), mask=mask)
    with h5py.File(path) as f:
        assert "reconstruction_rss" in f and "reconstruction_esc" not in f
    scan = read_scan(path)
    assert scan.coils == 4 and scan.mask.shape == (12,)


def test_files_load_in_deepinv(tmp_path, make_volume):
    path = make_volume(slices=2, size=(32, 32))
    data = dinv.datasets.FastMRISliceDataset(path.parent)
    target, kspace = data[1]
    scan = read_fastmri(path)
    assert kspace.shape == (2, 32, 32) and target.shape == (1, 32, 32)
    np.testing.assert_allclose(target[0].numpy(), scan.images[1])
    np.testing.assert_allclose((kspace[0] + 1j * kspace[1]).numpy(), scan.kspace[1])
    # deepinv's MRI adjoint of the k-space reproduces the target (fastMRI convention, magnitude)
    image = dinv.physics.MRI(img_size=(32, 32)).A_adjoint(kspace[None], mag=True)
    np.testing.assert_allclose(image[0, 0].numpy(), scan.images[1], rtol=1e-4, atol=1e-5)


def test_slice_dataset_is_lazy_and_complete(tmp_path, make_volume):
    make_volume("a.h5", slices=2, size=(16, 16), seed=1)
    make_volume("b.h5", slices=3, size=(20, 16), seed=2)
    data = SliceDataset(tmp_path)
    assert len(data) == 5
    item = data[3]
    assert item["fname"] == "b.h5" and item["slice"] == 1
    assert item["kspace"].shape == (1, 20, 16) and item["kspace"].dtype == torch.complex64
    assert item["target"].shape == (1, 20, 16)
    loader = torch.utils.data.DataLoader(SliceDataset([tmp_path / "a.h5"]), batch_size=2)
    assert next(iter(loader))["kspace"].shape == (2, 1, 16, 16)


def test_image_readers(tmp_path):
    rng = np.random.default_rng(0)
    img8 = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    img16 = rng.integers(0, 65536, (20, 24), dtype=np.uint16)
    Image.fromarray(img8).save(tmp_path / "a.png")
    Image.fromarray(img16).save(tmp_path / "b.png")
    Image.fromarray(img16).save(tmp_path / "c.tif")
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "d.png")
    np.save(tmp_path / "e.npy", img16.astype(np.float64)[None].repeat(3, 0))
    np.save(tmp_path / "f.npy", (rng.standard_normal((2, 4, 8, 8)) * 1j).astype(np.complex64))
    a, b, c, d, e, f = (
        read_scan(tmp_path / n) for n in ("a.png", "b.png", "c.tif", "d.png", "e.npy", "f.npy")
    )
    np.testing.assert_array_equal(a.images[0], img8)
    np.testing.assert_array_equal(b.images[0], img16)
    np.testing.assert_array_equal(c.images[0], img16)
    assert a.attrs["bit_depth"] == 8 and b.attrs["bit_depth"] == 16
    np.testing.assert_allclose(d.images[0], rgb @ np.array([0.2125, 0.7154, 0.0721]), rtol=1e-5)
    assert e.images.shape == (3, 20, 24) and f.kspace.shape == (2, 4, 8, 8) and f.coils == 4
    (tmp_path / "misnamed.dat").write_bytes((tmp_path / "a.png").read_bytes())
    np.testing.assert_array_equal(read_scan(tmp_path / "misnamed.dat").images[0], img8)  # sniffed


def test_dicom_reader(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    pixels = np.arange(16 * 12, dtype=np.uint16).reshape(16, 12) * 7
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.PatientName = "Secret^Patient"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, -10
    ds.PixelData = pixels.tobytes()
    path = tmp_path / "slice.dcm"
    ds.save_as(path, enforce_file_format=True)
    scan = read_scan(path)
    np.testing.assert_allclose(scan.images[0], pixels * 2.0 - 10)
    assert scan.attrs["modality"] == "MR" and "Secret" not in json.dumps(scan.attrs)


def test_nifti_reader(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    volume = np.random.default_rng(0).random((16, 12, 5, 2)).astype(np.float32)
    path = tmp_path / "v.nii.gz"
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), path)
    scan = read_scan(path)
    assert scan.images.shape == (10, 16, 12)
    np.testing.assert_allclose(scan.images[3], volume[:, :, 3, 0])
    np.testing.assert_allclose(scan.images[7], volume[:, :, 2, 1])


def test_phantoms_are_seeded_and_bounded():
    a, b, c = phantom((64, 48), 3), phantom((64, 48), 3), phantom((64, 48), 4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() == pytest.approx(1.0)
    assert 0.05 < (a > 0).mean() < 0.95  # an object on a background
    state = np.random.get_state()[1].copy()
    data = PhantomDataset(5, (32, 32), seed=1)
    torch.testing.assert_close(data[2], PhantomDataset(5, (32, 32), seed=1)[2])
    assert np.array_equal(np.random.get_state()[1], state)
    phase = smooth_phase((64, 64), 0)
    assert np.abs(phase).max() <= np.pi + 1e-5
    assert np.abs(np.diff(phase, axis=0)).max() < 0.5  # smooth


def test_simulated_kspace_matches_target():
    magnitude = np.stack([phantom((32, 32), s) for s in range(2)])
    kspace, target = simulate_kspace(magnitude, 0)
    np.testing.assert_allclose(target, magnitude, atol=1e-5)
    assert np.abs(np.angle(ifft2c(torch.from_numpy(kspace)).numpy())[magnitude > 0.1]).max() > 0.1


def test_packaged_mr_builder_splits_by_subject(tmp_path):
    pytest.importorskip("dipy")
    manifest = build_dataset("packaged-mr", tmp_path / "mr")
    splits = {}
    for volume in manifest["volumes"]:
        splits.setdefault(volume["subject"], set()).add(volume["split"])
        assert (tmp_path / "mr" / volume["file"]).exists()
    assert all(len(s) == 1 for s in splits.values()), "a subject appears in two splits"
    assert {v["split"] for v in manifest["volumes"]} == {"train", "val", "test"}
    assert json.loads((tmp_path / "mr" / "manifest.json").read_text()) == manifest
    assert len(manifest["volumes"]) == len(VOLUMES)
    test_files = [tmp_path / "mr" / v["file"] for v in manifest["volumes"] if v["split"] == "test"]
    assert len(SliceDataset(test_files)) >= 10


def test_mni_template_source_is_training_only_at_two_scales_and_two_contrasts():
    pytest.importorskip("nilearn")
    from recon.datasets.builders import mni_template
    from recon.datasets.training import image_pool, template_slices

    assert mni_template("t1").shape == mni_template("gm").shape == (197, 233, 189)
    with pytest.raises(InputError, match="unknown MNI"):
        mni_template("csf")
    slices = template_slices()
    assert {(233, 197), (117, 99)} <= {s.shape for s in slices}  # axial cuts at 1 mm and at 2 mm
    assert all(s.dtype == np.float32 and s.min() >= 0 and s.max() == pytest.approx(1) for s in slices)
    t1, synthetic = slices[::2], slices[1::2]  # each cut as T1, then with a random contrast
    assert all(a.shape == b.shape for a, b in zip(t1, synthetic, strict=True))
    brain = [np.corrcoef(a[a > 0], b[a > 0])[0, 1] for a, b in zip(t1, synthetic, strict=True)]
    assert min(brain) < -0.5 and max(brain) > 0.5  # reversed (T2-like) and T1-like contrasts both occur
    axial = [s for s in t1 if s.shape == (233, 197)]
    assert 0 < len(axial) < 189 // 8 + 1  # every eighth, without the near-empty edge slices
    template_slices.cache_clear()
    assert all(np.array_equal(a, b) for a, b in zip(slices, template_slices(), strict=True))
    assert len(image_pool(["mni"], "train")) == len(slices)
    assert len(image_pool(["mr", "mni"], "val")) == len(image_pool(["mr"], "val"))
    with pytest.raises(InputError, match="no images"):
        image_pool(["mni"], "test")


def test_phantom_builder(tmp_path):
    manifest = build_dataset("phantoms", tmp_path / "ph", volumes=4, slices=2, size=32)
    assert [v["split"] for v in manifest["volumes"]] == ["train", "train", "val", "test"]
    with pytest.raises(InputError):
        build_dataset("phantoms", tmp_path / "x", volumes=2)
    with pytest.raises(InputError, match="unknown dataset"):
        build_dataset("imagenet", tmp_path / "y")
