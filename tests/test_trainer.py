"""recon train: configs, exact resume from atomic checkpoints, model files, training terms, hooks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from recon import InputError, get_registry
from recon.modelio import load_model, save_model
from recon.plugins.distillation import Distillation
from recon.registry import plugin_host
from recon.terms import build_terms
from recon.trainer import RECIPES, Trainer, load_config

TINY = {
    "network_params": '{"widths": [4, 8], "blocks": 1}',
    "patch": "32",
    "batch": "2",
    "steps": "8",
    "log_every": "2",
    "val_every": "4",
    "checkpoint_every": "4",
    "val_images": "1",
    "sources": "natural,phantom",
    "warmup": "2",  # over by the half-way checkpoint (step 4), so the cosine's closed form holds there
}


@pytest.fixture(autouse=True)
def _data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RECON_DATA", str(tmp_path / "data"))


def _config(recipe="denoise-gauss", **extra):
    return load_config(recipe, overrides={**TINY, **extra})


def test_config_layers_and_types(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("lr = 0.0005\nsteps = 12\n[task_params]\nsigma = 0.05\n")
    config = load_config(
        "denoise-gauss",
        toml,
        {"amp": "false", "target_density": "none", "terms": "a,b", "task_params.sigma": "0.2"},
    )
    assert config.recipe == "denoise-gauss" and config.lr == 0.0005 and config.steps == 12
    assert config.task_params == {"sigma": 0.2} and config.amp is False and config.target_density is None
    specs = load_config(
        "denoise-gauss", overrides={"terms": "distill:teacher=t,weight=2,adversarial-tv:eps=0.1"}
    )
    assert specs.terms == ["distill:teacher=t,weight=2", "adversarial-tv:eps=0.1"]
    assert config.terms == ["a", "b"] and set(RECIPES) == {
        "mri-4x",
        "mri-8x",
        "deblur-gauss",
        "denoise-gauss",
    }
    bad_configs = ({"colour": "red"}, {"steps": "many"}, {"optimizer": "sgd"}, {"steps": "0"})
    for bad in (*bad_configs, {"density_measure": "bytes"}):
        with pytest.raises(InputError):
            load_config("denoise-gauss", overrides=bad)
    with pytest.raises(InputError, match="unknown recipe"):
        load_config("mri-16x")
    (tmp_path / "bad.toml").write_text("steps = = 3")
    with pytest.raises(InputError, match="TOML"):
        load_config(None, tmp_path / "bad.toml")


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
    straight = Trainer(_config(), tmp_path / "a")
    result = straight.run(progress=False)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "checkpoint-0000004",
        "checkpoint-0000008",
        "history.json",
        "latest",
        "model.json",
        "model.safetensors",
        "training.png",
    ]
    # an interrupted run: only the step-4 checkpoint exists
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-0000004", tmp_path / "b" / "checkpoint-0000004")
    (tmp_path / "b" / "latest").write_text("checkpoint-0000004\n")
    resumed = Trainer(_config(), tmp_path / "b")
    again = resumed.run(resume=True, progress=False)
    for (name, p), q in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    # cosine decay f(t) = 0.05 + 0.95·½(1 + cos(πt/T)): half-way at step 4, the floor at the end
    halfway = json.loads((tmp_path / "a" / "checkpoint-0000004" / "state.json").read_text())["param_groups"]
    lr = straight.config.lr
    assert halfway[0]["lr"] == pytest.approx(lr * 0.525) and halfway[0]["initial_lr"] == lr
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx(
        [g["initial_lr"] * 0.05 for g in straight.optimizer.param_groups]
    )
    history_a = json.loads((tmp_path / "a" / "history.json").read_text())["history"]
    history_b = json.loads((tmp_path / "b" / "history.json").read_text())["history"]
    assert history_a == history_b
    assert result["test"] == again["test"]


def test_density_measure_chooses_what_lambda_control_holds(tmp_path):
    from recon.nets import compact_flop_fraction, compact_weight_fraction

    for name, measure in (("compact", compact_weight_fraction), ("flops", compact_flop_fraction)):
        trainer = Trainer(_config(density_measure=name), tmp_path / name)
        assert trainer.control.measure is measure
    with pytest.raises(InputError, match="needs a GraphNet"):
        Trainer(_config(density_measure="compact", network="dncnn", network_params="{}"), tmp_path / "x")


def test_grouping_chooses_regularizer_and_sparse_start(tmp_path):
    from recon.sparsity import L1, GroupL12

    kinds = {"channel": GroupL12, "kernel": GroupL12, "element": L1}
    for grouping, kind in kinds.items():
        trainer = Trainer(_config(grouping=grouping, density_measure="weights"), tmp_path / grouping)
        weights = next(g for g in trainer.optimizer.param_groups if g["name"] == "weights")
        assert type(weights["reg"]) is kind and getattr(weights["reg"], "grouping", "element") == grouping
        conv = trainer.model.net.convs["enc0_b0_conv1"].weight
        # the sparse start switches whole groups on: zero channels, zero kernels, or scattered zeros
        live_channels = int((conv.abs().sum(dim=(1, 2, 3)) > 0).sum())
        live_kernels = int((conv.abs().sum(dim=(2, 3)) > 0).sum())
        nonzero = int(torch.count_nonzero(conv))
        if grouping == "channel":
            assert nonzero == live_channels * conv[0].numel()
        elif grouping == "kernel":
            assert nonzero == live_kernels * conv[0, 0].numel()
            assert live_kernels < conv.shape[0] * conv.shape[1]
        else:
            assert nonzero < conv.numel() and live_kernels * conv[0, 0].numel() > nonzero
    with pytest.raises(InputError, match="unknown grouping"):
        load_config("denoise-gauss", overrides={"grouping": "rows"})
    with pytest.raises(InputError, match="density_measure=weights"):
        load_config("denoise-gauss", overrides={"grouping": "element"})  # the recipe bounds "compact"


def test_frozen_support_survives_resume(tmp_path):
    trainer = Trainer(_config(settle="0.5"), tmp_path / "run")
    assert trainer.control.settle == 4  # the last half of the 8 steps
    trainer.control.freeze()
    trainer.checkpoint(4, [])
    resumed = Trainer(_config(settle="0.5"), tmp_path / "run")
    resumed.restore()
    assert resumed.control.frozen
    masks = [m for m in trainer.control.support.values()]
    for a, b in zip(masks, resumed.control.support.values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(InputError, match="settle"):
        load_config("denoise-gauss", overrides={"settle": "1"})
    pruning = Trainer(_config(settle="0.5", min_branch_width="4"), tmp_path / "pruned")
    assert pruning.control.prune is not None and trainer.control.prune is None
    for bad in ({"min_branch_width": "4"}, {"settle": "0.1", "min_branch_width": "-1"}):
        with pytest.raises(InputError, match="min_branch_width"):
            load_config("denoise-gauss", overrides=bad)  # pruning needs settle; a width is >= 0


def test_resume_errors(tmp_path):
    trainer = Trainer(_config(), tmp_path / "run")
    with pytest.raises(InputError, match="nothing to resume"):
        trainer.restore()
    trainer.checkpoint(4, [])
    other = Trainer(_config(lr="0.01"), tmp_path / "run")
    with pytest.raises(InputError, match="different config"):
        other.restore()
    folder = tmp_path / "run" / "checkpoint-0000004"
    (folder / "optimizer.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="corrupt checkpoint"):
        trainer.restore()
    (folder / "model.safetensors").unlink()
    with pytest.raises(InputError, match="incomplete checkpoint"):
        trainer.restore()


def test_model_files_round_trip_and_corruption(tmp_path):
    trainer = Trainer(_config(), tmp_path / "run")
    model = trainer.deployed()
    save_model(model, tmp_path / "m", metadata={"task": {"task": "denoise"}})
    save_model(model, tmp_path / "m.v2")  # a dotted stem keeps its dots: m.v2.json, not m.json
    assert (tmp_path / "m.v2.json").is_file() and load_model(tmp_path / "m.v2")[1] == {}
    loaded, meta = load_model(tmp_path / "m.json")
    y = torch.rand(1, 1, 32, 32)
    physics = trainer.task.simulate(y, torch.Generator().manual_seed(0)).physics
    with torch.no_grad():
        torch.testing.assert_close(loaded(y, physics), model.eval()(y, physics))
    assert meta == {"task": {"task": "denoise"}}
    raw = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(raw[:100])
    with pytest.raises(InputError, match="corrupt model"):
        load_model(tmp_path / "m")
    (tmp_path / "m.json").write_text('{"format": "something-else"}')
    with pytest.raises(InputError, match="not a recon model"):
        load_model(tmp_path / "m")
    with pytest.raises(InputError, match="model not found"):
        load_model(tmp_path / "absent")


def test_adversarial_tv_penalty_is_the_dual_norm_of_the_input_gradient():
    (term,) = build_terms(["adversarial-tv:eps=0.1"])
    assert "adversarial-tv" in get_registry("training_terms") and term.needs_input_grad
    w = torch.tensor([[2.0, -1.0], [0.5, 3.0]])

    class Sample:
        y = torch.tensor([[1.0, -2.0]], requires_grad=True)

    prediction = Sample.y @ w
    loss = (prediction**2).sum()
    penalty = term.penalty(None, Sample, prediction, loss, None)
    gradient = 2 * (Sample.y.detach() @ w) @ w.T
    assert float(penalty.detach()) == pytest.approx(0.1 * 2.0 * float(gradient.abs().sum()))
    penalty.backward()  # double backprop works
    assert Sample.y.grad is not None


def test_distillation_adds_the_task_loss_against_the_teachers_reconstruction(tmp_path):
    teacher = Trainer(_config(), tmp_path / "teacher").deployed()
    save_model(teacher, tmp_path / "teacher-model")
    (term,) = build_terms([f"distill:teacher={tmp_path / 'teacher-model'},weight=0.5"])
    trainer = Trainer(_config(), tmp_path / "run")
    sample = trainer.task.simulate(torch.rand(2, 1, 32, 32), torch.Generator().manual_seed(0))
    with torch.no_grad():
        taught = teacher.eval()(sample.y, sample.physics)
    zero = term.penalty(None, sample, taught, None, trainer.task)
    shifted = term.penalty(None, sample, taught + 0.2, None, trainer.task)
    assert float(zero) == 0.0 and float(shifted) == pytest.approx(0.5 * 0.2**2)
    with pytest.raises(InputError, match="non-negative"):
        build_terms([f"distill:teacher={tmp_path / 'teacher-model'},weight=-1"])
    Trainer(_config(terms=f"distill:teacher={tmp_path / 'teacher-model'}"), tmp_path / "student").run(
        progress=False
    )
    assert (tmp_path / "student" / "model.json").is_file()
    in_memory = Distillation(teacher.train(), weight=2.0)  # copied: the caller's model is untouched
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    assert float(in_memory.penalty(None, sample, taught + 0.2, None, trainer.task)) == pytest.approx(0.08)


def test_training_with_a_term_and_lifecycle_hooks(tmp_path):
    calls = []

    class Logger:
        @staticmethod
        def recon_train_start(config, model):
            calls.append(("start", config["recipe"]))

        @staticmethod
        def recon_train_log(step, metrics):
            calls.append(("log", step))

        @staticmethod
        def recon_train_end(config, result):
            calls.append(("end", sorted(result)))

    plugin_host().pm.register(Logger, name="test-logger")
    trainer = Trainer(_config(terms="adversarial-tv:eps=0.01", checkpoint_every="0"), tmp_path / "run")
    trainer.run(progress=False)
    assert calls[0] == ("start", "denoise-gauss") and calls[-1][0] == "end"
    assert [c[1] for c in calls if c[0] == "log"] == [2, 4, 6, 8]


@pytest.mark.slow
def test_cli_train_and_reconstruct_with_the_model(cli, tmp_path, make_volume):
    sets = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    run = cli("train", "--recipe", "denoise-gauss", "--out", tmp_path / "run", *sets, "--device", "cpu")
    assert run.code == 0, run.err
    assert "test" in run.json()
    image = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(image)
    done = cli(
        "reconstruct",
        image,
        "--operator",
        "denoise",
        "--model",
        tmp_path / "run" / "model.json",
        "--out",
        tmp_path / "out.h5",
    )
    assert done.code == 0, done.err
    assert done.json()["method"] == "learned"
    wrong = cli(
        "reconstruct", make_volume(), "--model", tmp_path / "run" / "model.json", "--out", tmp_path / "k.h5"
    )
    assert wrong.code == 2 and "trained for 'denoise'" in wrong.err
    assert cli("train", "--recipe", "denoise-gauss", "--out", tmp_path / "new", "--resume").code == 2
    assert cli("train", "--out", tmp_path / "x").code == 2


def test_cli_train_adds_terms(cli, tmp_path):
    sets = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    args = ("train", "--recipe", "denoise-gauss", *sets, "--device", "cpu")
    run = cli(*args, "--out", tmp_path / "run", "--term", "adversarial-tv:eps=0.01,norm=l2")
    assert run.code == 0, run.err
    config = json.loads((tmp_path / "run" / "model.json").read_text())["metadata"]["config"]
    assert config["terms"] == ["adversarial-tv:eps=0.01,norm=l2"]
    unknown = cli(*args, "--out", tmp_path / "bad", "--term", "no-such-term")
    assert unknown.code == 2 and "unknown training term" in unknown.err
