"""Where a compacted network's CPU time goes: each convolution of a sparse, compacted model against the
same layer of its dense super-network, in one run.

    python benchmarks/compact_speed.py [--models denoise-gauss,deblur-gauss,mri-4x] [--size 256]
        [--threads 1] [--compile] [--json out.json]

For every bundled (or given) model the dense super-network is rebuilt from the model's recorded
recipe (``gated-unet`` and its widths; random weights: the time of a convolution does not depend on
its values). Each convolution is timed alone on an input of its real shape, in both networks, and
reported with its FLOP ratio and time ratio; then the whole networks, in the default (NCHW) and the
channels-last memory layout (which oneDNN runs faster, the dense network most), and the compacted
network as ``recon reconstruct`` runs it (:func:`recon.nets.inference_network`: sum gates, offsets and
channel placements folded into convolutions, channel counts padded up to multiples of 8; the
``aligned_*`` keys of the JSON), whose ratio is given against the *searched* FLOP reduction. The
issue's target is a whole-network speedup of at least 0.6 × the FLOP reduction. A second table times one 3×3
convolution c → c at full resolution for c = 1 … 32, the floor the thin full-resolution layers
meet: with oneDNN on this CPU a layer's time stops falling with its channel count well before its
FLOPs do.

The process runs with the allocator settings of recon's CLI (:mod:`recon.allocator`). Under glibc's
defaults the dense network's larger activations came back as fresh pages on every pass. Its
best-of-25 then depended on the allocator's state, 63–80 ms for the same network, and that
inflated the ratio by up to 0.1.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recon.allocator import retain_freed_memory
from recon.modelio import load_model
from recon.nets import GraphNet, inference_network
from recon.nets.graph import flops, spatial_sizes
from recon.nets.search_spaces import gated_unet

REPEATS = 25  # each time is the best of this many runs (this VM's timings vary by ±30%)


def best_ms(fn, repeats: int = REPEATS) -> float:
    return interleaved_best_ms({"": fn}, repeats)[""]


def interleaved_best_ms(fns: dict[str, Any], repeats: int = REPEATS) -> dict[str, float]:
    """The best time of each function over ``repeats`` rounds that run every function once, in
    turn: this VM's speed drifts by up to 30% within minutes, and timing the dense network's runs
    all before the compacted one's put that drift into their ratio (the same dense network measured
    71–94 ms within one run)."""
    best = dict.fromkeys(fns, math.inf)
    with torch.no_grad():
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for label, fn in fns.items():
                start = time.perf_counter()
                fn()
                best[label] = min(best[label], time.perf_counter() - start)
    return {label: t * 1e3 for label, t in best.items()}


def dense_twin(net: GraphNet, config: dict[str, Any]) -> GraphNet:
    """The super-network the compacted ``net`` was searched in (random weights)."""
    if config.get("network") != "gated-unet":
        raise SystemExit(f"only gated-unet models can be rebuilt, got {config.get('network')!r}")
    params = dict(config.get("network_params", {}))
    channels = int(net.spec["in_channels"])  # the image's (a residual U-Net's output has as many)
    return GraphNet(gated_unet(channels, channels, **params)).eval()


def layer_rows(compact: GraphNet, dense: GraphNet, size: tuple[int, int]) -> list[dict[str, Any]]:
    sizes = {"compact": spatial_sizes(compact.spec, size), "dense": spatial_sizes(dense.spec, size)}
    rows = []
    for node in dense.conv_nodes():
        name = node["name"]
        row: dict[str, Any] = {"layer": name, "resolution": list(sizes["dense"][name])}
        for label, net in (("dense", dense), ("compact", compact)):
            conv = net.convs[name] if name in net.convs else None  # noqa: SIM401 (ModuleDict)
            if conv is None:  # the whole layer was switched off
                row[label] = None
                continue
            x = torch.rand(1, conv.in_channels, *sizes[label][node["inputs"][0]])
            out = math.prod(sizes[label][name])
            row[label] = {
                "in": conv.in_channels,
                "out": conv.out_channels,
                "flops": 2 * conv.in_channels * conv.out_channels * conv.kernel_size[0] ** 2 * out,
                "ms": best_ms(lambda conv=conv, x=x: conv(x)),
            }
        rows.append(row)
    return rows


def whole_network(
    compact: GraphNet, dense: GraphNet, rows: list[dict[str, Any]], size: tuple[int, int], compiled: bool
) -> dict[str, float]:
    """FLOP reductions and times of the convolutions (from ``rows``) and of the whole networks, in the
    default and the channels-last layout, and with ``compiled`` also compiled by ``torch.compile``
    (inductor: the element-wise work between convolutions — padding, gates, sums, ReLU — fused
    into generated loops)."""
    live = [r for r in rows if r["compact"] is not None]
    dense_flops = sum(r["dense"]["flops"] for r in rows)
    whole = {
        "conv_flop_reduction": dense_flops / sum(r["compact"]["flops"] for r in live),
        "dense_conv_ms": sum(r["dense"]["ms"] for r in rows),
        "compact_conv_ms": sum(r["compact"]["ms"] for r in live),
        "flop_reduction": flops(dense.spec, size) / flops(compact.spec, size),
    }
    inference = inference_network(compact)  # timed in both layouts, as "aligned" (the JSON's keys)
    whole["aligned_flop_reduction"] = flops(dense.spec, size) / flops(inference.spec, size)
    x = torch.rand(1, int(compact.spec["in_channels"]), *size)
    for layout, fmt in (("", torch.contiguous_format), ("_channels_last", torch.channels_last)):
        x_in = x.contiguous(memory_format=fmt)
        nets = {
            label: net.to(memory_format=fmt)
            for label, net in (("dense", dense), ("compact", compact), ("aligned", inference))
        }
        times = interleaved_best_ms({label: partial(net, x_in) for label, net in nets.items()})
        for label, net in nets.items():
            whole[f"{label}{layout}_ms"] = times[label]
            if compiled:
                torch._dynamo.reset()  # every GraphNet shares one forward: compile each afresh
                start = time.perf_counter()
                fast = torch.compile(net)
                best_ms(lambda fast=fast, x_in=x_in: fast(x_in), repeats=1)  # compiles
                whole[f"{label}{layout}_compile_s"] = time.perf_counter() - start
                whole[f"{label}{layout}_compiled_ms"] = best_ms(lambda fast=fast, x_in=x_in: fast(x_in))
    whole["speedup"] = whole["dense_ms"] / whole["compact_ms"]
    whole["conv_speedup"] = whole["dense_conv_ms"] / whole["compact_conv_ms"]
    whole["best_speedup"] = _fastest(whole, "dense", "ms") / _fastest(whole, "compact", "ms")
    whole["aligned_speedup"] = _fastest(whole, "dense", "ms") / _fastest(whole, "aligned", "ms")
    if compiled:
        whole["compiled_speedup"] = _fastest(whole, "dense", "compiled_ms") / _fastest(
            whole, "compact", "compiled_ms"
        )
    return whole


def _fastest(whole: dict[str, float], label: str, kind: str) -> float:
    """The time of network ``label`` in its faster memory layout."""
    return min(whole[f"{label}_{kind}"], whole[f"{label}_channels_last_{kind}"])


def channel_floor(size: tuple[int, int], widths: list[int]) -> list[dict[str, float]]:
    """Time of one 3×3 convolution c → c (reflect padding, as the networks use) at ``size``."""
    rows = []
    for c in widths:
        conv = nn.Conv2d(c, c, 3, padding=1, padding_mode="reflect")
        x = torch.rand(1, c, *size)
        rows.append({"channels": c, "ms": best_ms(lambda conv=conv, x=x: conv(x))})
    return rows


def report(name: str, rows: list[dict[str, Any]], whole: dict[str, float]) -> None:
    print(f"\n{name}: per convolution (time ratio = dense / compact)")
    header = (
        f"{'layer':14s} {'res':>9s} {'dense':>9s} {'compact':>9s} {'FLOP ratio':>10s} {'time ratio':>10s}"
    )
    print(f"  {header}")
    for r in rows:
        d, c = r["dense"], r["compact"]
        res = "×".join(map(str, r["resolution"]))
        if c is None:
            print(f"  {r['layer']:14s} {res:>9s} {d['in']:3d}→{d['out']:<3d}       off")
            continue
        print(
            f"  {r['layer']:14s} {res:>9s} {d['in']:3d}→{d['out']:<3d}   {c['in']:3d}→{c['out']:<3d}  "
            f"{d['flops'] / c['flops']:10.1f} {d['ms'] / c['ms']:10.2f}"
        )
    print(
        f"  convolutions alone: FLOP reduction {whole['conv_flop_reduction']:.2f}×, "
        f"speedup {whole['conv_speedup']:.2f}× "
        f"(ratio {whole['conv_speedup'] / whole['conv_flop_reduction']:.2f}); "
        f"whole network: FLOP reduction {whole['flop_reduction']:.2f}×, speedup {whole['speedup']:.2f}× "
        f"(ratio {whole['speedup'] / whole['flop_reduction']:.2f}; target ≥ 0.6)\n"
        f"  whole network {whole['dense_ms']:.1f} ms dense, {whole['compact_ms']:.1f} ms compact; "
        f"its convolutions alone {whole['dense_conv_ms']:.1f} / {whole['compact_conv_ms']:.1f} ms\n"
        f"  channels-last: {whole['dense_channels_last_ms']:.1f} ms dense, "
        f"{whole['compact_channels_last_ms']:.1f} ms compact; the faster layout of each: speedup "
        f"{whole['best_speedup']:.2f}× (ratio {whole['best_speedup'] / whole['flop_reduction']:.2f})\n"
        f"  folded and aligned (recon.nets.inference_network, as recon reconstruct runs it): "
        f"{whole['aligned_ms']:.1f} ms, channels-last {whole['aligned_channels_last_ms']:.1f} ms; "
        f"speedup {whole['aligned_speedup']:.2f}× "
        f"(ratio {whole['aligned_speedup'] / whole['flop_reduction']:.2f} to the searched FLOP reduction, "
        f"{whole['aligned_speedup'] / whole['aligned_flop_reduction']:.2f} "
        f"to the aligned network's {whole['aligned_flop_reduction']:.2f}×)"
    )
    if "compiled_speedup" in whole:
        speedup = whole["compiled_speedup"]
        print(
            f"  torch.compile, the faster layout of each: {_fastest(whole, 'dense', 'compiled_ms'):.1f} ms "
            f"dense, {_fastest(whole, 'compact', 'compiled_ms'):.1f} ms compact, speedup {speedup:.2f}× "
            f"(ratio {speedup / whole['flop_reduction']:.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="denoise-gauss,deblur-gauss,mri-4x")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="also time the networks under torch.compile")
    parser.add_argument("--json")
    args = parser.parse_args()
    retained = retain_freed_memory()  # the allocator settings recon's CLI runs with (recon.allocator)
    torch.set_num_threads(args.threads)
    size = (args.size, args.size)
    out: dict[str, Any] = {
        "benchmark": "compact_speed",
        "machine": {"platform": platform.platform(), "threads": args.threads, "torch": torch.__version__},
        "allocator_retains_freed_memory": retained,
        "size": list(size),
        "models": {},
    }
    for name in args.models.split(","):
        model, meta = load_model(name)
        compact = model.net.eval()
        dense = dense_twin(compact, meta.get("config", {}))
        rows = layer_rows(compact, dense, size)
        whole = whole_network(compact, dense, rows, size, args.compile)
        report(name, rows, whole)
        out["models"][name] = {"layers": rows, **whole}
    floor = channel_floor(size, [1, 2, 4, 6, 8, 10, 12, 14, 16, 24, 32])
    print(f"\none 3×3 convolution c → c at {size[0]}×{size[1]}: ms, and its time / FLOPs against c = 16")
    base = next(r["ms"] for r in floor if r["channels"] == 16)
    for r in floor:
        c = r["channels"]
        print(f"  c = {c:2d}  {r['ms']:6.2f} ms  time {r['ms'] / base:5.2f}  FLOPs {(c / 16) ** 2:5.2f}")
    out["channel_floor"] = floor
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
