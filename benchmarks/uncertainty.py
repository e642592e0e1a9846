"""Uncertainty maps on held-out real MR slices: every sampler, calibrated, against deepinv's ULA.

    python benchmarks/uncertainty.py [--runs runs] [--settings mri-4x,mri-8x] [--samples 16] [--json out.json]

For each setting (MRI 4× with 8% centre, 8× with 4%, random Cartesian masks seeded per volume) the
sparse compacted model (``RUNS/<setting>/model``, else the bundled one) gets ``K`` weight samples
from every sampler (``recon sample``), conformal factors for 90% intervals fitted on the validation
split (``recon calibrate``: one per spread group), and is scored on the test split (subjects never
used in training or calibration): empirical coverage of the 90% intervals (target 0.85–0.95; also
with one pooled factor, the classical split-conformal interval, for comparison), Spearman(std, |error|)
(target ≥ 0.5), AUSE (lower is better), AUROC for localising the pixels whose error is above the
volume's 95th percentile (target ≥ 0.85), PSNR of the posterior mean, and the time of the K-sample
maps relative to one reconstruction of the same slices (target ≤ 8× for K = 16; best of 2 runs
against best of 3, median over volumes). Each sampler runs
once per ``--variants`` entry: over every weight (``all``), over the last ``N`` layers only
(``layers=N``, subnetwork inference) and over the last ``M`` passes of an unrolled model only
(``iterations=M``); what the samples do not touch is evaluated once for all of them.

With ``--variance-head`` each model first gets a variance head (``recon fit-variance``, kept beside
it), and every row's std is then the total √(s_e² + a²) of the samples' spread and the
head's aleatoric estimate, calibrated and scored like the samples' spread alone.

Peer: deepinv's ``ULA`` (unadjusted Langevin on the image, ``ScorePrior`` around deepinv's
``TVDenoiser``, L2 data fidelity) on the same measurements; its intervals are Gaussian
(mean ± z·std) and uncalibrated, as deepinv provides them.
"""

from __future__ import annotations

import argparse
import atexit
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import deepinv as dinv
import numpy as np
import torch

from recon.allocator import retain_freed_memory
from recon.datasets.readers import read_scan
from recon.datasets.training import packaged_mr_root
from recon.errors import InputError
from recon.layout import to_channel_pair
from recon.metrics import auroc, ause, coverage, image_metrics, spearman
from recon.modelio import bundled_models, load_model
from recon.physics import parse_spec
from recon.pipeline import (
    fit_variance_model,
    sample_model,
    store_calibration,
    uncertainty_maps,
    validation_moments,
    variance_head_of,
)
from recon.reconstruct import Problem, prepare, reconstruct
from recon.uncertainty import (
    Calibration,
    VarianceHead,
    conformal_calibration,
    load_samples,
    samples_path,
)

SETTINGS = {
    "mri-4x": {"acceleration": 4.0, "center_fraction": 0.08},
    "mri-8x": {"acceleration": 8.0, "center_fraction": 0.04},
}
SAMPLERS = ("psgld", "baoab", "mc-dropout", "ensemble")
COVERAGE = 0.9
Z90 = 1.6448536269514722  # two-sided 90% Gaussian interval
PIPELINE_METRICS = {  # this table's names → the keys of recon.pipeline.uncertainty_maps' metrics
    "psnr": "psnr",
    "ssim": "ssim",
    "coverage": "coverage",
    "spearman": "spearman_std_error",
    "ause": "ause",
    "auroc": "auroc_large_errors",
}


def test_problems(params: dict[str, float]) -> list[Problem]:
    files = sorted((packaged_mr_root() / "test").glob("*.h5"))
    return [prepare(read_scan(f), "mri", {**params, "seed": seed}, seed=seed) for seed, f in enumerate(files)]


def scores(mean: np.ndarray, std: np.ndarray, lower: np.ndarray, upper: np.ndarray, truth: np.ndarray):
    error = np.abs(mean - truth)
    return {
        **image_metrics(mean, truth),
        "coverage": coverage(lower, upper, truth),
        "spearman": spearman(std, error),
        "ause": ause(std, error),
        "auroc": auroc(std, error >= np.quantile(error, 0.95)),
    }


def weighted(rows: list[tuple[dict[str, float], int]]) -> dict[str, float]:
    weights = np.array([n for _, n in rows], dtype=float)
    return {k: float(np.average([r[k] for r, _ in rows], weights=weights)) for k in rows[0][0]}


def stored_samples_match(model_path: Path, spec: str, k: int) -> bool:
    """Whether the samples beside the model came from ``spec`` (same options, at least ``k``)."""
    sampler, options = parse_spec(spec)
    try:
        stored = load_samples(samples_path(model_path, sampler))
    except InputError:
        return False
    return stored.count >= k and all(str(stored.settings.get(key)) == value for key, value in options.items())


def recon_sampler(
    model_path: Path,
    spec: str,
    problems: list[Problem],
    k: int,
    seed: int,
    reuse: bool = False,
    head: VarianceHead | None = None,
) -> dict[str, Any]:
    sampler = spec.split(":")[0]
    start = time.perf_counter()
    sampling: float | None = None
    if not (reuse and stored_samples_match(model_path, spec, k)):
        try:
            sample_model(model_path, spec, k, seed=seed, progress=False)
        except InputError as exc:  # a diverged chain is a result, not the end of the benchmark
            return {"failed": str(exc)}
        sampling = time.perf_counter() - start
    moments = validation_moments(model_path, sampler, samples=k)
    pooled = conformal_calibration(*moments, COVERAGE, bins=1)  # the comparison column
    calibration = conformal_calibration(*moments, COVERAGE)  # what recon stores and uses
    store_calibration(model_path, sampler, COVERAGE, calibration)
    model = load_model(model_path)[0]
    weights = load_samples(samples_path(model_path, sampler), model).subset(k)
    rows, ratios = [], []
    for problem in problems:
        maps, metrics, seconds = uncertainty_maps(problem, model, weights, COVERAGE, head)
        seconds = min(seconds, uncertainty_maps(problem, model, weights, COVERAGE, head)[2])  # best of 2
        one = min(
            reconstruct(problem, "learned", operator="mri", model=model).info["seconds"] for _ in range(3)
        )
        ratios.append(seconds / one)  # both times exclude metrics: the network passes only
        row = {name: metrics[key] for name, key in PIPELINE_METRICS.items()}
        row["coverage_one_factor"] = one_factor_coverage(maps, pooled, problem)
        rows.append((row, problem.y.shape[0]))
    return {
        **weighted(rows),
        "calibration": calibration.to_json(),
        "one_factor": pooled.factors[0],
        "time_vs_one": statistics.median(ratios),
        "sampling_seconds": sampling,
    }


def one_factor_coverage(maps: dict[str, np.ndarray], pooled: Calibration, problem: Problem) -> float:
    """Coverage of the intervals that one pooled conformal factor would give (the comparison for
    recon's per-spread-group factors)."""
    lower, upper = pooled.bounds(torch.from_numpy(maps["mean"]), torch.from_numpy(maps["std"]))
    return coverage(lower, upper, problem.truth[:, 0].numpy() * problem.scale)


def ula_peer(problems: list[Problem], iterations: int, seed: int) -> dict[str, Any]:
    """deepinv ULA on the image (2-channel real layout), TV score prior, Gaussian intervals."""
    rows, seconds = [], 0.0
    for problem in problems:
        y2 = to_channel_pair(problem.y).contiguous()
        sampler = dinv.sampling.ULA(
            prior=dinv.optim.ScorePrior(dinv.models.TVDenoiser(n_it_max=20)),
            data_fidelity=dinv.optim.data_fidelity.L2(sigma=0.05),
            step_size=1e-3,  # below 1/L, L = 1/0.05² (likelihood) + 1/0.05² (score of the TV denoiser)
            sigma=0.05,
            alpha=1.0,
            max_iter=iterations,
            thinning=5,
            burnin_ratio=0.3,
            clip=(-2.0, 2.0),
            verbose=False,
        )
        torch.manual_seed(seed)  # deepinv's ULA draws from the global RNG
        start = time.perf_counter()
        with torch.no_grad():
            mean, var = sampler(y2, problem.physics)
        seconds += time.perf_counter() - start
        magnitude = mean.pow(2).sum(1).sqrt().numpy() * problem.scale  # the input's scale, as recon's maps
        std = var.clamp_min(0).sum(1).sqrt().numpy() * problem.scale
        truth = problem.truth[:, 0].numpy() * problem.scale
        rows.append((scores(magnitude, std, magnitude - Z90 * std, magnitude + Z90 * std, truth), len(truth)))
    return {**weighted(rows), "seconds": seconds}


def private_copy(model: Path, folder: Path) -> Path:
    """A copy of a bundled model, so that sampling writes its samples beside the copy, not into the
    package (where they would replace the shipped ones)."""
    for suffix in (".json", ".safetensors"):
        shutil.copyfile(model.with_suffix(suffix), folder / f"{model.name}{suffix}")
    return folder / model.name


def rounded(row: dict[str, float]) -> str:
    return json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument(
        "--variants",
        default="all,layers=3,iterations=1",
        help="sampler options, one run each, comma-separated: all (every weight), layers=N (the "
        "last N layers), iterations=M (the last M unrolled passes)",
    )
    parser.add_argument(
        "--reuse-samples",
        action="store_true",
        help="keep stored samples drawn with the same options (re-times inference and maps only)",
    )
    parser.add_argument(
        "--variance-head",
        action="store_true",
        help="fit a variance head beside each model first (kept there), so std = √(epistemic² + aleatoric²)",
    )
    parser.add_argument("--ula-iterations", dest="ula_iterations", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()
    retain_freed_memory()  # the allocator settings recon's CLI runs with (recon.allocator)
    out: dict[str, Any] = {
        "benchmark": "uncertainty",
        "machine": {
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "samples": args.samples,
        "settings": {},
    }
    scratch = Path(tempfile.mkdtemp(prefix="recon-uncertainty-"))  # copies of bundled models
    atexit.register(shutil.rmtree, scratch, True)
    for name in args.settings.split(","):
        run = Path(args.runs) / name / "model"
        model_path = (
            run if run.with_suffix(".json").is_file() else private_copy(bundled_models()[name], scratch)
        )
        problems = test_problems(SETTINGS[name])
        if args.variance_head and variance_head_of(model_path) is None:
            fit_variance_model(model_path, seed=args.seed, progress=False)
        head = variance_head_of(model_path)  # std = √(epistemic² + aleatoric²) in every row when present
        print(f"{name}: model {model_path}, {sum(p.y.shape[0] for p in problems)} test slices", flush=True)
        rows: dict[str, Any] = {}
        for variant in args.variants.split(","):
            for sampler in args.samplers.split(","):
                label, spec = (
                    (sampler, sampler)
                    if variant == "all"
                    else (f"{sampler} {variant}", f"{sampler}:{variant}")
                )
                label += " + variance head" if head is not None else ""
                rows[label] = recon_sampler(
                    model_path, spec, problems, args.samples, args.seed, args.reuse_samples, head
                )
                print(f"  {label:40s} {rounded(rows[label])}", flush=True)
        rows["deepinv ULA (TV)"] = ula_peer(problems, args.ula_iterations, args.seed)
        print(f"  {'ULA':18s} {rounded(rows['deepinv ULA (TV)'])}")
        out["settings"][name] = rows
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
    print()
    header = (
        f"{'method':40s} {'PSNR':>6} {'cover90':>7} {'1-factor':>8} {'Spearman':>8} "
        f"{'AUSE':>6} {'AUROC':>6} {'×one':>6}"
    )
    for name, rows in out["settings"].items():
        print(f"{name}\n{header}")
        for method, r in rows.items():
            if "failed" in r:
                print(f"{method:40s} {r['failed']}")
                continue
            ratio = f"{r['time_vs_one']:6.1f}" if "time_vs_one" in r else "     —"
            one = f"{r['coverage_one_factor']:8.3f}" if "coverage_one_factor" in r else "       —"
            print(
                f"{method:40s} {r['psnr']:6.2f} {r['coverage']:7.3f} {one} {r['spearman']:8.3f} "
                f"{r['ause']:6.3f} {r['auroc']:6.3f} {ratio}"
            )


if __name__ == "__main__":
    main()
