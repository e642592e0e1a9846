"""MRI operator speed: A followed by Aᴴ on a batch of 16 × 320×320, recon vs deepinv vs bare FFTs.

All run in the same process on the same data, interleaved, ``--repeats`` times. Both the minimum
(the best estimate of the intrinsic cost on a shared machine, as ``timeit`` advises) and the median
are reported; the target ratios use the minimum. recon's outputs must agree with
``deepinv.physics.MRI`` to 1e-5.
Targets (issue 2): recon ≥ 1.3× faster than deepinv and within 1.3× of the bare fft2+ifft2 pair.

    python benchmarks/operators.py [--batch 16] [--size 320] [--repeats 30] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import deepinv as dinv
import torch

from recon.layout import to_channel_pair
from recon.operators.masks import RandomLineMask
from recon.operators.mri import CartesianMRI


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    shape = (args.size, args.size)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 1, *shape, dtype=torch.complex64, generator=g).to(device)
    x_pair = to_channel_pair(x).contiguous()
    mask = RandomLineMask(4, 0.08)(shape, seed=0).to(device)
    recon_op = CartesianMRI(mask).to(device)
    deepinv_op = dinv.physics.MRI(mask=mask, img_size=shape, device=device)

    candidates = {
        "recon (complex)": lambda: recon_op.A_adjoint(recon_op.A(x)),
        "recon (deepinv layout)": lambda: recon_op.A_adjoint(recon_op.A(x_pair)),
        "deepinv.physics.MRI": lambda: deepinv_op.A_adjoint(deepinv_op.A(x_pair)),
        "bare fft2+ifft2": lambda: torch.fft.ifft2(torch.fft.fft2(x, norm="ortho"), norm="ortho"),
    }
    with torch.no_grad():
        ours, theirs = (
            to_channel_pair(recon_op.A_adjoint(recon_op.A(x))),
            deepinv_op.A_adjoint(deepinv_op.A(x_pair)),
        )
        max_diff = float((ours - theirs).abs().max())
        k_diff = float((to_channel_pair(recon_op.A(x)) - deepinv_op.A(x_pair)).abs().max())
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for fn in candidates.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in candidates.items():
                _sync(device)
                start = time.perf_counter()
                fn()
                _sync(device)
                times[name].append(time.perf_counter() - start)

    median = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    best = {name: min(t) * 1e3 for name, t in times.items()}
    floor, peer = best["bare fft2+ifft2"], best["deepinv.physics.MRI"]
    rows = []
    print(
        f"MRI A then Aᴴ, batch {args.batch} × {shape[0]}×{shape[1]} complex64, {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} runs"
    )
    print(f"{'implementation':<24} {'min ms':>8} {'median ms':>10} {'vs deepinv':>19} {'× bare FFT':>11}")
    for name, ms in best.items():
        rows.append(
            {
                "implementation": name,
                "min_ms": ms,
                "median_ms": median[name],
                "speedup_vs_deepinv": peer / ms,
                "ratio_to_floor": ms / floor,
            }
        )
        print(f"{name:<24} {ms:8.2f} {median[name]:10.2f} {peer / ms:18.2f}× {ms / floor:10.2f}×")
    print(f"max |recon − deepinv|: k-space {k_diff:.2e}, image {max_diff:.2e} (required < 1e-5)")
    result = {
        "benchmark": "operators.mri",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "deepinv": dinv.__version__,
        },
        "batch": args.batch,
        "size": list(shape),
        "repeats": args.repeats,
        "rows": rows,
        "max_abs_difference": max(max_diff, k_diff),
        "targets": {
            "speedup_vs_deepinv >= 1.3": peer / best["recon (complex)"] >= 1.3,
            "ratio_to_floor <= 1.3": best["recon (complex)"] / floor <= 1.3,
            "agreement < 1e-5": max(max_diff, k_diff) < 1e-5,
        },
    }
    print("targets:", ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in result["targets"].items()))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
