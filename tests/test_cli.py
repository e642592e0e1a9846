"""The main job end to end, and the corpus of bad inputs: exit code 2, one line, nothing written."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from recon.datasets.builders import BUNDLED_SAMPLE
from recon.datasets.fastmri import read_fastmri


def _outputs(folder):
    return sorted(p.name for p in folder.iterdir())


def test_reconstruct_bundled_sample_tv_beats_zero_filled(cli, tmp_path):
    out = tmp_path / "out" / "demo.h5"
    out.parent.mkdir()
    result = cli("reconstruct", BUNDLED_SAMPLE, "--out", out, "--method", "tv", "--iterations", "60")
    assert result.code == 0, result.err
    report = result.json()
    metrics = report["metrics"]
    assert metrics["psnr"] > metrics["psnr_zero_filled"] + 1.0
    assert metrics["ssim"] > metrics["ssim_zero_filled"]
    assert _outputs(out.parent) == ["demo.h5", "demo.metrics.json", "demo.png"]
    with h5py.File(out) as f:
        assert f["reconstruction"].shape == (1, 256, 256) and f["reconstruction"].dtype == np.float32
        mask = f["mask"][()]
        assert mask.shape == (256,) and mask.mean() == pytest.approx(0.25, abs=0.05)
        assert f.attrs["method"] == "tv"
    assert json.loads(out.with_suffix(".metrics.json").read_text()) == metrics
    with Image.open(out.with_suffix(".png")) as png:
        assert png.format == "PNG" and png.size[0] > 600


def test_zero_filled_equals_adjoint_and_is_reproducible(cli, make_volume, tmp_path):
    path = make_volume(slices=2, size=(32, 32))
    first = cli("reconstruct", path, "--out", tmp_path / "a.h5", "--method", "zero-filled", "--seed", "3")
    again = cli("reconstruct", path, "--out", tmp_path / "b.h5", "--method", "zero-filled", "--seed", "3")
    assert first.code == again.code == 0
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        np.testing.assert_array_equal(a["reconstruction"][()], b["reconstruction"][()])
        np.testing.assert_array_equal(a["mask"][()], b["mask"][()])
    assert first.json()["metrics"]["psnr"] == first.json()["metrics"]["psnr_zero_filled"]


def test_file_mask_is_used_and_scale_is_preserved(cli, make_volume, tmp_path):
    full = read_fastmri(make_volume(slices=1, size=(32, 32)))
    mask = np.zeros(32, dtype=np.float32)
    mask[::2] = 1
    mask[12:20] = 1
    from recon.datasets.fastmri import write_fastmri

    scaled = write_fastmri(
        tmp_path / "under.h5", full.kspace * mask * 1000.0, full.images * 1000.0, mask=mask
    )
    result = cli("reconstruct", scaled, "--out", tmp_path / "r.h5", "--method", "zero-filled")
    assert result.code == 0, result.err
    with h5py.File(tmp_path / "r.h5") as f:
        np.testing.assert_array_equal(f["mask"][()], mask)
        assert 300 < float(f["reconstruction"][()].max()) < 3000  # the input's intensity scale


@pytest.mark.parametrize(
    "operator,extra",
    [("blur", ["--noise", "gaussian:sigma=0.01"]), ("denoise", []), ("mri", ["-p", "mask=gaussian"])],
)
def test_image_inputs_with_any_operator(cli, tmp_path, operator, extra):
    image = (np.random.default_rng(0).random((40, 36)) * 200).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "img.png")
    result = cli(
        "reconstruct",
        tmp_path / "img.png",
        "--operator",
        operator,
        "--out",
        tmp_path / "o.h5",
        "--iterations",
        "10",
        *extra,
    )
    assert result.code == 0, result.err
    assert result.json()["metrics"]["psnr"] > 10


def test_multicoil_kspace(cli, tmp_path):
    import torch

    from recon.datasets.fastmri import write_fastmri
    from recon.datasets.phantom import phantom
    from recon.fft import fft2c
    from recon.operators.mri import simulated_coil_maps

    image = torch.from_numpy(phantom((32, 32), 0)).to(torch.complex64)
    kspace = fft2c(simulated_coil_maps((32, 32), 4) * image)[None]
    rss = ifft_rss = torch.fft.ifft2(torch.fft.ifftshift(kspace, dim=(-2, -1)), norm="ortho")
    path = write_fastmri(tmp_path / "mc.h5", kspace.numpy(), image.abs()[None].numpy())
    del rss, ifft_rss
    result = cli("reconstruct", path, "--out", tmp_path / "mc_out.h5", "--method", "tv", "--iterations", "30")
    assert result.code == 0, result.err
    metrics = result.json()["metrics"]
    assert metrics["psnr"] > metrics["psnr_zero_filled"]


def test_console_script_and_module_entry_points(tmp_path):
    script = str(Path(sys.executable).with_name("recon"))
    for command in ([sys.executable, "-m", "recon", "--version"], [script, "--version"]):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        assert done.returncode == 0 and done.stdout.startswith("recon ")


def test_internal_error_exits_1_with_one_line(cli, monkeypatch, make_volume, tmp_path):
    from recon import reconstruct

    def explode(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(reconstruct, "reconstruct", explode)
    result = cli("reconstruct", make_volume(), "--out", tmp_path / "o.h5", "--method", "tv")
    assert result.code == 1
    assert result.err.count("\n") == 1 and "simulated bug" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "o.h5").exists()


# ----------------------------------------------------------------------------- the bad-input corpus


def _h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            if isinstance(value, tuple):  # (shape, dtype): declared but never written (no allocation)
                f.create_dataset(key, shape=value[0], dtype=value[1], chunks=True)
            else:
                f.create_dataset(key, data=value)
    return path


def _bad_files(folder, make_volume):
    good = make_volume("good.h5", slices=1, size=(16, 16))
    raw = good.read_bytes()
    ks = read_fastmri(good).kspace
    nan = ks.copy()
    nan[0, 3, 3] = np.nan
    inf = ks.copy()
    inf[0, 1, 1] = np.inf
    bad = {
        "truncated.h5": raw[: len(raw) // 2],
        "text.h5": b"this is not HDF5\n" * 20,
        "empty.h5": b"",
        "truncated.png": (lambda p: p.read_bytes()[:500])(_png(folder / "_src.png")),
        "garbage.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        "garbage.dcm": b"\x00" * 128 + b"DICM" + b"\x01" * 50,
        "garbage.nii": b"\x00" * 400,
        "unknown.xyz": b"hello",
    }
    paths = {}
    for name, content in bad.items():
        (folder / name).write_bytes(content)
        paths[name] = folder / name
    paths["no_kspace.h5"] = _h5(folder / "no_kspace.h5", reconstruction_esc=np.ones((1, 8, 8), np.float32))
    paths["rank1.h5"] = _h5(folder / "rank1.h5", kspace=np.ones(16, np.complex64))
    paths["rank5.h5"] = _h5(folder / "rank5.h5", kspace=np.ones((1, 1, 1, 8, 8), np.complex64))
    paths["real.h5"] = _h5(folder / "real.h5", kspace=np.ones((1, 8, 8), np.float32))
    paths["nan.h5"] = _h5(folder / "nan.h5", kspace=nan)
    paths["inf.h5"] = _h5(folder / "inf.h5", kspace=inf)
    paths["zero_size.h5"] = _h5(folder / "zero_size.h5", kspace=np.ones((0, 16, 16), np.complex64))
    paths["absurd.h5"] = _h5(folder / "absurd.h5", kspace=((1, 100_000, 100_000), np.complex64))
    paths["many_slices.h5"] = _h5(folder / "many_slices.h5", kspace=((100_000, 16, 16), np.complex64))
    paths["bad_mask.h5"] = _h5(folder / "bad_mask.h5", kspace=ks, mask=np.ones(7, np.float32))
    paths["empty_mask.h5"] = _h5(folder / "empty_mask.h5", kspace=ks, mask=np.zeros(16, np.float32))
    paths["target_mismatch.h5"] = _h5(
        folder / "target_mismatch.h5", kspace=ks, reconstruction_esc=np.ones((3, 16, 16), np.float32)
    )
    paths["target_nan.h5"] = _h5(
        folder / "target_nan.h5", kspace=ks, reconstruction_esc=np.full((1, 16, 16), np.nan, np.float32)
    )
    paths["zero_kspace.h5"] = _h5(folder / "zero_kspace.h5", kspace=np.zeros((1, 16, 16), np.complex64))
    paths["object.npy"] = folder / "object.npy"
    np.save(paths["object.npy"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    paths["vector.npy"] = folder / "vector.npy"
    np.save(paths["vector.npy"], np.ones(10))
    paths["nan.npy"] = folder / "nan.npy"
    np.save(paths["nan.npy"], np.full((8, 8), np.nan))
    paths["black.png"] = folder / "black.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(paths["black.png"])
    return good, paths


def _png(path):
    Image.fromarray((np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)).save(path)
    return path


BAD_FILES = [
    "truncated.h5",
    "text.h5",
    "empty.h5",
    "truncated.png",
    "garbage.png",
    "garbage.dcm",
    "garbage.nii",
    "unknown.xyz",
    "no_kspace.h5",
    "rank1.h5",
    "rank5.h5",
    "real.h5",
    "nan.h5",
    "inf.h5",
    "zero_size.h5",
    "absurd.h5",
    "many_slices.h5",
    "bad_mask.h5",
    "empty_mask.h5",
    "target_mismatch.h5",
    "target_nan.h5",
    "zero_kspace.h5",
    "object.npy",
    "vector.npy",
    "nan.npy",
    "missing.h5",
]


@pytest.fixture
def corpus(tmp_path, make_volume):
    folder = tmp_path / "in"
    folder.mkdir()
    good, paths = _bad_files(folder, make_volume)
    paths["missing.h5"] = folder / "missing.h5"
    out = tmp_path / "out"
    out.mkdir()
    return good, paths, out


def _assert_clean_error(result, out, *fragments):
    assert result.code == 2, (result.code, result.err)
    assert result.err.startswith("recon: error:") and result.err.count("\n") == 1, result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in result.err, result.err
    assert _outputs(out) == [], "a failed run left files behind"


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_files_exit_2_and_leave_nothing(cli, corpus, name):
    _, paths, out = corpus
    result = cli("reconstruct", paths[name], "--out", out / "r.h5")
    _assert_clean_error(result, out, paths[name].name)


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--operator", "nope"], "unknown operator 'nope'"),
        (["--acceleration", "0"], "acceleration"),
        (["--acceleration", "-2"], "acceleration"),
        (["--acceleration", "abc"], "invalid float"),
        (["--center-fraction", "1.5"], "center_fraction"),
        (["-p", "colour=red"], "no parameter 'colour'"),
        (["-p", "novalue"], "KEY=VALUE"),
        (["--noise", "gaussian:sigma=-1"], "sigma"),
        (["--noise", "loud"], "unknown noise model"),
        (["--method", "magic"], "invalid choice"),
        (["--tv-lambda", "-1"], "lambda"),
        (["--iterations", "0"], "iterations"),
        (["--operator", "blur"], "needs an MRI operator"),
        (
            ["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["--device", "tpu"],
            "device",
        ),
    ],
)
def test_bad_parameters_exit_2_and_leave_nothing(cli, corpus, args, fragment):
    good, _, out = corpus
    result = cli("reconstruct", good, "--out", out / "r.h5", *args)
    _assert_clean_error(result, out, fragment)


def test_bad_output_locations(cli, corpus, tmp_path):
    good, _, out = corpus
    _assert_clean_error(
        cli("reconstruct", good, "--out", tmp_path / "nowhere" / "r.h5"), out, "does not exist"
    )
    _assert_clean_error(cli("reconstruct", good, "--out", out / "r.png"), out, ".h5")


def test_bad_image_operator_parameters(cli, tmp_path):
    Image.fromarray(np.zeros((32, 32), np.uint8) + 100).save(tmp_path / "img.png")
    out = tmp_path / "out"
    out.mkdir()
    for args, fragment in (
        (["--operator", "blur", "-p", "sigma=0"], "sigma"),
        (["--operator", "blur", "-p", "kernel=zigzag"], "kernel"),
        (["--operator", "blur", "-p", "size=99"], "larger than the image"),
    ):
        _assert_clean_error(
            cli("reconstruct", tmp_path / "img.png", "--out", out / "r.h5", *args), out, fragment
        )


def test_folder_input_processes_every_file_and_reports_failures(cli, tmp_path, make_volume):
    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(2):
        make_volume(f"v{i}.h5", slices=1, size=(16, 16), seed=i).replace(folder / f"v{i}.h5")
    (folder / "broken.h5").write_bytes(b"not hdf5")
    (folder / "notes.txt").write_text("ignored: no reader claims .txt")
    result = cli("reconstruct", folder, "--out", tmp_path / "out", "--method", "zero-filled")
    assert result.code == 2
    assert [
        json.loads(line)["input"].endswith(f"v{i}.h5") for i, line in enumerate(result.out.splitlines())
    ] == [True, True]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".h5") == ["v0.h5", "v1.h5"]
    errors = [line for line in result.err.splitlines() if line.startswith("recon: error:")]
    assert len(errors) == 1 and "broken.h5" in errors[0]


@pytest.mark.parametrize(
    ("command", "function", "options"),
    [
        ("calibrate", "calibrate_model", ("coverage", "samples", "bins")),
        ("fit-variance", "fit_variance_model", ("steps", "batch", "seed")),
    ],
)
def test_cli_defaults_are_the_library_defaults(command, function, options):
    """The CLI keeps torch out of its import path, so it repeats these defaults as literals."""
    import inspect

    import recon.pipeline
    from recon.cli import build_parser

    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    defaults = subcommands.choices[command].parse_args(["--model", "m"])
    signature = inspect.signature(getattr(recon.pipeline, function)).parameters
    assert {o: getattr(defaults, o) for o in options} == {o: signature[o].default for o in options}
