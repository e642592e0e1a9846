"""The bundled reconstruction models: found by name, the default method, better than their inputs on
real data they never saw in training, and the mri-4x weight samples work out of the box."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from skimage import data, img_as_float32

from recon.datasets.builders import BUNDLED_SAMPLE
from recon.modelio import bundled_models, load_model

NAMES = ("mri-4x", "deblur-gauss", "denoise-gauss")


def test_every_recipe_default_is_bundled_compact_and_loads():
    assert set(NAMES) <= set(bundled_models())
    for name in NAMES:
        model, metadata = load_model(name)
        assert metadata["recipe"] == name
        assert metadata["config"]["optimizer"] == "adabreg"  # sparse, compacted
        assert sum(p.numel() for p in model.net.parameters()) < 50_000


def test_learned_is_the_default_for_the_bundled_mri_sample(cli, tmp_path):
    out = tmp_path / "demo.h5"
    result = cli("reconstruct", BUNDLED_SAMPLE, "--out", out)
    assert result.code == 0, result.err
    metrics = result.json()["metrics"]
    assert metrics["psnr"] > metrics["psnr_zero_filled"] + 2.0
    with h5py.File(out) as f:
        assert f.attrs["method"] == "learned"


@pytest.mark.parametrize(
    "operator,noise,gain",
    [("denoise", "gaussian:sigma=0.1", 5.0), ("blur", "gaussian:sigma=0.01", 2.0)],
)
def test_image_models_beat_their_input_on_a_held_out_photograph(cli, tmp_path, operator, noise, gain):
    from PIL import Image

    camera = img_as_float32(data.camera())[128:384, 128:384]  # a test-split photograph
    Image.fromarray((camera * 255).round().astype(np.uint8)).save(tmp_path / "camera.png")
    params = ["-p", "sigma=2"] if operator == "blur" else []
    result = cli(
        "reconstruct",
        tmp_path / "camera.png",
        "--operator",
        operator,
        *params,
        "--noise",
        noise,
        "--out",
        tmp_path / "r.h5",
    )
    assert result.code == 0, result.err
    metrics = result.json()["metrics"]
    assert metrics["psnr"] > metrics["psnr_zero_filled"] + gain


@pytest.mark.slow
def test_bundled_mri_model_ships_calibrated_samples(cli, tmp_path):
    out = tmp_path / "u.h5"
    result = cli(
        "reconstruct", BUNDLED_SAMPLE, "--uncertainty", "mc-dropout", "--samples", "16", "--out", out
    )
    assert result.code == 0, result.err
    with h5py.File(out) as f:
        mean, std = f["reconstruction"][()], f["std"][()]
        lower, upper, hallucination = f["lower"][()], f["upper"][()], f["hallucination"][()]
    assert mean.shape == std.shape == lower.shape == upper.shape == hallucination.shape == (1, 256, 256)
    assert (
        (std >= 0).all() and std.max() > 0 and (lower <= mean + 1e-6).all() and (upper >= mean - 1e-6).all()
    )
    assert hallucination.max() > 0
    metrics = result.json()["metrics"]
    assert 0.5 < metrics["coverage"] <= 1.0  # calibrated for 0.9 on the validation split
