r"""Architecture search by group-sparse Bregman training, then compaction.

A super-network (:mod:`recon.nets.search_spaces`) starts sparse (1% of its channels, closed gates)
and is trained with LinBreg or AdaBreg under a group ℓ1,2 penalty on output channels and an ℓ1
penalty on the scalar gates of skips and residual blocks. Inverse scale space: channels and
connections switch on one by one as their accumulated gradients exceed λ. The run writes

- ``architecture.json``: channels per layer (active / total), gates, the layers and skips that
  survive, density, FLOPs and parameters before and after compaction, held-out PSNR/SSIM, history;
- ``growth.png``: active channels, open gates and weight density over training;
- ``model.json`` + ``model.safetensors``: the compacted network (a plain GraphNet).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from recon.datasets.training import PatchDataset, image_pool
from recon.errors import InputError
from recon.files import atomic_output, output_folder
from recon.nets import GLOBAL_RESIDUAL, GraphNet, channel_report, compact, flops, save_graph, search_spaces
from recon.reconstructors import Reconstructor
from recon.sparsity import L1, AdaBreg, GroupL12, LinBreg, param_groups, sparse_init_
from recon.sparsity.init import normalize_activations_
from recon.sparsity.schedule import DensityController
from recon.tasks import Task, build_task, evaluate
from recon.train import MAX_BATCH, MAX_PATCH, MAX_STEPS, train


@dataclass
class SearchConfig:
    """Everything a search run needs; recorded in ``architecture.json``."""

    task: str = "denoise"
    task_params: dict[str, Any] = field(default_factory=dict)
    widths: tuple[int, ...] = (16, 32, 64)
    blocks: int = 1
    unshuffle: int = 1  # U-Nets: run on f×f pixel blocks as channels (faster compacted networks on a CPU)
    latent: int = 64
    lam: float = 0.05
    gate_lam: float | None = None
    optimizer: str = "linbreg"
    lr: float = 0.05
    momentum: float = 0.9
    gate_lr_factor: float = 10.0
    init_density: float = 0.01
    steps: int = 2000
    batch: int = 16
    patch: int = 64
    seed: int = 0
    log_every: int = 50
    target_density: float | None = None
    sources: tuple[str, ...] = ("mr", "natural", "phantom")


def build_supernet(config: SearchConfig, channels: int = 1) -> GraphNet:
    """The search space of ``config``: ``channels`` = 2 for complex images (real, imaginary)."""
    if config.task == "autoencoder":
        spec = search_spaces.gated_autoencoder(
            channels, config.widths[:-1] or config.widths, config.latent, config.blocks
        )
    else:
        spec = search_spaces.gated_unet(
            channels, channels, config.widths, config.blocks, residual=True, unshuffle=config.unshuffle
        )
    return GraphNet(spec)


def sparse_reconstructor(config: SearchConfig, task: Task, data: PatchDataset) -> Reconstructor:
    """A super-network with a sparse start (``init_density`` of the channels, closed gates), its
    activations normalised on a probe batch, wrapped as the task's reconstructor."""
    model = Reconstructor(build_supernet(config, 2 if task.complex_images else 1), init=task.init)
    generator = torch.Generator().manual_seed(config.seed)
    sparse_init_(
        model.net,
        density=config.init_density,
        grouping="channel",
        keep_dense=("convs.head.",),
        open_gates=(GLOBAL_RESIDUAL,),
        generator=generator,
    )
    sample = task.simulate(torch.stack([data[i] for i in range(8)]), generator)
    normalize_activations_(model.net, model.net_input(sample.y, sample.physics))
    return model


def build_optimizer(net: GraphNet, config: SearchConfig) -> torch.optim.Optimizer:
    """LinBreg or AdaBreg: group ℓ1,2 on channels, ℓ1 on gates. With AdaBreg the gates step
    ``gate_lr_factor`` times faster: its steps are normalised to about ``lr`` per entry, and a gate must
    travel from 0 to about 1 while a weight moves a fraction of that (LinBreg's gate gradients are
    sums over every pixel and already large)."""
    groups = param_groups(
        net,
        GroupL12(config.lam, "channel"),
        L1(config.gate_lam if config.gate_lam is not None else config.lam),
    )
    for group in groups:
        fast = group["name"] == "gates" and config.optimizer == "adabreg"
        group["lr"] = config.lr * (config.gate_lr_factor if fast else 1.0)
    if config.optimizer == "linbreg":
        return LinBreg(groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adabreg":
        return AdaBreg(groups, lr=config.lr)
    raise InputError(f"unknown optimizer {config.optimizer!r} (known: linbreg, adabreg)")


def _structure(net: GraphNet, small: GraphNet) -> dict[str, Any]:
    report = channel_report(net)
    kept = {n["name"] for n in small.spec["nodes"]}
    return {
        "convs": report["convs"],
        "gates": report["gates"],
        "open_gates": sorted(g for g, v in report["gates"].items() if v != 0),
        "layers_kept": [n["name"] for n in net.conv_nodes() if n["name"] in kept],
        "layers_removed": [n["name"] for n in net.conv_nodes() if n["name"] not in kept],
        "active_channels": report["active_channels"],
        "total_channels": report["total_channels"],
        "density": report["density"],
    }


def plot_growth(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Active channels, open gates and density against the training step."""
    from recon.outputs import plt

    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key, label in zip(
        axes,
        ("active_channels", "open_gates", "density"),
        ("active channels", "open gates (skips, blocks)", "weight density"),
        strict=True,
    ):
        ax.plot(steps, [h[key] for h in history], lw=1.6)
        ax.set_xlabel("training step")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def run_search(
    config: SearchConfig, out: str | Path, *, device: str | torch.device = "cpu", progress: bool = True
) -> dict[str, Any]:
    """Search, compact and evaluate; writes the outputs listed in the module docstring into ``out``."""
    check_config(config)
    with output_folder(out) as folder:
        result, small, metadata = _search(config, device, progress)
        save_graph(small, folder / "model", metadata=metadata)
        with atomic_output(folder / "architecture.json") as temp:
            temp.write_text(json.dumps(result, indent=1) + "\n")
        with atomic_output(folder / "growth.png") as temp:
            plot_growth(result["history"], temp, f"{config.task}: {config.optimizer}, λ={config.lam}")
    return result


def check_config(config: SearchConfig) -> None:
    """The training numbers of ``config`` in range, before anything is built or written (the
    search space checks its own widths, blocks and latent size)."""
    c = config
    if not (1 <= c.steps <= MAX_STEPS and 1 <= c.batch <= MAX_BATCH and 8 <= c.patch <= MAX_PATCH):
        raise InputError(f"steps must be positive, batch in [1, {MAX_BATCH}] and patch in [8, {MAX_PATCH}]")
    rates = (c.lam, c.gate_lam if c.gate_lam is not None else 0.0, c.lr, c.momentum)
    if not all(math.isfinite(v) and v >= 0 for v in rates) or c.lr == 0:
        raise InputError("lam, gate_lam, lr and momentum must be finite and non-negative (lr positive)")
    if not 0 < c.init_density <= 1 or not 0 <= c.seed < 2**63:
        raise InputError(f"init_density must be in (0, 1] and seed >= 0, got {c.init_density}, {c.seed}")


def _search(
    config: SearchConfig, device: str | torch.device, progress: bool
) -> tuple[dict[str, Any], GraphNet, dict[str, Any]]:
    """The search itself: the result document, the compacted network and its metadata."""
    task: Task = build_task(config.task, **config.task_params)
    data = PatchDataset(
        image_pool(config.sources, "train", seed=config.seed),
        config.patch,
        config.steps * config.batch,
        seed=config.seed,
    )
    model = sparse_reconstructor(config, task, data).to(device)
    net = model.net
    optimizer = build_optimizer(net, config)
    control = None
    if config.target_density is not None:
        control = DensityController(optimizer, net, config.target_density, every=10)

    def log(step: int) -> dict[str, Any]:
        report = channel_report(net)
        return {
            "active_channels": report["active_channels"],
            "open_gates": report["active_gates"],
            "density": report["density"],
            "lam": config.lam * (control.scale if control else 1.0),
        }

    start = time.perf_counter()
    history = train(
        model,
        task,
        optimizer,
        data,
        steps=config.steps,
        batch=config.batch,
        device=device,
        seed=config.seed,
        log_every=config.log_every,
        on_log=log,
        after_step=control,
        progress=progress,
        description=f"search {config.task}",
    )
    seconds = time.perf_counter() - start
    small = compact(net)
    held_out = image_pool([s for s in config.sources if s != "phantom"] or ["mr"], "test")
    size = (config.patch, config.patch)
    result = {
        "config": {**config.__dict__, "widths": list(config.widths), "sources": list(config.sources)},
        "task": task.config(),
        **_structure(net, small),
        "flops_supernet": flops(net.spec, size),
        "flops_compact": flops(small.spec, size),
        "flops_at": list(size),
        "params_supernet": sum(p.numel() for p in net.parameters()),
        "params_compact": sum(p.numel() for p in small.parameters()),
        "train_seconds": seconds,
        "test": evaluate(Reconstructor(small, **model.config()), task, held_out, device=device),
        "history": history,
    }
    if config.task == "autoencoder":
        result["latent_channels"] = result["convs"]["latent"]
    metadata = {"task": task.config(), "reconstructor": model.config(), "source": "recon search"}
    return result, small, metadata
