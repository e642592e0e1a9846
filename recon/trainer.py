"""``recon train``: recipes and configs, checkpoints that resume exactly, the final compact model.

A run is described by a :class:`TrainConfig` (a recipe from :data:`RECIPES`, a TOML file with the
same keys, and ``key=value`` overrides). The output folder gets

- ``checkpoint-NNNNNNN/`` every ``checkpoint_every`` steps (the last two are kept) and a ``latest``
  file naming the newest: ``model.safetensors``, ``optimizer.safetensors`` (every optimizer state
  tensor and the data generator's state) and ``state.json`` (step, history, config, the optimizer's
  hyperparameters). Each is written to a temporary folder and renamed, so a crash never leaves a
  half-written checkpoint; ``--resume`` continues from ``latest`` exactly as if never stopped;
- ``model.json`` + ``model.safetensors``: the trained reconstructor (compacted when it was trained
  sparse), with the task, operator parameters, metrics and config in its metadata;
- ``history.json`` and ``training.png`` (loss, validation PSNR, density).

Sparse runs (``optimizer`` = adabreg / linbreg / proxsgd) start from a sparse super-network and use
λ control toward ``target_density``; ``adam`` trains the dense network as the baseline. Every run's
learning rates decay on a cosine to 5% of their start (``lr_schedule = "constant"`` keeps them),
after a linear warm-up over the first ``warmup`` steps (none in the recipes: their dense twins in
BENCHMARKS.md add ``--set warmup=100``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from recon.datasets.training import PatchDataset, image_pool
from recon.errors import InputError
from recon.files import atomic_output, output_folder
from recon.modelio import network_description, save_model
from recon.nets import (
    GLOBAL_RESIDUAL,
    GraphNet,
    branch_pruner,
    channel_report,
    compact,
    compact_flop_fraction,
    compact_weight_fraction,
    flops,
)
from recon.reconstructors import Reconstructor
from recon.registry import get_registry, plugin_host
from recon.sparsity import L1, AdaBreg, LinBreg, ProxSGD, density, param_groups, sparse_init_
from recon.sparsity.init import normalize_activations_
from recon.sparsity.regularizers import GROUPINGS, weight_regularizer
from recon.sparsity.schedule import DensityController, learning_rate_factor, settle_step
from recon.tasks import Task, build_task, evaluate
from recon.terms import build_terms
from recon.train import MAX_BATCH, MAX_PATCH, MAX_STEPS, batch_at, train

SPARSE = ("adabreg", "linbreg", "proxsgd")
MAX_BRANCH_WIDTH = 64  # min_branch_width's bound: a thinness, not a size
# what λ control holds at target_density: the non-zero fraction of the super-network's weights, or the
# weights or FLOPs (256² image) of the compacted network over the dense one's (GraphNets only)
DENSITY_MEASURES = {
    "weights": density,
    "compact": compact_weight_fraction,
    "flops": compact_flop_fraction,
}


@dataclass
class TrainConfig:
    """Everything that defines a training run (JSON/TOML-able)."""

    recipe: str = ""
    task: str = "denoise"
    task_params: dict[str, Any] = field(default_factory=dict)
    network: str = "gated-unet"
    network_params: dict[str, Any] = field(default_factory=lambda: {"widths": [16, 32, 64], "blocks": 1})
    init: str = "measurement"
    dc: str = "none"
    dc_weight: float = 1.0
    unrolled: int = 0
    optimizer: str = "adabreg"
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    # steps of linear learning-rate warm-up: the dense (adam) runs need it (one died in its first 10
    # steps without), the sparse starts must not have it (it delayed their first gates until a
    # shrinking global residual had absorbed the signal, and a denoiser never learned): BENCHMARKS.md
    warmup: int = 0
    lam: float = 0.05
    target_density: float | None = 0.12
    density_measure: str = "weights"  # what target_density bounds: see DENSITY_MEASURES
    # the sparse optimizers' groups: output channels (a compactable architecture), single kernels, or
    # single weights (ℓ1: unstructured, the most accurate per non-zero weight, but no smaller network)
    grouping: str = "channel"
    # fraction of the steps at the end in which λ only rises until the measure is within the target,
    # after which the support is frozen (every run ends inside its budget: DensityController)
    settle: float = 0.0
    # with settle: when the support is frozen, switch off the gated branches (residual blocks) that
    # the search left with fewer than this many channels somewhere (recon.nets.branches; 0: none)
    min_branch_width: int = 0
    init_density: float = 0.01
    steps: int = 3000
    batch: int = 8
    patch: int = 64
    sources: list[str] = field(default_factory=lambda: ["mr", "natural", "phantom"])
    seed: int = 0
    log_every: int = 50
    val_every: int = 250
    val_images: int = 6
    checkpoint_every: int = 500
    terms: list[str] = field(default_factory=list)
    amp: bool = True

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_COMMON = {
    "network": "gated-unet",
    "network_params": {"widths": [16, 32, 64], "blocks": 1},
    "optimizer": "adabreg",
    "lr": 1e-3,
    "lam": 0.05,
    "steps": 3000,
    "batch": 8,
}
# sources stay mr, natural, phantom: with the MNI template instead of the photographs a 1000-step dense
# probe gained 1.3 dB on the T1 test slice but lost 0.14 dB on validation (EPI), and the sparse mri-4x
# gained 1.1 dB on T1 but lost 0.8-0.9 dB on the EPI test subject (BENCHMARKS.md), so it is opt-in
_MRI = {
    **_COMMON,
    "task": "mri",
    "init": "adjoint",
    "dc": "replace",
    "patch": 96,
    "density_measure": "flops",  # the compacted network's FLOPs, ≤ 25% of the dense network's
    "target_density": 0.22,
    "lr": 2e-3,  # validation PSNR 28.19 against 28.13 at 1e-3 (mri-4x, BENCHMARKS.md)
}
# image recipes keep ≤ 10% of the dense network's weights after compaction
_IMAGE = {**_COMMON, "init": "measurement", "patch": 64, "density_measure": "compact", "target_density": 0.1}
RECIPES: dict[str, dict[str, Any]] = {
    "mri-4x": {
        **_MRI,
        "unrolled": 3,  # three (data consistency → shared network) iterations; with cosine decay +0.8 dB
        "steps": 2500,
        "task_params": {"acceleration": 4.0, "center_fraction": 0.08},
    },
    "mri-8x": {
        **_MRI,
        "unrolled": 3,  # as mri-4x
        "steps": 2500,
        "task_params": {"acceleration": 8.0, "center_fraction": 0.04},
    },
    "deblur-gauss": {
        **_IMAGE,
        "task": "deblur",
        "steps": 2000,
        "task_params": {"blur_sigma": 2.0, "sigma": 0.01},
    },
    "denoise-gauss": {**_IMAGE, "task": "denoise", "steps": 2000, "task_params": {"sigma": 0.1}},
}


def _coerce(name: str, value: Any, kind: Any) -> Any:
    """Convert an override string to the config field's type."""
    if not isinstance(value, str):
        return value
    optional = type(None) in typing.get_args(kind)
    if optional and value.lower() == "none":
        return None
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind) if optional else kind
    try:
        if base is bool:
            return _BOOLEANS[value.lower()]
        if typing.get_origin(base) is list:
            return _split_specs([v for v in value.split(",") if v])
        if typing.get_origin(base) is dict:
            return json.loads(value)
        return base(value)
    except (ValueError, KeyError):
        raise InputError(f"config {name}={value!r}: expected {getattr(base, '__name__', base)}") from None


_BOOLEANS = dict.fromkeys(("1", "true", "yes", "on"), True) | dict.fromkeys(
    ("0", "false", "no", "off"), False
)


def _check_types(values: Mapping[str, Any], hints: Mapping[str, Any]) -> None:
    """Each value of a recipe, TOML file or override has its field's type (an int where a float
    is asked is fine); floats are finite."""
    for key, value in values.items():
        kind = hints[key]
        union = typing.get_origin(kind) in (typing.Union, types.UnionType)
        if value is None and union and type(None) in typing.get_args(kind):
            continue
        options = [a for a in typing.get_args(kind) if a is not type(None)] if union else [kind]
        base = typing.get_origin(options[0]) or options[0]
        fits = isinstance(value, base) and (base is bool or not isinstance(value, bool))
        if base is float:
            fits = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not fits:
            what = "finite number" if base is float else base.__name__
            raise InputError(f"config {key}: expected a {what}, got {value!r}")


def _split_specs(items: list[str]) -> list[str]:
    """Comma-separated list items, where a ``key=value`` item without a ``name:`` continues the
    item before it: ``terms=distill:teacher=t,weight=2,adversarial-tv`` is two term specs."""
    out: list[str] = []
    for item in items:
        if out and "=" in item and ":" not in item.split("=", 1)[0] and ":" in out[-1]:
            out[-1] += "," + item
        else:
            out.append(item)
    return out


def load_config(
    recipe: str | None = None, path: str | Path | None = None, overrides: Mapping[str, str] | None = None
) -> TrainConfig:
    """A recipe, then a TOML file, then ``key=value`` overrides (``task_params.sigma=0.05`` for nested)."""
    values: dict[str, Any] = {}
    if recipe is not None:
        if recipe not in RECIPES:
            raise InputError(f"unknown recipe {recipe!r} (known: {', '.join(RECIPES)})")
        values.update(json.loads(json.dumps(RECIPES[recipe])), recipe=recipe)
    if path is not None:
        try:
            values.update(tomllib.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise InputError("config file not found", path) from None
        except OSError as exc:
            raise InputError(f"cannot read the config file ({exc.strerror})", path) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"not a valid TOML file ({exc})", path) from None
    hints = typing.get_type_hints(TrainConfig)
    for key, value in (overrides or {}).items():
        head, _, tail = key.partition(".")
        if head not in hints:
            raise InputError(f"unknown config key {head!r}")
        if tail:
            if typing.get_origin(hints[head]) is not dict:
                raise InputError(f"config key {head!r} has no parts ({key!r})")
            nested = dict(values.get(head, getattr(TrainConfig(), head)))
            nested[tail] = _parse_scalar(value)
            values[head] = nested
        else:
            values[head] = _coerce(head, value, hints[head])
    unknown = set(values) - set(hints)
    if unknown:
        raise InputError(f"unknown config key(s): {', '.join(sorted(unknown))}")
    _check_types(values, hints)
    config = TrainConfig(**values)
    _validate(config)
    return config


def _parse_scalar(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if "," in text:
        return [_parse_scalar(t) for t in text.split(",")]
    return text


def _validate(c: TrainConfig) -> None:
    if c.optimizer not in (*SPARSE, "adam"):
        raise InputError(f"unknown optimizer {c.optimizer!r} (known: adam, {', '.join(SPARSE)})")
    if not (1 <= c.steps <= MAX_STEPS and 1 <= c.batch <= MAX_BATCH and 16 <= c.patch <= MAX_PATCH):
        raise InputError(
            f"steps must be in [1, {MAX_STEPS}], batch in [1, {MAX_BATCH}] and patch in [16, {MAX_PATCH}]"
        )
    if c.log_every < 1 or c.val_every < 1 or c.checkpoint_every < 0 or c.val_images < 0:
        raise InputError("log_every, val_every must be positive; checkpoint_every (0: none), val_images >= 0")
    if not 0 <= c.seed < 2**63 or not 0 < c.init_density <= 1:
        raise InputError(f"seed must be >= 0 and init_density in (0, 1], got {c.seed}, {c.init_density}")
    if c.lr_schedule not in ("constant", "cosine"):
        raise InputError(f"unknown lr_schedule {c.lr_schedule!r} (known: constant, cosine)")
    if c.warmup < 0:
        raise InputError(f"warmup must be a non-negative number of steps, got {c.warmup}")
    if not (c.lr > 0 and c.lam >= 0):
        raise InputError(f"invalid lr {c.lr} or lam {c.lam}")
    if c.target_density is not None and not 0 < c.target_density <= 1:
        raise InputError(f"target_density must be in (0, 1], got {c.target_density}")
    if c.density_measure not in DENSITY_MEASURES:
        known = ", ".join(DENSITY_MEASURES)
        raise InputError(f"unknown density_measure {c.density_measure!r} (known: {known})")
    if not 0 <= c.settle < 1:
        raise InputError(f"settle must be a fraction of the steps in [0, 1), got {c.settle}")
    if not 0 <= c.min_branch_width <= MAX_BRANCH_WIDTH or (c.min_branch_width > 1 and not c.settle):
        raise InputError(
            f"min_branch_width must be in [0, {MAX_BRANCH_WIDTH}] and needs settle > 0 (it acts when "
            f"the support is frozen), got {c.min_branch_width} with settle {c.settle}"
        )
    if c.grouping not in GROUPINGS:
        raise InputError(f"unknown grouping {c.grouping!r} (known: {', '.join(GROUPINGS)})")
    if c.grouping != "channel" and c.optimizer in SPARSE and c.density_measure != "weights":
        raise InputError(
            f"grouping {c.grouping!r} zeroes weights inside live channels, which compaction keeps: "
            "bound the non-zero weights with density_measure=weights"
        )


class Trainer:
    """Builds and runs one training run (see the module docstring)."""

    def __init__(self, config: TrainConfig, out: str | Path, device: str | torch.device = "cpu"):
        self.config, self.out, self.device = config, Path(out), torch.device(device)
        self.task: Task = build_task(config.task, **config.task_params)
        self.data = PatchDataset(
            image_pool(config.sources, "train", seed=config.seed),
            config.patch,
            config.steps * config.batch,
            seed=config.seed,
        )
        self.val_images = list(image_pool([s for s in config.sources if s != "phantom"] or ["mr"], "val"))
        self.val_images = self.val_images[: config.val_images]
        self.model = self._build_model().to(self.device)
        self.optimizer = self._build_optimizer()
        self.control = None
        if config.optimizer in SPARSE and config.target_density is not None:
            if (config.density_measure != "weights" or config.min_branch_width > 1) and not isinstance(
                self.model.net, GraphNet
            ):
                raise InputError("density_measure other than weights, and min_branch_width, needs a GraphNet")
            self.control = DensityController(
                self.optimizer,
                self.model.net,
                config.target_density,
                every=10,
                measure=DENSITY_MEASURES[config.density_measure],
                settle=settle_step(config.steps, config.settle),
                prune=branch_pruner(config.min_branch_width),
            )
        factor = learning_rate_factor(config.steps, config.lr_schedule, config.warmup)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.terms = build_terms(config.terms)
        self.generator = torch.Generator().manual_seed(config.seed + 1)

    # -- building -------------------------------------------------------------------------------
    def _build_model(self) -> Reconstructor:
        c = self.config
        channels = 2 if self.task.complex_images else 1
        net = get_registry("networks").build(
            c.network, in_channels=channels, out_channels=channels, **c.network_params
        )
        # trained without data consistency (see deployed()): with "replace", whatever the network puts on
        # sampled k-space locations is discarded, so nothing bounds it and it drifts without limit
        model = Reconstructor(net, init=c.init, unrolled=c.unrolled)
        generator = torch.Generator().manual_seed(c.seed)
        if isinstance(net, GraphNet):
            sparse = c.optimizer in SPARSE
            sparse_init_(
                net,
                density=c.init_density if sparse else 1.0,
                grouping=c.grouping if sparse else "element",
                gate_value=0.0 if sparse else 1.0,
                keep_dense=("convs.head.",),
                open_gates=(GLOBAL_RESIDUAL,),
                generator=generator,
            )
            sample = self.task.simulate(batch_at(self.data, 1, 8), torch.Generator().manual_seed(c.seed))
            normalize_activations_(net, model.net_input(sample.y, sample.physics))
        return model

    def _build_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "adam":
            return torch.optim.Adam(self.model.parameters(), lr=c.lr, foreach=True)
        groups = param_groups(self.model.net, weight_regularizer(c.lam, c.grouping), L1(c.lam))
        for group in groups:
            fast = group["name"] == "gates" and c.optimizer == "adabreg"
            group["lr"] = c.lr * (10.0 if fast else 1.0)
        if c.optimizer == "adabreg":
            return AdaBreg(groups)
        if c.optimizer == "linbreg":
            return LinBreg(groups, momentum=0.9)
        return ProxSGD(groups, momentum=0.9)

    def deployed(self, net: torch.nn.Module | None = None) -> Reconstructor:
        """The reconstructor as used after training: the network plus the configured data consistency."""
        c = self.config
        return Reconstructor(
            net if net is not None else self.model.net,
            init=c.init,
            dc=c.dc,
            dc_weight=c.dc_weight,
            unrolled=c.unrolled,
        )

    # -- checkpoints -----------------------------------------------------------------------------
    def checkpoint(self, step: int, history: list[dict[str, Any]]) -> Path:
        """Write ``checkpoint-<step>`` atomically, point ``latest`` at it, keep the last two."""
        self.out.mkdir(parents=True, exist_ok=True)
        final = self.out / f"checkpoint-{step:07d}"
        temp = self.out / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
        try:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
                str(temp / "model.safetensors"),
            )
            state = self.optimizer.state_dict()
            tensors = {
                f"state.{i}.{k}": torch.as_tensor(v).detach().cpu().contiguous()
                for i, entries in state["state"].items()
                for k, v in entries.items()
            }
            tensors["generator"] = self.generator.get_state()
            save_file(tensors, str(temp / "optimizer.safetensors"))
            meta = {
                "step": step,
                "history": history,
                "config": self.config.as_dict(),
                "param_groups": state["param_groups"],
                "lam_scale": self.control.scale if self.control else 1.0,
                "support_frozen": bool(self.control and self.control.frozen),
            }
            (temp / "state.json").write_text(json.dumps(meta, indent=1))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(temp, final)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        with atomic_output(self.out / "latest") as latest:
            latest.write_text(final.name + "\n")
        for old in sorted(self.out.glob("checkpoint-*"))[:-2]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def restore(self) -> tuple[int, list[dict[str, Any]]]:
        """Load the checkpoint named by ``latest``; returns (step, history)."""
        pointer = self.out / "latest"
        if not pointer.is_file():
            raise InputError("nothing to resume: no checkpoint in this folder", self.out)
        folder = self.out / pointer.read_text().strip()
        try:
            meta = json.loads((folder / "state.json").read_text())
            model_tensors = load_file(str(folder / "model.safetensors"))
            tensors = load_file(str(folder / "optimizer.safetensors"))
        except FileNotFoundError as exc:
            raise InputError(f"incomplete checkpoint ({exc.filename})", folder) from None
        except Exception as exc:  # corrupt JSON or safetensors
            raise InputError(f"corrupt checkpoint ({exc})", folder) from None
        if not isinstance(meta, dict) or not {"step", "history", "param_groups"} <= set(meta):
            raise InputError("corrupt checkpoint (state.json is not a checkpoint's state)", folder)
        if meta.get("config") != self.config.as_dict():
            raise InputError(
                "the checkpoint was made with a different config; resume with the same one", folder
            )
        try:
            self.model.load_state_dict(model_tensors)
        except RuntimeError as exc:
            raise InputError(f"checkpoint does not match the model ({exc})", folder) from None
        state: dict[str, Any] = {"state": {}, "param_groups": meta["param_groups"]}
        for key, value in tensors.items():
            if key == "generator":
                continue
            _, index, name = key.split(".", 2)
            state["state"].setdefault(int(index), {})[name] = value.to(self.device)
        self.optimizer.load_state_dict(state)
        self.generator.set_state(tensors["generator"])
        if self.control is not None:
            self.control.scale = float(meta.get("lam_scale", 1.0))
            if meta.get("support_frozen"):
                self.control.freeze(prune=False)  # the weights are loaded: their zeros are the support
        self.schedule.last_epoch = int(meta["step"])  # the learning rates themselves came with the groups
        return int(meta["step"]), list(meta["history"])

    # -- running ---------------------------------------------------------------------------------
    def _log(self, step: int) -> dict[str, Any]:
        entry: dict[str, Any] = {}
        if self.config.optimizer in SPARSE and isinstance(self.model.net, GraphNet):
            report = channel_report(self.model.net)
            entry.update(density=report["density"], active_channels=report["active_channels"])
            if self.control is not None and self.config.density_measure != "weights":
                entry["controlled"] = self.control.measure(self.model.net)  # what λ control holds
        if (step % self.config.val_every == 0 or step == self.config.steps) and self.val_images:
            entry["val_psnr"] = evaluate(self.deployed(), self.task, self.val_images, device=self.device)[
                "psnr"
            ]
        plugin_host().pm.hook.recon_train_log(step=step, metrics=entry)
        return entry

    def after_step(self, step: int) -> None:
        """λ control (sparse runs with a target density), then the learning rate for the next step."""
        if self.control is not None:
            self.control(step)
        self.schedule.step()

    def run(self, resume: bool = False, progress: bool = True) -> dict[str, Any]:
        with output_folder(self.out):  # an unwritable folder fails now, not after training
            return self._run(resume, progress)

    def _run(self, resume: bool, progress: bool) -> dict[str, Any]:
        c = self.config
        start_step, history = self.restore() if resume else (0, [])
        host = plugin_host()
        host.pm.hook.recon_train_start(config=c.as_dict(), model=self.model)
        started = time.perf_counter()
        history = train(
            self.model,
            self.task,
            self.optimizer,
            self.data,
            steps=c.steps,
            batch=c.batch,
            device=self.device,
            log_every=c.log_every,
            on_log=self._log,
            after_step=self.after_step,
            terms=self.terms,
            start_step=start_step,
            generator=self.generator,
            checkpoint=self.checkpoint,
            checkpoint_every=c.checkpoint_every,
            history=history,
            amp=c.amp,
            progress=progress,
            description=c.recipe or c.task,
        )
        result = self.finish(history, time.perf_counter() - started)
        host.pm.hook.recon_train_end(config=c.as_dict(), result=result)
        return result

    def finish(self, history: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
        """Compact (sparse runs), score on the test split, write the model and the history."""
        c = self.config
        net = self.model.net
        network = None
        if isinstance(net, GraphNet):
            if c.optimizer in SPARSE:
                net = compact(net)
        else:
            network = network_description(net, c.network, c.network_params)
        model = self.deployed(net)
        test = evaluate(
            model,
            self.task,
            image_pool([s for s in c.sources if s != "phantom"] or ["mr"], "test"),
            device=self.device,
        )
        size = (256, 256)
        result = {
            "test": test,
            "params": sum(p.numel() for p in net.parameters()),
            "flops_256": flops(net.spec, size) if isinstance(net, GraphNet) else None,
            "density": density(self.model.net),
            **(
                {"compact_weights": compact_weight_fraction(self.model.net)}
                if isinstance(self.model.net, GraphNet)
                else {}
            ),
            "train_seconds": seconds,
            "steps": c.steps,
        }
        metadata = {"task": self.task.config(), "recipe": c.recipe, "config": c.as_dict(), "result": result}
        self.out.mkdir(parents=True, exist_ok=True)
        save_model(model, self.out / "model", metadata=metadata, network=network)
        with atomic_output(self.out / "history.json") as temp:
            temp.write_text(json.dumps({"history": history, "result": result}, indent=1) + "\n")
        with atomic_output(self.out / "training.png") as temp:
            plot_history(history, temp, c.recipe or c.task)
        return result


def plot_history(history: list[dict[str, Any]], path: Path, title: str) -> None:
    from recon.outputs import plt

    keys = [k for k in ("loss", "val_psnr", "density") if any(k in h for h in history)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.3), squeeze=False)
    titles = {"loss": "training loss", "val_psnr": "validation PSNR (dB)", "density": "weight density"}
    for ax, key in zip(axes[0], keys, strict=True):
        for curve in (key, "controlled") if key == "density" else (key,):
            points = [(h["step"], h[curve]) for h in history if curve in h]
            if points:
                ax.plot(*zip(*points, strict=True), lw=1.5, label={"density": "non-zero"}.get(curve, curve))
        if key == "density" and any("controlled" in h for h in history):
            ax.legend(fontsize=8)  # non-zero weights, and the measure λ control holds at the target
        ax.set_title(titles[key], fontsize=10)
        ax.set_xlabel("step")
        if key == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
