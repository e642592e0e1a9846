"""Tasks, patch data, the training loop and `recon search` end to end (small and fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recon import InputError
from recon.datasets.training import PatchDataset, image_pool, natural_images
from recon.nets import load_graph
from recon.reconstructors import Reconstructor
from recon.search import SearchConfig, build_supernet, run_search
from recon.sparsity import GroupL12, LinBreg, param_groups, sparse_init_
from recon.tasks import build_task, evaluate, image_scores
from recon.train import train


def test_patch_dataset_is_seeded_and_shaped():
    images = [np.arange(40 * 50, dtype=np.float32).reshape(40, 50), np.ones((20, 20), np.float32)]
    data = PatchDataset(images, patch=24, length=10, seed=3)
    assert data[4].shape == (1, 24, 24)
    torch.testing.assert_close(data[4], PatchDataset(images, patch=24, length=10, seed=3)[4])
    assert not torch.equal(data[4], PatchDataset(images, patch=24, length=10, seed=4)[4])
    with pytest.raises(InputError):
        PatchDataset(images, patch=4)


def test_natural_image_splits_are_disjoint():
    train, test = natural_images("train"), natural_images("test")
    assert len(test) == 2 and all(im.ndim == 2 and im.max() <= 1 for im in train + test)
    with pytest.raises(InputError):
        image_pool(["mr"], "holdout")
    with pytest.raises(InputError):
        image_pool(["video"], "train")


@pytest.mark.parametrize(
    "name,params",
    [("denoise", {"sigma": "0.2"}), ("deblur", {}), ("mri", {"acceleration": 4.0}), ("autoencoder", {})],
)
def test_tasks_simulate_seeded_measurements(name, params):
    task = build_task(name, **params)
    x = torch.rand(2, 1, 32, 32)
    a = task.simulate(x, torch.Generator().manual_seed(0))
    b = task.simulate(x, torch.Generator().manual_seed(0))
    assert torch.equal(a.y, b.y) and a.y.shape == (2, 1, 32, 32)
    torch.testing.assert_close(a.target.abs(), x)
    if name == "denoise":
        assert float((a.y - x).std()) == pytest.approx(0.2, rel=0.1)
    if name == "autoencoder":
        assert torch.equal(a.y, x)
    if name == "mri":
        assert a.y.is_complex() and a.target.is_complex() and task.init == "adjoint"
        torch.testing.assert_close(a.y, a.physics.A(a.target))  # noise-free measurements of the target
        assert float(a.target.angle().std()) > 0.1  # a smooth random phase was applied
    if name == "deblur":
        assert 0 < float((a.y - x).abs().mean()) < 0.5


def test_task_parameters_are_checked():
    with pytest.raises(InputError, match="no parameter"):
        build_task("denoise", width="3")
    with pytest.raises(InputError, match="not a float"):
        build_task("denoise", sigma="loud")
    with pytest.raises(InputError, match="unknown task"):
        build_task("colourise")


def test_training_reduces_the_loss_and_evaluate_scores():
    config = SearchConfig(widths=(4, 8), blocks=0)
    net = build_supernet(config)
    sparse_init_(
        net, density=1.0, grouping="element", gate_value=1.0, generator=torch.Generator().manual_seed(0)
    )
    model = Reconstructor(net, init="measurement")
    task = build_task("denoise", sigma=0.1)
    images = [np.full((48, 48), 0.5, np.float32)]
    optimizer = LinBreg(param_groups(net, GroupL12(1e-4)), lr=0.02, momentum=0.9)
    history = train(
        model,
        task,
        optimizer,
        PatchDataset(images, 32, 400),
        steps=60,
        batch=4,
        log_every=20,
        progress=False,
        on_log=lambda step: {"marker": step},
    )
    assert [h["step"] for h in history] == [20, 40, 60] and history[-1]["marker"] == 60
    assert history[-1]["loss"] < history[0]["loss"]
    scores = evaluate(model, task, images)
    assert set(scores) == {"psnr", "ssim", "psnr_input", "ssim_input"}
    assert scores["psnr_input"] == pytest.approx(10 * np.log10(0.5**2 / 0.1**2), abs=0.5)  # max 0.5, MSE 0.01
    assert scores["psnr"] > scores["psnr_input"]
    # per image: image i is measured with seed + i, so the second of two copies gets its own noise
    both = image_scores(model, task, images * 2)
    assert both["psnr"][0] == pytest.approx(scores["psnr"]) and both["psnr"][1] != both["psnr"][0]
    assert evaluate(model, task, images * 2)["psnr"] == pytest.approx(np.mean(both["psnr"]))


@pytest.mark.slow
@pytest.mark.parametrize("unshuffle", [1, 2])
def test_search_writes_architecture_plot_and_compact_model(tmp_path, monkeypatch, unshuffle):
    monkeypatch.setenv("RECON_DATA", str(tmp_path / "data"))
    config = SearchConfig(
        task="denoise",
        widths=(4, 8),
        unshuffle=unshuffle,
        steps=12,
        batch=2,
        patch=32,
        log_every=4,
        lam=0.01,
        lr=0.01,
        sources=("natural", "phantom"),
    )
    result = run_search(config, tmp_path / "out", progress=False)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["architecture.json", "growth.png", "model.json", "model.safetensors"]
    saved = json.loads((tmp_path / "out" / "architecture.json").read_text())
    assert saved["active_channels"] <= saved["total_channels"]
    assert saved["flops_compact"] <= saved["flops_supernet"]
    assert [h["step"] for h in saved["history"]] == [4, 8, 12]
    assert set(saved["layers_kept"]) | set(saved["layers_removed"]) == set(saved["convs"])
    assert result["test"]["psnr"] == saved["test"]["psnr"]
    small, meta = load_graph(tmp_path / "out" / "model")
    assert meta["task"]["task"] == "denoise"
    assert small(torch.rand(1, 1, 33, 30)).shape == (1, 1, 33, 30)
    assert small.spec.get("pixel_unshuffle", 1) == unshuffle


@pytest.mark.slow
def test_cli_search_autoencoder(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("RECON_DATA", str(tmp_path / "data"))
    result = cli(
        "search",
        "--task",
        "autoencoder",
        "--out",
        tmp_path / "ae",
        "--steps",
        "6",
        "--batch",
        "2",
        "--patch",
        "32",
        "--widths",
        "4,8",
        "--latent",
        "6",
        "--sources",
        "phantom,natural",
        "--device",
        "cpu",
    )
    assert result.code == 0, result.err
    report = result.json()
    architecture = json.loads((tmp_path / "ae" / "architecture.json").read_text())
    assert architecture["latent_channels"]["total"] == 6 and report["task"] == "autoencoder"
    assert cli("search", "--task", "denoise", "--out", tmp_path / "x", "--widths", "a,b").code == 2
    assert cli("search", "--task", "denoise", "--out", tmp_path / "x", "--unshuffle", "9").code == 2
    assert cli("search", "--task", "denoise", "--out", tmp_path / "x", "-p", "noise=1").code == 2
