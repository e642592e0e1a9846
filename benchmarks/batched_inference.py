"""K weight samples of one network: recon's grouped executor against torch.func's vmap and a loop.

    python benchmarks/batched_inference.py [--model mri-4x] [--samples 16] [--slices 2] [--json out.json]

Network alone (the bundled model's compact GraphNet on ``--slices`` test slices): the same K
perturbed weight sets evaluated by a Python loop of ``functional_call``, by ``torch.func.vmap`` over
``functional_call`` (the peer), and by ``recon.nets.stacked_forward``, with every weight sampled and
with the last 3 layers only. Whole reconstruction (``recon.uncertainty.predict_samples``): K samples
over every pass and over the last unrolled pass only (``iterations=1``), against one reconstruction.
Median wall times; every engine's outputs are checked against the loop's.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.func import functional_call, vmap

from recon.allocator import retain_freed_memory
from recon.datasets.readers import read_scan
from recon.datasets.training import packaged_mr_root
from recon.modelio import load_model
from recon.nets import stacked_forward
from recon.reconstruct import prepare
from recon.uncertainty import WeightSamples, predict_samples, subnetwork_parameters


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def engines(
    net: torch.nn.Module,
    weights: dict[str, torch.Tensor],
    stacked: dict[str, torch.Tensor],
    x: torch.Tensor,
    k: int,
) -> dict[str, Callable[[], torch.Tensor]]:
    """The three ways to run ``net`` under the ``k`` weight sets ``stacked`` (the rest: ``weights``)."""

    def loop() -> torch.Tensor:
        one = [
            functional_call(net, {**weights, **{n: t[i] for n, t in stacked.items()}}, (x,)) for i in range(k)
        ]
        return torch.stack(one)

    def vmapped() -> torch.Tensor:
        return vmap(lambda s: functional_call(net, {**weights, **s}, (x,)))(stacked)

    def grouped() -> torch.Tensor:
        return stacked_forward(net, {**weights, **stacked}, set(stacked), x, k)

    return {"loop": loop, "vmap": vmapped, "recon": grouped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mri-4x")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json")
    args = parser.parse_args()
    retain_freed_memory()  # the allocator settings recon's CLI runs with (recon.allocator)
    torch.manual_seed(0)
    model = load_model(args.model)[0].eval()  # a bundled name or a path
    net, k = model.net, args.samples
    volume = sorted((packaged_mr_root() / "test").glob("*.h5"))[0]
    problem = prepare(read_scan(volume), "mri", {"acceleration": 4.0, "center_fraction": 0.08, "seed": 0})
    y = problem.y[: args.slices]
    x = model.net_input(y, problem.physics)
    weights = {n: p.detach() for n, p in net.named_parameters()}
    out: dict = {
        "benchmark": "batched_inference",
        "machine": {
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "model": args.model,
        "input": list(x.shape),
        "samples": k,
        "network": {},
        "reconstruction": {},
    }
    print(f"{args.model}: input {tuple(x.shape)}, K = {k}, {torch.get_num_threads()} threads")
    columns = ("one ms", "loop ms", "vmap ms", "recon ms")
    print(
        f"{'sampled':10s} " + " ".join(f"{c:>8}" for c in columns) + f" {'vmap/recon':>10} {'loop/recon':>10}"
    )
    with torch.no_grad():
        one = median_seconds(lambda: net(x), args.repeats)
        for label, layers in (("all", 0), ("last 3", 3)):
            names = subnetwork_parameters(net, layers)
            stacked = {n: weights[n] + 0.01 * torch.randn(k, *weights[n].shape) for n in names}
            runs = engines(net, weights, stacked, x, k)
            reference = runs["loop"]()
            for name in ("vmap", "recon"):
                torch.testing.assert_close(runs[name](), reference, rtol=1e-4, atol=1e-4)
            t = {name: median_seconds(run, args.repeats) for name, run in runs.items()}
            out["network"][label] = {"one_s": one, **{f"{n}_s": v for n, v in t.items()}}
            ms = " ".join(f"{t[n] * 1e3:8.1f}" for n in ("loop", "vmap", "recon"))
            ratios = f"{t['vmap'] / t['recon']:10.2f} {t['loop'] / t['recon']:10.2f}"
            print(f"{label:10s} {one * 1e3:8.1f} {ms} {ratios}")
        single = median_seconds(lambda: model(y, problem.physics), args.repeats)
        print(f"\nwhole reconstruction: one {single * 1e3:.1f} ms")
        for label, iterations in (("every pass", 0), ("last pass", 1)):
            samples = WeightSamples(
                {n: weights[n] + 0.01 * torch.randn(k, *weights[n].shape) for n in weights},
                "test",
                {"iterations": iterations},
            )
            seconds = median_seconds(
                lambda s=samples: predict_samples(model, s, y, problem.physics), args.repeats
            )
            out["reconstruction"][label] = {
                "one_s": single,
                "samples_s": seconds,
                "times_one": seconds / single,
            }
            print(f"  K = {k}, {label:10s}: {seconds * 1e3:7.1f} ms = {seconds / single:5.1f}× one")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
