"""Reconstruction quality on held-out real MR slices: baselines, dense and sparse learned networks.

    python benchmarks/reconstruction.py [--runs runs] [--extra LABEL=PATH,...] [--json out.json]

Held-out data: the test split of ``packaged-mr`` (dipy S0_10 and the T1 coronal slice, subjects
never used in training). Settings: MRI 4× (8% centre) and 8× (4%) random Cartesian masks (seeded per
volume), Gaussian deblurring (σ = 2, noise 0.01) and denoising (σ = 0.1) of the same slices.
Methods: zero-filled / adjoint, TV (deepinv PGD, λ from the validation split), Tikhonov (deblurring),
the dense network trained with Adam (``RUNS/<recipe>-dense``) and the sparse compacted network
(bundled, or ``RUNS/<recipe>``). Reported: PSNR / SSIM (fastMRI conventions, per volume, averaged
over volumes weighted by slices, and each volume's PSNR: the slice-weighted mean is mostly the ten
EPI slices, and hid how the models do on the sharp T1 slice that ``make demo`` reconstructs),
parameters, FLOPs per slice and reconstruction time per slice. ``--extra`` adds other trained models
(e.g. candidates for a bundled model) as rows of every setting.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.allocator import retain_freed_memory
from recon.datasets.readers import read_scan
from recon.datasets.scan import Scan
from recon.datasets.training import packaged_mr_root
from recon.metrics import image_metrics
from recon.modelio import bundled_models, load_model
from recon.nets import GraphNet, flops
from recon.reconstruct import prepare, reconstruct

SETTINGS = {
    "mri-4x": {
        "operator": "mri",
        "params": {"acceleration": 4.0, "center_fraction": 0.08},
        "noise": None,
        "baselines": ("zero-filled", "tv"),
    },
    "mri-8x": {
        "operator": "mri",
        "params": {"acceleration": 8.0, "center_fraction": 0.04},
        "noise": None,
        "baselines": ("zero-filled", "tv"),
    },
    "deblur-gauss": {
        "operator": "blur",
        "params": {"sigma": 2.0, "boundary": "reflect"},
        "noise": "gaussian:sigma=0.01",
        "baselines": ("zero-filled", "tikhonov", "tv"),
    },
    "denoise-gauss": {
        "operator": "denoise",
        "params": {},
        "noise": "gaussian:sigma=0.1",
        "baselines": ("zero-filled", "tv"),
    },
}


def test_volumes() -> list[Scan]:
    return [read_scan(p) for p in sorted((packaged_mr_root() / "test").glob("*.h5"))]


def image_scan(scan: Scan) -> Scan:
    """The ground-truth magnitudes of a k-space volume as an image scan (for deblurring/denoising)."""
    return Scan(scan.source, images=scan.images, attrs=dict(scan.attrs))


def run_model(folder: Path) -> Path | None:
    """The model a training run folder holds (``FOLDER/model``), or ``None``."""
    return folder / "model" if (folder / "model.json").is_file() else None


def locate_model(name: str, runs: Path, dense: bool) -> Path | None:
    if (path := run_model(runs / (f"{name}-dense" if dense else name))) is not None:
        return path
    if not dense and name in bundled_models():
        return bundled_models()[name]
    return None


def run_setting(
    name: str, setting: dict[str, Any], volumes: list[Scan], runs: Path, extra: dict[str, Path]
) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    methods: list[tuple[str, str, Path | None]] = [(m, m, None) for m in setting["baselines"]]
    for label, dense in (("dense (Adam)", True), ("sparse compact (AdaBreg)", False)):
        path = locate_model(name, runs, dense)
        if path is not None:
            methods.append((label, "learned", path))
    methods += [(label, "learned", path) for label, path in extra.items()]
    for label, method, path in methods:
        model = load_model(path)[0] if path is not None else None
        scores, slices, seconds = [], 0, 0.0
        for seed, scan in enumerate(volumes):
            scan = scan if setting["operator"] == "mri" else image_scan(scan)
            params = {**setting["params"], **({"seed": seed} if setting["operator"] == "mri" else {})}
            problem = prepare(scan, setting["operator"], params, noise=setting["noise"], seed=seed)
            result = reconstruct(problem, method, operator=setting["operator"], model=model)
            seconds += result.info["seconds"]  # the method alone, not the metrics
            scores.append((image_metrics(result.reconstruction, result.truth), len(result.truth)))
            slices += len(result.truth)
        weights = np.array([n for _, n in scores], dtype=float)
        row: dict[str, Any] = {
            k: float(np.average([s[k] for s, _ in scores], weights=weights)) for k in ("psnr", "ssim")
        }
        row["psnr_per_volume"] = {
            Path(scan.source).stem: float(s["psnr"]) for scan, (s, _) in zip(volumes, scores, strict=True)
        }
        row["ms_per_slice"] = 1e3 * seconds / slices
        if model is not None:
            row["params"] = sum(p.numel() for p in model.net.parameters())
            size = tuple(volumes[0].image_shape)
            row["gflops_per_slice"] = (
                flops(model.net.spec, size) / 1e9 if isinstance(model.net, GraphNet) else None
            )
        rows[label] = row
        print(
            f"  {label:26s} PSNR {row['psnr']:6.2f}  SSIM {row['ssim']:.3f}  "
            f"{row['ms_per_slice']:8.1f} ms/slice"
            + (f"  {row['params']} params" if "params" in row else "")
            + "  per volume "
            + ", ".join(f"{k} {v:.2f}" for k, v in row["psnr_per_volume"].items()),
            flush=True,
        )
    return rows


def extra_models(text: str) -> dict[str, Path]:
    """``"mni=runs/mri-4x-mni"`` → ``{"mni": runs/mri-4x-mni/model}`` (a run folder means its model)."""
    models = {}
    for item in filter(None, text.split(",")):
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise argparse.ArgumentTypeError(f"expected LABEL=PATH, got {item!r}")
        models[label] = run_model(Path(path)) or Path(path)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", default="runs", help="folder with <recipe>/ and <recipe>-dense/ training runs"
    )
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument(
        "--extra",
        type=extra_models,
        default={},
        help="more models as rows: LABEL=PATH,... (a model path without extension, or a run folder)",
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    retain_freed_memory()  # the allocator settings recon's CLI runs with (recon.allocator)
    torch.set_grad_enabled(False)
    volumes = test_volumes()
    print(
        f"held-out volumes: {[Path(v.source).name for v in volumes]}, {sum(v.slices for v in volumes)} slices"
    )
    out = {
        "benchmark": "reconstruction",
        "machine": {
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "settings": {},
    }
    for name in args.settings.split(","):
        print(f"{name}:")
        out["settings"][name] = run_setting(name, SETTINGS[name], volumes, Path(args.runs), args.extra)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
    print()
    for name, rows in out["settings"].items():
        base = rows.get("zero-filled", {}).get("psnr")
        tv = rows.get("tv", {}).get("psnr")
        dense = rows.get("dense (Adam)")
        print(f"{name}: " + ", ".join(f"{k} {v['psnr']:.2f}" for k, v in rows.items()))
        sparse = rows.get("sparse compact (AdaBreg)")
        if sparse and base is not None and tv is not None:
            print(
                f"  learned − zero-filled {sparse['psnr'] - base:+.2f} dB, "
                f"learned − TV {sparse['psnr'] - tv:+.2f} dB"
            )
        if sparse and dense and dense.get("gflops_per_slice"):
            print(
                f"  sparse − dense {sparse['psnr'] - dense['psnr']:+.2f} dB at "
                f"{100 * sparse['gflops_per_slice'] / dense['gflops_per_slice']:.1f}% of the dense FLOPs"
            )


if __name__ == "__main__":
    main()
