"""Choose the TV weight λ on the validation split: PSNR/SSIM of TV vs zero-filled over a λ grid.

    python benchmarks/tv_lambda.py --data data/mr [--split val] [--json out.json]

Builds ``packaged-mr`` into ``--data`` when it is missing. MRI at 4× (8% centre) and 8× (4%),
random masks (seed 1), 100 PGD iterations.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recon.datasets.builders import build_dataset
from recon.datasets.readers import read_scan
from recon.reconstruct import prepare, reconstruct

GRID = (0.002, 0.005, 0.01, 0.02, 0.05)
SETTINGS = ((4, 0.08), (8, 0.04))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/mr")
    parser.add_argument("--split", default="val")
    parser.add_argument("--json")
    args = parser.parse_args()
    root = Path(args.data)
    if not (root / "manifest.json").exists():
        build_dataset("packaged-mr", root)
    files = sorted((root / args.split).glob("*.h5"))
    rows = []
    print(f"{'accel':>5} {'lambda':>7} {'PSNR TV':>8} {'SSIM TV':>8} {'PSNR ZF':>8} {'SSIM ZF':>8}")
    for acceleration, centre in SETTINGS:
        problems = [
            prepare(read_scan(f), "mri", {"acceleration": acceleration, "center_fraction": centre, "seed": 1})
            for f in files
        ]
        for lam in GRID:
            results = [reconstruct(p, "tv", tv_lambda=lam) for p in problems]
            mean = {
                k: sum(r.metrics[k] for r in results) / len(results)
                for k in ("psnr", "ssim", "psnr_zero_filled", "ssim_zero_filled")
            }
            rows.append({"acceleration": acceleration, "lambda": lam, **mean})
            print(
                f"{acceleration:5d} {lam:7.3f} {mean['psnr']:8.2f} {mean['ssim']:8.3f} "
                f"{mean['psnr_zero_filled']:8.2f} {mean['ssim_zero_filled']:8.3f}",
                flush=True,
            )
    for acceleration, _ in SETTINGS:
        best = max((r for r in rows if r["acceleration"] == acceleration), key=lambda r: r["psnr"])
        print(f"best λ at {acceleration}×: {best['lambda']} ({best['psnr']:.2f} dB)")
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
