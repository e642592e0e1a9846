"""Sparse training benchmark: dense Adam, magnitude pruning, a thin dense network, ProxSGD, LinBreg and
AdaBreg in one run.

    python benchmarks/sparsity.py [--tasks denoise,deblur] [--steps 3000] [--targets 0.08]
        [--methods adabreg,magnitude,thin] [--seeds 0,1,2] [--sparse-start 0.02] [--measure compact]
        [--json out.json]

Every method trains the same U-Net super-network (``--widths``) on the same 64×64 patches (packaged MR
slices, scikit-image photographs, phantoms) for the same number of steps, and is scored on held-out
images (the MR test subjects and the camera / astronaut photographs, whole images):

- **adam**: dense network (all gates open), ``torch.optim.Adam`` (foreach);
- **magnitude**: the trained dense network, layer-wise magnitude-pruned to as many non-zero weights
  as AdaBreg's compacted network has, then fine-tuned with the mask fixed for ``--finetune`` of the
  steps (so it trains a little longer);
- **thin**: a dense network with every width scaled by √(AdaBreg's kept fraction), trained like
  **adam**: about as many weights as AdaBreg's compacted network, spread evenly;
- **proxsgd**: proximal SGD from the dense start, same regularizers, λ controlled to the target density;
- **linbreg** / **adabreg**: sparse start (1% of channels, gates closed), group ℓ1,2 on channels and
  ℓ1 on gates, λ controlled toward ``--target`` density by :class:`recon.sparsity.schedule.DensityController`.
  ``--measure`` says what the target bounds: ``weights`` (the super-network's non-zero fraction, the
  default), ``compact`` (the compacted network's weights over the dense network's) or ``flops``.
  ``--distill W`` adds the ``distill`` training term (:mod:`recon.plugins.distillation`) with the
  same seed's dense Adam network as the teacher.

``--lr-schedule cosine`` decays every method's learning rates on the same cosine as ``recon train``
(the default, ``constant``, is what the published tables used); ``--warmup N`` ramps them up
linearly over the first N steps. ``--adam-lr`` and ``--adabreg-lr``
take comma-separated lists: each rate is trained and the one with the best PSNR on the *validation*
images (never the test images) is reported, with the whole sweep in the JSON, so that neither side
of the comparison is tuned and the other not. ``--seeds`` repeats every method with each seed
(initialisation, sparse start, batch order and noise; the patches stay): the table reports means,
the rates are chosen by mean validation PSNR, and each seed's scores are in the JSON (``best_seed``:
the seed with the best validation PSNR, marked ``*`` in the table: the network a user who trains
every seed would keep). ``--select-every N`` scores every method's network every N steps on the
validation images (compacted, as deployed) and keeps the best checkpoint whose kept fraction is
within ``--select-budget`` (default: the method's target) instead of the last one: early stopping
on validation, and a budget every kept network obeys, where λ control only holds the mean.
``--settle F`` does the same by training instead: in the last fraction F of the steps λ only rises
until the network is within its target, then its support is frozen and the rest of the steps train
that architecture (:class:`~recon.sparsity.schedule.DensityController`); with ``--min-branch-width K``
the residual blocks left with fewer than K channels somewhere are switched off at that moment
(:func:`recon.nets.drop_thin_branches`: they cost time out of proportion to their FLOPs).
``--grouping element`` or
``kernel`` makes the Bregman methods' regularizer (and sparse start) act on single weights (ℓ1) or
single kernels instead of whole channels: unstructured sparsity, which magnitude pruning also is,
measured with ``--measure weights``.

Reported per method: PSNR / SSIM, weight density (non-zero fraction of the trained network), kept
fraction (non-zero weights of the deployed, compacted network over the dense one's: what magnitude
pruning and the thin network are matched to), active channels, FLOPs of the compacted network
(at 256×256), CPU inference time of the compacted vs the dense network (each in its inference
form), and the time of a training step (forward, backward, optimizer) relative to Adam, measured
interleaved on the same network.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR

from recon.allocator import retain_freed_memory
from recon.datasets.training import PatchDataset, image_pool
from recon.modelio import save_model
from recon.nets import (
    GLOBAL_RESIDUAL,
    GraphNet,
    branch_pruner,
    channel_report,
    compact,
    compact_flop_fraction,
    compact_weight_fraction,
    flops,
    gated_unet,
    inference_network,
)
from recon.plugins.distillation import Distillation
from recon.reconstructors import Reconstructor
from recon.sparsity import L1, AdaBreg, LinBreg, ProxSGD, density, param_groups, sparse_init_
from recon.sparsity.init import normalize_activations_
from recon.sparsity.regularizers import GROUPINGS, Grouping, weight_regularizer
from recon.sparsity.schedule import DensityController, learning_rate_factor, settle_step
from recon.tasks import build_task, evaluate, image_scores, mean_scores
from recon.train import train

EVAL_SIZE = (256, 256)
HELD_OUT = ("mr", "natural")  # the held-out images' sources, each also scored on its own
METHODS = ("linbreg", "adabreg", "proxsgd", "magnitude", "thin")
MEASURES = {"weights": density, "compact": compact_weight_fraction, "flops": compact_flop_fraction}


def supernet(
    widths: tuple[int, ...],
    dense: bool,
    seed: int,
    probe: torch.Tensor,
    init: str = "measurement",
    start: float = 0.01,
    open_gates: tuple[str, ...] = (),
    grouping: Grouping = "channel",
    unshuffle: int = 1,
) -> Reconstructor:
    """The U-Net super-network as a reconstructor: dense (all gates open) or sparse (a fraction
    ``start`` of the channels, kernels or weights on, gates closed but the global residual's)."""
    net = GraphNet(gated_unet(widths=widths, blocks=1, unshuffle=unshuffle))
    g = torch.Generator().manual_seed(seed)
    if dense:
        sparse_init_(net, density=1.0, grouping="element", gate_value=1.0, generator=g)
    else:
        sparse_init_(
            net,
            density=start,
            grouping=grouping,
            keep_dense=("convs.head.",),
            open_gates=(GLOBAL_RESIDUAL, *(f"gates.{g}" for g in open_gates)),
            generator=g,
        )
    normalize_activations_(net, probe)
    return Reconstructor(net, init=init)


def bregman_groups(
    net: GraphNet, lam: float, lr: float, gate_factor: float = 1.0, grouping: Grouping = "channel"
) -> list[dict[str, Any]]:
    """Group ℓ1,2 of ``grouping`` on the weights (plain ℓ1 for ``element``), ℓ1 on the gates."""
    groups = param_groups(net, weight_regularizer(lam, grouping), L1(lam))
    for group in groups:
        group["lr"] = lr * (gate_factor if group["name"] == "gates" else 1.0)
    return groups


def magnitude_prune(net: GraphNet, target: float) -> dict[str, torch.Tensor]:
    """Layer-wise magnitude pruning (Zhu & Gupta 2017): every convolution but the output head keeps
    its largest-magnitude weights, the same fraction in each layer, so that the whole network has
    ``target`` density. (Global pruning over all layers at once removed entire thin layers, the
    head among them, and left a network that only passed its input through the global residual.)"""
    head = net.convs["head"].weight.numel()
    total = sum(m.weight.numel() for m in net.convs.values())
    fraction = min(1.0, max(0.0, (target * total - head) / (total - head)))
    masks = {}
    with torch.no_grad():
        for name, module in net.convs.items():
            w = module.weight
            if name == "head":
                masks[name] = torch.ones_like(w)
                continue
            keep = max(1, round(fraction * w.numel()))
            threshold = torch.topk(w.abs().flatten(), keep).values[-1]
            masks[name] = (w.abs() >= threshold).to(w.dtype)
            w.mul_(masks[name])
    return masks


def inference_ms(net: GraphNet, repeats: int = 15) -> float:
    """Median time of one image through ``net`` in its inference form (what ``recon reconstruct``
    runs: :func:`recon.nets.inference_network`)."""
    x = torch.rand(1, 1, *EVAL_SIZE)
    net = inference_network(net)
    with torch.no_grad():
        net(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def step_times(
    widths: tuple[int, ...], batch: int, probe: torch.Tensor, repeats: int = 12, unshuffle: int = 1
) -> dict[str, float]:
    """Median ms of one training step per optimizer, interleaved on identical networks."""
    x = torch.rand(batch, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    setups = {}
    for name in ("adam", "linbreg", "adabreg", "proxsgd"):
        net = supernet(widths, dense=True, seed=0, probe=probe, unshuffle=unshuffle).net
        if name == "adam":
            opt = torch.optim.Adam(net.parameters(), lr=1e-4, foreach=True)
        elif name == "linbreg":
            opt = LinBreg(bregman_groups(net, 1e-4, 1e-4), momentum=0.9)
        elif name == "adabreg":
            opt = AdaBreg(bregman_groups(net, 1e-4, 1e-4))
        else:
            opt = ProxSGD(bregman_groups(net, 1e-4, 1e-4), momentum=0.9)
        setups[name] = (net, opt)
    times: dict[str, list[float]] = {name: [] for name in setups}
    for r in range(repeats + 2):
        for name, (net, opt) in setups.items():
            start = time.perf_counter()
            loss = F.mse_loss(net(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if r >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


class _BestCheckpoint:
    """Every ``every`` steps, the network's validation PSNR (compacted, as deployed) when its kept
    fraction is within ``budget``; :meth:`restore` puts back the best such weights (the network a
    user keeps: chosen on validation images, never on the held-out ones, and inside the budget)."""

    def __init__(self, model: Reconstructor, task: Any, images: Any, every: int, budget: float):
        self.model, self.task, self.images, self.every, self.budget = model, task, images, every, budget
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None

    def __call__(self, step: int) -> None:
        if step % self.every or compact_weight_fraction(self.model.net) > self.budget + 1e-9:
            return
        deployed = Reconstructor(compact(self.model.net), **self.model.config())
        psnr = evaluate(deployed, self.task, self.images)["psnr"]
        if self.best is None or psnr > self.best[0]:
            state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.best = (psnr, step, state)

    def restore(self, history: list[dict[str, Any]]) -> None:
        if self.best is not None:
            self.model.load_state_dict(self.best[2])
            history.append(
                {"step": self.best[1], "selected_val_psnr": self.best[0], "loss": history[-1]["loss"]}
            )


def run_task(task_name: str, args: argparse.Namespace) -> dict[str, Any]:
    task = build_task(task_name)
    widths = tuple(int(w) for w in args.widths.split(","))
    data = PatchDataset(
        image_pool(("mr", "natural", "phantom"), "train"), 64, args.steps * args.batch, seed=0
    )
    sample = task.simulate(torch.stack([data[i] for i in range(8)]), torch.Generator().manual_seed(0))
    probe = Reconstructor(GraphNet(gated_unet(widths=(2,), blocks=0)), init=task.init).net_input(
        sample.y, sample.physics
    )
    network = partial(supernet, probe=probe, init=task.init, unshuffle=args.unshuffle)
    dense_net = network(widths, dense=True, seed=0).net
    full_weights = sum(p.numel() for p in dense_net.parameters() if p.dim() >= 2)
    # held-out images by source: a network can gain on MR slices and lose on photographs (BENCHMARKS.md)
    held_out_sources = {source: image_pool((source,), "test") for source in HELD_OUT}
    held_out = [image for images in held_out_sources.values() for image in images]
    validation = image_pool(HELD_OUT, "val")
    results: dict[str, dict[str, Any]] = {}

    seeds = args.seeds

    def fit(
        name: str,
        model: Reconstructor,
        opt: torch.optim.Optimizer,
        steps: int,
        seed: int,
        control=None,
        after=None,
        terms=(),
        budget: float = 1.0,
        warmup: int = 0,
    ):
        start = time.perf_counter()
        hooks = [f for f in (control, after) if f is not None]
        if args.lr_schedule == "cosine" or warmup:  # as `recon train`: every method's rates alike
            decay = LambdaLR(opt, learning_rate_factor(steps, args.lr_schedule, warmup))
            hooks.append(lambda s: decay.step())
        keep = (
            _BestCheckpoint(model, task, validation, args.select_every, budget) if args.select_every else None
        )
        if keep is not None:
            hooks.append(keep)
        history = train(
            model,
            task,
            opt,
            data,
            steps=steps,
            batch=args.batch,
            seed=seed + 1,
            log_every=max(steps // 10, 1),
            after_step=(lambda s: [f(s) for f in hooks]),
            on_log=lambda s: {"density": density(model.net), "kept": compact_weight_fraction(model.net)},
            terms=terms,
            description=f"{task_name}/{name}",
        )
        if keep is not None:
            keep.restore(history)
        return history, time.perf_counter() - start

    def score(
        name: str, model: Reconstructor, history: list[dict[str, Any]], seconds: float, structured: bool
    ) -> None:
        net = model.net
        small = compact(net) if structured else net
        report = channel_report(net)
        deployed = Reconstructor(small, **model.config())
        if args.save_models:  # for benchmarks/compact_speed.py (its dense twin from network_params)
            params = {"widths": list(widths), "blocks": 1, "unshuffle": args.unshuffle}
            label = name.replace(" [seed ", "-seed").replace("]", "").replace("@", "-")
            Path(args.save_models).mkdir(parents=True, exist_ok=True)
            save_model(
                deployed,
                Path(args.save_models) / f"{task_name}-{label}",
                metadata={"config": {"network": "gated-unet", "network_params": params}},
            )
        per_image = image_scores(deployed, task, held_out)
        results[name] = {
            **mean_scores(per_image),
            **source_means(per_image["psnr"], held_out_sources),
            "val_psnr": evaluate(deployed, task, validation)["psnr"],
            "density": density(net),
            "kept": nonzero_weights(small) / full_weights,
            "active_channels": report["active_channels"],
            "total_channels": report["total_channels"],
            "open_gates": report["active_gates"],
            "layer_channels": {conv: c["active"] for conv, c in report["convs"].items()},
            "gates": report["gates"],
            "flops": flops(small.spec, EVAL_SIZE),
            "params_nonzero": int(sum(int(torch.count_nonzero(p)) for p in net.parameters())),
            "inference_ms": inference_ms(small),
            "train_seconds": seconds,
            "final_loss": history[-1]["loss"],
            "history": history,
        }
        print(
            f"  {name:10s} PSNR {results[name]['psnr']:.2f}  SSIM {results[name]['ssim']:.3f}  "
            f"density {results[name]['density']:.3f}  FLOPs {results[name]['flops'] / 1e9:.2f} G  "
            f"{results[name]['inference_ms']:.1f} ms",
            flush=True,
        )

    def attempt(
        name: str,
        model: Reconstructor,
        opt: torch.optim.Optimizer,
        steps: int,
        seed: int,
        structured: bool,
        control=None,
        after=None,
        terms=(),
        budget: float = 1.0,
        warmup: int | None = None,
    ) -> bool:
        """Train and score one method; a divergence is recorded instead of ending the benchmark."""
        warmup = args.warmup if warmup is None else warmup
        try:
            history, seconds = fit(name, model, opt, steps, seed, control, after, terms, budget, warmup)
        except FloatingPointError as exc:
            results[name] = {"diverged": str(exc)}
            print(f"  {name:10s} {exc}", flush=True)
            return False
        score(name, model, history, seconds, structured)
        return True

    def replicate(label: str, run: Any) -> list[Any]:
        """``run(label, seed)`` at every seed; with more than one, ``label`` reports the means (and
        each seed's scores). Returns what the runs returned, one per seed."""
        if len(seeds) == 1:
            return [run(label, seeds[0])]
        outcomes, runs = [], []
        for seed in seeds:
            outcomes.append(run(f"{label} [seed {seed}]", seed))
            runs.append(results.pop(f"{label} [seed {seed}]", {}))
        results[label] = seed_mean(runs, seeds)
        return outcomes

    def sweep(name: str, rates: list[float], run: Any) -> Any:
        """``run(label, lr)`` at every rate; the one with the best validation PSNR is reported as
        ``name`` (the others' scores in its ``lr_sweep``). Returns what that run returned."""
        if len(rates) == 1:
            return run(name, rates[0])
        outcomes, scores = {}, {}
        for lr in rates:
            outcomes[lr] = run(f"{name} (lr {lr:g})", lr)
            scores[lr] = results.pop(f"{name} (lr {lr:g})", {})
        trained = [lr for lr in rates if "val_psnr" in scores[lr]] or rates
        best = max(trained, key=lambda lr: scores[lr].get("val_psnr", -math.inf))
        keys = ("val_psnr", "psnr", "density")
        table = {f"{lr:g}": {k: scores[lr].get(k) for k in keys} for lr in rates}
        results[name] = {**scores[best], "lr": best, "lr_sweep": table}
        return outcomes[best]

    def train_adam(lr: float, label: str, seed: int) -> Reconstructor:
        model = network(widths, dense=True, seed=seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
        attempt(label, model, opt, args.steps, seed, False, warmup=dense_warmup)
        return model

    dense_warmup = args.warmup if args.adam_warmup is None else args.adam_warmup
    dense = sweep("adam", args.adam_lr, lambda label, lr: replicate(label, partial(train_adam, lr)))
    teachers = dict(zip(seeds, dense, strict=True))
    dense_ms = results["adam"]["inference_ms"]

    # Bregman methods with λ control toward each target density (LinBreg at the first one)
    targets = [float(t) for t in args.targets.split(",")]

    def train_bregman(name: str, target: float, lr: float, label: str, seed: int) -> None:
        model = network(
            widths,
            dense=False,
            seed=seed,
            start=args.sparse_start,
            open_gates=args.open_gates,
            grouping=args.grouping,
        )
        lam = args.linbreg_lam if name == "linbreg" else args.lam
        if name == "linbreg":
            opt = LinBreg(bregman_groups(model.net, lam, lr, grouping=args.grouping), momentum=0.9)
        else:
            opt = AdaBreg(bregman_groups(model.net, lam, lr, gate_factor=10.0, grouping=args.grouping))
        settle = settle_step(args.steps, args.settle)
        control = DensityController(
            opt,
            model.net,
            target,
            every=10,
            measure=MEASURES[args.measure],
            settle=settle,
            prune=branch_pruner(args.min_branch_width),
        )
        terms = [Distillation(teachers[seed], args.distill)] if args.distill else []
        budget = args.select_budget or target
        if attempt(label, model, opt, args.steps, seed, True, control, terms=terms, budget=budget):
            results[label]["lam_final"] = lam * control.scale

    runs = [("linbreg", targets[0])] + [("adabreg", t) for t in targets]
    for name, target in [(n, t) for n, t in runs if n in args.methods]:
        rates = [args.linbreg_lr] if name == "linbreg" else args.adabreg_lr
        sweep(
            f"{name}@{target:g}",
            rates,
            lambda label, lr, n=name, t=target: replicate(label, partial(train_bregman, n, t, lr)),
        )

    def train_proxsgd(label: str, seed: int) -> None:
        """Proximal SGD from the dense start, λ raised until the first target density is reached."""
        model = network(widths, dense=True, seed=seed)
        opt = ProxSGD(
            bregman_groups(model.net, args.proxsgd_lam, args.proxsgd_lr, grouping=args.grouping), momentum=0.9
        )
        control = DensityController(opt, model.net, targets[0], every=10)
        attempt(label, model, opt, args.steps, seed, True, control)

    if "proxsgd" in args.methods:
        replicate(f"proxsgd@{targets[0]:g}", train_proxsgd)

    # magnitude pruning of each dense network to as many weights as AdaBreg's compacted network keeps
    reference = results.get(f"adabreg@{targets[0]:g}", {}).get("kept", targets[0])
    adam_lr = results["adam"].get("lr", args.adam_lr[0])

    def train_pruned(label: str, seed: int) -> None:
        pruned = copy.deepcopy(dense[seeds.index(seed)])
        masks = magnitude_prune(pruned.net, reference)
        opt = torch.optim.Adam(pruned.parameters(), lr=adam_lr / 3, foreach=True)

        def reapply(step: int) -> None:
            with torch.no_grad():
                for name, module in pruned.net.convs.items():
                    module.weight.mul_(masks[name])

        attempt(label, pruned, opt, max(1, int(args.finetune * args.steps)), seed, True, after=reapply)

    if "magnitude" in args.methods:
        replicate("magnitude", train_pruned)

    # a dense network with every width scaled by √kept: about as many weights as AdaBreg keeps
    thin_widths = tuple(max(1, round(w * math.sqrt(reference))) for w in widths)

    def train_thin(label: str, seed: int) -> None:
        model = network(thin_widths, dense=True, seed=seed)
        opt = torch.optim.Adam(model.parameters(), lr=adam_lr, foreach=True)
        attempt(label, model, opt, args.steps, seed, False, warmup=dense_warmup)

    if "thin" in args.methods:
        replicate("thin", train_thin)
        results["thin"]["widths"] = list(thin_widths)

    for result in results.values():
        if "psnr" in result:
            result["flops_reduction"] = results["adam"]["flops"] / result["flops"]
            result["inference_speedup"] = dense_ms / result["inference_ms"]
            result["psnr_vs_adam"] = result["psnr"] - results["adam"]["psnr"]
    return {"task": task.config(), "methods": results}


def seed_mean(runs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Every numeric score averaged over the seeds that trained (a collapsed run counts, a diverged
    one is listed in ``diverged_seeds``), with each seed's PSNR, validation PSNR and density."""
    trained = [r for r in runs if "psnr" in r]
    if not trained:
        return {"diverged": "; ".join(r.get("diverged", "failed") for r in runs)}
    numeric = [k for k, v in trained[0].items() if isinstance(v, int | float)]
    mean: dict[str, Any] = {k: statistics.fmean(r[k] for r in trained) for k in numeric}
    mean["seeds"] = {
        str(s): {
            k: r.get(k)
            for k in (
                "psnr",
                "psnr_mr",
                "psnr_natural",
                "val_psnr",
                "density",
                "kept",
                "layer_channels",
                "gates",
                "history",
            )
        }
        for s, r in zip(seeds, runs, strict=True)
    }
    mean["diverged_seeds"] = [s for s, r in zip(seeds, runs, strict=True) if "psnr" not in r]
    best = max(trained, key=lambda r: r["val_psnr"])  # what a user who trains every seed would keep
    mean["best_seed"] = {"seed": seeds[runs.index(best)], "psnr": best["psnr"], "kept": best["kept"]}
    return mean


def source_means(psnr: list[float], sources: dict[str, list[Any]]) -> dict[str, float]:
    """``psnr_<source>``: the mean of ``psnr`` (one value per image, in the order of ``sources``'
    concatenated image lists) over each source's images."""
    means, start = {}, 0
    for source, images in sources.items():
        means[f"psnr_{source}"] = statistics.fmean(psnr[start : start + len(images)])
        start += len(images)
    return means


def nonzero_weights(net: GraphNet) -> int:
    """Non-zero entries of the weight tensors."""
    return sum(int(torch.count_nonzero(p)) for p in net.parameters() if p.dim() >= 2)


def per_seed(result: dict[str, Any]) -> str:
    """``30.28*/29.78/div.``: each seed's test PSNR (``*``: the seed with the best validation PSNR,
    the one a user would keep), or nothing for a single-seed run."""
    best = str(result.get("best_seed", {}).get("seed"))  # from seed_mean
    return "/".join(
        f"{r['psnr']:.2f}{'*' if seed == best else ''}" if r.get("psnr") is not None else "div."
        for seed, r in result.get("seeds", {}).items()
    )


def rate_list(text: str) -> list[float]:
    """``"1e-3,2e-3"`` → ``[0.001, 0.002]`` (learning rates to sweep)."""
    return [float(r) for r in text.split(",")]


def method_list(text: str) -> set[str]:
    """``"adabreg,magnitude"`` → the methods to run beside dense Adam (always run: the reference)."""
    methods = {m for m in text.split(",") if m}
    if unknown := methods - set(METHODS):
        raise argparse.ArgumentTypeError(
            f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}"
        )
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="denoise,deblur")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--widths", default="24,48,96")
    parser.add_argument(
        "--targets", default="0.08,0.15", help="target weight densities of the sparse methods"
    )
    parser.add_argument("--lam", type=float, default=0.05, help="initial λ of AdaBreg")
    parser.add_argument(
        "--linbreg-lam", dest="linbreg_lam", type=float, default=0.003, help="initial λ of LinBreg"
    )
    parser.add_argument(
        "--lr-schedule", dest="lr_schedule", default="constant", choices=("cosine", "constant")
    )
    parser.add_argument("--warmup", type=int, default=0, help="steps of linear learning-rate warm-up")
    parser.add_argument(
        "--adam-warmup",
        dest="adam_warmup",
        type=int,
        default=None,
        help="warm-up steps of the dense networks (adam, thin) alone (default: --warmup); sparse starts "
        "must not warm up, dense Adam needs it on wide networks (as recon train's dense twins)",
    )
    parser.add_argument("--adam-lr", dest="adam_lr", type=rate_list, default=[1e-3], help="a rate or a list")
    parser.add_argument(
        "--adabreg-lr", dest="adabreg_lr", type=rate_list, default=[1e-3], help="a rate or a list"
    )
    parser.add_argument("--linbreg-lr", dest="linbreg_lr", type=float, default=0.1)
    parser.add_argument("--proxsgd-lr", dest="proxsgd_lr", type=float, default=0.005)
    parser.add_argument("--proxsgd-lam", dest="proxsgd_lam", type=float, default=1e-3)
    parser.add_argument(
        "--finetune", type=float, default=0.2, help="fraction of steps to fine-tune after pruning"
    )
    parser.add_argument(
        "--select-every",
        type=int,
        default=0,
        help="keep the checkpoint (every N steps) with the best validation PSNR within the budget "
        "instead of the last one (0: the last one)",
    )
    parser.add_argument(
        "--select-budget",
        type=float,
        default=None,
        help="largest kept fraction a selected Bregman checkpoint may have (default: its target)",
    )
    parser.add_argument(
        "--distill",
        type=float,
        default=0.0,
        help="train the Bregman methods with the distillation term against the same seed's dense Adam "
        "network, at this weight (0: none)",
    )
    parser.add_argument(
        "--methods", type=method_list, default=set(METHODS), help="beside dense Adam: " + ",".join(METHODS)
    )
    parser.add_argument(
        "--seeds",
        type=lambda text: [int(s) for s in text.split(",")],
        default=[0],
        help="initialisation and batch-order seeds; several report means (and each seed in the JSON)",
    )
    parser.add_argument(
        "--sparse-start",
        dest="sparse_start",
        type=float,
        default=0.01,
        help="fraction of channels LinBreg / AdaBreg start with",
    )
    parser.add_argument(
        "--save-models",
        dest="save_models",
        help="folder to write every trained network to (compacted; model JSON + safetensors)",
    )
    parser.add_argument(
        "--unshuffle",
        type=int,
        default=1,
        help="run the super-network on f×f pixel blocks as channels (pixel_unshuffle f; 1: off)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="fraction of the steps at the end in which λ only rises until the measure is within the "
        "target, then the support is frozen, so that every network ends inside its budget (0: off)",
    )
    parser.add_argument(
        "--min-branch-width",
        type=int,
        default=0,
        help="with --settle: when the support is frozen, switch off the residual blocks left with "
        "fewer than this many channels somewhere (0: off)",
    )
    parser.add_argument(
        "--grouping",
        choices=GROUPINGS,
        default="channel",
        help="the groups of the sparse methods' regularizer and sparse start: output channels (a "
        "compactable architecture), single kernels, or single weights (ℓ1, unstructured)",
    )
    parser.add_argument(
        "--measure",
        choices=tuple(MEASURES),
        default="weights",
        help="what --targets bound: non-zero weights, or the compacted network's weights or FLOPs",
    )
    parser.add_argument(
        "--open-gates",
        dest="open_gates",
        type=lambda text: tuple(g for g in text.split(",") if g),
        default=(),
        help="gates the sparse starts open beside the global residual (e.g. skip0,skip1)",
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    retain_freed_memory()  # the allocator settings recon's CLI runs with (recon.allocator)
    if args.min_branch_width > 1 and not args.settle:
        parser.error("--min-branch-width acts when the support is frozen: it needs --settle")
    torch.manual_seed(0)
    widths = tuple(int(w) for w in args.widths.split(","))
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(
        f"super-network widths {widths}, {args.steps} steps of batch {args.batch}, "
        f"target densities {args.targets}"
    )
    probe = torch.rand(8, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    steps_ms = step_times(widths, args.batch, probe, unshuffle=args.unshuffle)
    print(
        "training step ms:",
        {k: round(v, 1) for k, v in steps_ms.items()},
        "ratios to Adam:",
        {k: round(v / steps_ms["adam"], 3) for k, v in steps_ms.items()},
    )
    settings = {**vars(args), "methods": sorted(args.methods)}
    out = {"benchmark": "sparsity", "machine": machine, "args": settings, "step_ms": steps_ms, "tasks": []}
    for task_name in [t for t in args.tasks.split(",") if t]:  # --tasks "": step times only
        print(f"task {task_name}:")
        out["tasks"].append(run_task(task_name, args))
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
    for task_result in out["tasks"]:
        print(f"\n{task_result['task']}")
        print(
            f"{'method':10s} {'PSNR':>6} {'MR':>6} {'photo':>6} {'SSIM':>6} {'ΔPSNR':>6} {'density':>8} "
            f"{'kept':>6} {'channels':>9} "
            f"{'GFLOPs':>7} {'FLOP red.':>9} {'speedup':>8} {'val PSNR':>8}  lr (swept)  PSNR per seed"
        )
        for name, r in task_result["methods"].items():
            if "psnr" not in r:
                print(f"{name:10s} {r.get('diverged', 'failed')}")
                continue
            print(
                f"{name:10s} {r['psnr']:6.2f} {r['psnr_mr']:6.2f} {r['psnr_natural']:6.2f} "
                f"{r['ssim']:6.3f} {r['psnr_vs_adam']:+6.2f} {r['density']:8.3f} {r['kept']:6.3f} "
                f"{r['active_channels']:4.0f}/{r['total_channels']:<4.0f} {r['flops'] / 1e9:7.2f} "
                f"{r['flops_reduction']:8.1f}× {r['inference_speedup']:7.1f}× {r['val_psnr']:8.2f}  "
                f"{r.get('lr', '')}  {per_seed(r)}"
            )


if __name__ == "__main__":
    main()
