"""Outputs that would destroy inputs, unwritable places, wrong types and absurd sizes: each gets one
line and exit code 2 before any work, and leaves no file or folder behind."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from recon.codec.entropy import Reader, Writer
from recon.errors import InputError
from recon.files import write_pair
from recon.modelio import bundled_models

UNWRITABLE = "/proc/recon-test"  # exists on Linux, and nothing can be created under it


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _clean_error(result, *fragments):
    assert result.code == 2, (result.code, result.err)
    assert result.err.startswith("recon: error:") and result.err.count("\n") == 1, result.err
    for fragment in fragments:
        assert fragment in result.err, result.err


def test_an_output_never_replaces_an_input(cli, make_volume, tmp_path):
    scan = make_volume("scan.h5", slices=1, size=(16, 16))
    before = _digest(scan)
    _clean_error(cli("reconstruct", scan, "--out", scan, "--method", "zero-filled"), "overwrite an input")
    _clean_error(cli("reconstruct", tmp_path / "." / "scan.h5", "--out", scan, "--method", "zero-filled"))
    image = tmp_path / "u8.npy"
    np.save(image, np.arange(64, dtype=np.uint8).reshape(8, 8))
    _clean_error(cli("compress", image, "--out", image), "overwrite an input")
    (tmp_path / "link.npy").symlink_to(image)
    _clean_error(cli("compress", image, "--out", tmp_path / "link.npy"), "overwrite an input")
    assert _digest(scan) == before and np.load(image).shape == (8, 8)


def test_the_preview_beside_a_reconstruction_never_replaces_its_input(cli, tmp_path):
    from PIL import Image

    Image.fromarray(np.full((16, 16), 100, np.uint8)).save(tmp_path / "scan.png")
    before = _digest(tmp_path / "scan.png")
    result = cli(
        "reconstruct", tmp_path / "scan.png", "--out", tmp_path / "scan.h5", "--method", "zero-filled"
    )
    _clean_error(result, "scan.png")
    assert _digest(tmp_path / "scan.png") == before and not (tmp_path / "scan.h5").exists()


def test_a_folder_whose_inputs_share_an_output_name_is_refused(cli, make_volume, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "x.npy", np.zeros((8, 8), np.uint8))
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "x.png")
    _clean_error(cli("compress", folder, "--out", tmp_path / "packed"), "x.npy and x.png")
    same = tmp_path / "same"
    same.mkdir()
    shutil.copy(make_volume("a.h5", slices=1, size=(16, 16)), same / "a.h5")
    _clean_error(cli("reconstruct", same, "--out", same, "--method", "zero-filled"), "overwrite an input")
    assert sorted(p.name for p in same.iterdir()) == ["a.h5"]


def test_a_pair_is_only_written_over_a_pair_of_the_same_format(tmp_path):
    tensors = {"w": torch.ones(2)}
    write_pair(tmp_path / "model", {"format": "a/1"}, tensors)
    write_pair(tmp_path / "model", {"format": "a/1"}, tensors)  # the same kind: replaced
    with pytest.raises(InputError, match="not a b/1 file"):
        write_pair(tmp_path / "model", {"format": "b/1"}, tensors)
    (tmp_path / "notes.json").write_text("my notes")
    with pytest.raises(InputError):
        write_pair(tmp_path / "notes", {"format": "a/1"}, tensors)
    assert (tmp_path / "notes.json").read_text() == "my notes"


def test_unwritable_outputs_fail_before_any_work(cli, make_volume, tmp_path):
    scan = make_volume("scan.h5", slices=1, size=(16, 16))
    image = tmp_path / "u8.npy"
    np.save(image, np.zeros((8, 8), np.uint8))
    _clean_error(cli("compress", image, "--out", f"{UNWRITABLE}.rcz"), "cannot write")
    _clean_error(cli("reconstruct", scan, "--out", f"{UNWRITABLE}.h5", "--method", "zero-filled"))
    for args in (
        ["train", "--recipe", "denoise-gauss", "--out", f"{UNWRITABLE}/run"],
        ["search", "--out", f"{UNWRITABLE}/search", "--steps", "1"],
        ["datasets", "build", "phantoms", "--out", f"{UNWRITABLE}/data"],
        ["train-codec", "--out", f"{UNWRITABLE}/codec", "--steps", "1"],
    ):
        _clean_error(cli(*args), "output folder")
    _clean_error(cli("train", "--recipe", "denoise-gauss", "--out", scan), "not a folder")


@pytest.mark.parametrize(
    "args",
    [
        ["search", "--seed", "-1"],
        ["search", "--blocks", "-1"],
        ["search", "--widths", "100000"],
        ["search", "--latent", "100000", "--task", "autoencoder"],
        ["search", "--batch", "100000"],
        ["search", "--patch", "100000"],
        ["search", "--lam", "-1"],
        ["search", "-p", "bogus=1"],
        ["datasets", "build", "phantoms", "--slices", "0"],
        ["datasets", "build", "phantoms", "--volumes", "100000000", "--slices", "1", "--size", "32"],
        ["train", "--recipe", "denoise-gauss", "--set", "seed=-1"],
        ["train", "--recipe", "denoise-gauss", "--set", "amp=maybe"],
        ["train", "--recipe", "denoise-gauss", "--set", "lr=1e400"],
        ["train", "--recipe", "denoise-gauss", "--set", "steps=99999999999999999999999"],
        ["train", "--recipe", "denoise-gauss", "--set", "batch=100000"],
        ["train", "--recipe", "denoise-gauss", "--set", "patch=100000"],
        ["train", "--recipe", "denoise-gauss", "--set", "task_params=[1]"],
        ["train", "--recipe", "denoise-gauss", "--set", "steps.x=1"],
        ["train", "--recipe", "denoise-gauss", "--set", "network_params.widths=abc", "--set", "steps=2"],
        ["train-codec", "--latent", "100000", "--steps", "1"],
        ["train-codec", "--seed", "-1", "--steps", "1"],
    ],
)
def test_bad_numbers_and_types_leave_no_folder(cli, tmp_path, args):
    out = tmp_path / "new" / "out"
    _clean_error(cli(*args, "--out", out))
    assert not (tmp_path / "new").exists()


def test_config_files_of_the_wrong_type(cli, tmp_path):
    (tmp_path / "typed.toml").write_text('steps = "abc"\n')
    _clean_error(cli("train", "--config", tmp_path / "typed.toml", "--out", tmp_path / "r"), "steps")
    _clean_error(cli("train", "--config", tmp_path, "--out", tmp_path / "r"), "config file")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "latest").write_text("checkpoint-0000001\n")
    (tmp_path / "r" / "checkpoint-0000001").mkdir()
    (tmp_path / "r" / "checkpoint-0000001" / "state.json").write_text("[]")
    for name in ("model.safetensors", "optimizer.safetensors"):
        save_file({"x": torch.zeros(1)}, str(tmp_path / "r" / "checkpoint-0000001" / name))
    result = cli("train", "--recipe", "denoise-gauss", "--out", tmp_path / "r", "--resume")
    _clean_error(result, "corrupt checkpoint")


def _model_copy(tmp_path, edit=None, weights=None):
    stem = bundled_models()["denoise-gauss"]
    document = json.loads(stem.with_name(stem.name + ".json").read_text())
    if edit:
        edit(document)
    (tmp_path / "m.json").write_text(json.dumps(document))
    tensors = load_file(str(stem.with_name(stem.name + ".safetensors")))
    if weights:
        tensors = {k: weights(v) for k, v in tensors.items()}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    return tmp_path / "m"


@pytest.mark.parametrize(
    "edit,weights,fragment",
    [
        (lambda d: d.update(metadata="notadict"), None, "malformed"),
        (lambda d: d["metadata"].update(task="zzz"), None, "malformed"),
        (lambda d: d["network"]["graph"].update(in_channels="two"), None, "malformed"),
        (lambda d: d["network"]["graph"].update(nodes="abc"), None, "malformed"),
        (lambda d: d["reconstructor"].update(unrolled=1e9), None, "unrolled"),
        (None, lambda t: torch.full_like(t, float("nan")), "not all finite"),
    ],
)
def test_malformed_models_are_refused(cli, tmp_path, edit, weights, fragment):
    from PIL import Image

    model = _model_copy(tmp_path, edit, weights)
    Image.fromarray(np.full((16, 16), 100, np.uint8)).save(tmp_path / "img.png")
    args = ["--operator", "denoise", "--noise", "gaussian:sigma=0.1", "--model", model]
    _clean_error(cli("reconstruct", tmp_path / "img.png", "--out", tmp_path / "r.h5", *args), fragment)
    assert not (tmp_path / "r.h5").exists()


def test_non_finite_reconstructions_and_ignored_options_are_errors(cli, make_volume, tmp_path):
    scan = make_volume("scan.h5", slices=1, size=(16, 16))
    out = tmp_path / "r.h5"
    noisy = ["--method", "zero-filled", "--noise", "gaussian:sigma=1e300"]
    _clean_error(cli("reconstruct", scan, "--out", out, *noisy), "not finite")
    _clean_error(cli("reconstruct", scan, "--out", out, "--method", "tv", "--model", "mri-4x"), "--model")
    assert not out.exists()


def test_float_images_round_trip_or_are_refused(cli, tmp_path):
    rng = np.random.default_rng(0)
    cases = {
        "f16": (rng.random((12, 10)) * 1.0).astype(np.float16),
        "tiny": (rng.random((12, 10)) * 1e-40).astype(np.float32),  # float32 subnormals
    }
    cases["f16"][0, 0] = 1.0  # the maximum: 65535 overflowed float16 before
    for name, image in cases.items():
        np.save(tmp_path / f"{name}.npy", image)
        assert cli("compress", tmp_path / f"{name}.npy", "--out", tmp_path / f"{name}.rcz").code == 0
        assert cli("decompress", tmp_path / f"{name}.rcz", "--out", tmp_path / f"{name}.out.npy").code == 0
        back = np.load(tmp_path / f"{name}.out.npy").astype(np.float64)
        top = float(image.max())
        assert np.abs(back - image.astype(np.float64)).max() <= top / 65535 * 0.51 + 2e-45
    np.save(tmp_path / "huge.npy", np.full((8, 8), 1e300))
    _clean_error(cli("compress", tmp_path / "huge.npy", "--out", tmp_path / "huge.rcz"), "float32")
    assert not (tmp_path / "huge.rcz").exists()


def test_a_payload_with_data_after_its_end_is_refused():
    writer = Writer()
    writer.uniform(np.arange(10), 4)
    payload = writer.bytes()
    reader = Reader(payload)
    assert reader.uniform(10, 4).tolist() == list(range(10))
    reader.finish()
    longer = Reader(payload + b"\x12\x34\x56\x78" * 3)
    longer.uniform(10, 4)
    with pytest.raises(InputError, match="after the end"):
        longer.finish()


def test_samples_are_never_written_over_their_model(cli, tmp_path):
    model = _model_copy(tmp_path)
    before = _digest(tmp_path / "m.json")
    result = cli(
        "sample", "--model", model, "--sampler", "mc-dropout:steps=1", "--samples", "2", "--out", model
    )
    _clean_error(result, "not a recon.samples/1 file")
    assert _digest(tmp_path / "m.json") == before
