"""Choose the TV and Tikhonov weights λ on the validation split (PSNR over a λ grid, per operator).

    python benchmarks/tv_lambda.py [--split val] [--json out.json]

Settings: MRI 4× (8% centre) and 8× (4%) random masks (seed 1); Gaussian blur σ = 2 with noise 0.01
(reflect boundary); denoising at σ = 0.1. Validation split of ``packaged-mr`` (dipy aniso_vox,
a subject used neither for training nor for testing). TV: 100 PGD iterations of deepinv's TV prior.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from recon.datasets.readers import read_scan
from recon.datasets.scan import Scan
from recon.datasets.training import packaged_mr_root
from recon.reconstruct import prepare, reconstruct

SETTINGS = {
    "mri-4x": ("mri", {"acceleration": 4.0, "center_fraction": 0.08, "seed": 1}, None, ("tv",)),
    "mri-8x": ("mri", {"acceleration": 8.0, "center_fraction": 0.04, "seed": 1}, None, ("tv",)),
    "deblur": ("blur", {"sigma": 2.0, "boundary": "reflect"}, "gaussian:sigma=0.01", ("tv", "tikhonov")),
    "denoise": ("denoise", {}, "gaussian:sigma=0.1", ("tv",)),
}
GRID = {"tv": (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1), "tikhonov": (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="val")
    parser.add_argument("--json")
    args = parser.parse_args()
    files = sorted((packaged_mr_root() / args.split).glob("*.h5"))
    scans = [read_scan(f) for f in files]
    rows = []
    print(f"{'setting':8s} {'method':9s} {'lambda':>7} {'PSNR':>7} {'SSIM':>6} {'PSNR input':>11}")
    for name, (operator, params, noise, methods) in SETTINGS.items():
        problems = [
            prepare(
                s if operator == "mri" else Scan(s.source, images=s.images),
                operator,
                params,
                noise=noise,
                seed=1,
            )
            for s in scans
        ]
        for method in methods:
            for lam in GRID[method]:
                kwargs = {"tv_lambda": lam} if method == "tv" else {"tikhonov_lambda": lam}
                results = [reconstruct(p, method, operator=operator, **kwargs) for p in problems]
                psnr = float(np.mean([r.metrics["psnr"] for r in results]))
                ssim = float(np.mean([r.metrics["ssim"] for r in results]))
                base = float(np.mean([r.metrics["psnr_zero_filled"] for r in results]))
                rows.append(
                    {
                        "setting": name,
                        "method": method,
                        "lambda": lam,
                        "psnr": psnr,
                        "ssim": ssim,
                        "psnr_input": base,
                    }
                )
                print(f"{name:8s} {method:9s} {lam:7.3f} {psnr:7.2f} {ssim:6.3f} {base:11.2f}", flush=True)
    print()
    for name, (_, _, _, methods) in SETTINGS.items():
        for method in methods:
            best = max(
                (r for r in rows if r["setting"] == name and r["method"] == method), key=lambda r: r["psnr"]
            )
            print(f"best {method} λ for {name}: {best['lambda']} ({best['psnr']:.2f} dB)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "benchmark": "tv_lambda",
                    "split": args.split,
                    "files": [f.name for f in files],
                    "rows": rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
