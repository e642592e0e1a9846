"""The main job end to end: read a scan, pick the method and model, reconstruct, write the outputs.

Without ``--model`` the learned method uses the bundled model for the operator (``mri-4x`` or
``mri-8x``, whichever acceleration is nearer; ``deblur-gauss``; ``denoise-gauss``). An operator with
no bundled model falls back to TV with a warning. A model trained for other settings than the
input's (acceleration, blur width, noise level) is used with a warning naming the difference.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from recon import reconstruct as rc
from recon.datasets.readers import read_scan
from recon.datasets.scan import Scan
from recon.datasets.training import PatchDataset, image_pool, packaged_mr_root
from recon.errors import InputError
from recon.files import check_replaceable, check_writable, pair_paths
from recon.metrics import auroc, ause, image_metrics, spearman
from recon.metrics import coverage as coverage_metric
from recon.modelio import bundled_models, load_model
from recon.outputs import write_reconstruction
from recon.registry import get_registry
from recon.tasks import Task, build_task
from recon.train import SimulatedBatches
from recon.uncertainty import (
    CALIBRATION_BINS,
    Calibration,
    VarianceHead,
    WeightSamples,
    aleatoric_variance,
    conformal_calibration,
    fit_variance_head,
    load_samples,
    load_variance_head,
    posterior_maps,
    predict_samples,
    predictive_moments,
    samples_path,
    save_samples,
    save_variance_head,
    variance_path,
)
from recon.uncertainty.samples import FORMAT as SAMPLES_FORMAT

MRI = ("mri", "mri-multicoil")
TASK_OF_OPERATOR = {"mri": "mri", "mri-multicoil": "mri", "blur": "deblur", "denoise": "denoise"}


def _acceleration(scan: Scan, params: Mapping[str, Any]) -> float:
    if scan.mask is not None:
        return 1.0 / max(float(np.mean(scan.mask)), 1e-6)
    return float(params.get("acceleration", 4.0))


def default_model(operator: str, scan: Scan, params: Mapping[str, Any]) -> str | None:
    """The bundled model for this operator and input, or ``None``."""
    available = bundled_models()
    if scan.kspace is not None or operator == "mri":
        candidates = {float(n[4:-1]): n for n in available if n.startswith("mri-") and n.endswith("x")}
        if not candidates:
            return None
        target = _acceleration(scan, params)
        return candidates[min(candidates, key=lambda a: abs(np.log(a / target)))]
    name = {"blur": "deblur-gauss", "denoise": "denoise-gauss"}.get(operator)
    return name if name in available else None


def model_warnings(
    metadata: Mapping[str, Any], operator: str, scan: Scan, params: Mapping[str, Any], noise: str | None
) -> list[str]:
    """Differences between what the model was trained for and this input (empty when none)."""
    task = dict(metadata.get("task", {}))
    expected = TASK_OF_OPERATOR.get(operator if scan.kspace is None else "mri")
    if task.get("task") != expected:
        raise InputError(f"the model was trained for {task.get('task')!r}, not for operator {operator!r}")
    notes = []
    if expected == "mri":
        trained, wanted = float(task.get("acceleration", 0)), _acceleration(scan, params)
        if trained and abs(np.log(trained / wanted)) > 0.2:
            notes.append(f"model trained at {trained:g}x acceleration, input is {wanted:.3g}x")
    elif expected == "deblur":
        sigma = float(params.get("sigma", 2.0))
        if (
            abs(sigma - float(task.get("blur_sigma", sigma))) > 1e-6
            or params.get("kernel", "gaussian") != "gaussian"
        ):
            notes.append(
                f"model trained for Gaussian blur sigma {task.get('blur_sigma')}, input uses {dict(params)}"
            )
    if expected in ("deblur", "denoise") and noise is not None and f"sigma={task.get('sigma')}" not in noise:
        notes.append(f"model trained with noise sigma {task.get('sigma')}, input noise is {noise}")
    return notes


def _posterior_draws(
    problem: rc.Problem, model: Any, samples: WeightSamples, head: VarianceHead | None, chunk: int = 2
) -> Iterable[tuple[torch.Tensor, torch.Tensor | None]]:
    """Per chunk of slices: the ``K`` reconstructions and the head's aleatoric variance (or ``None``)."""
    for first in range(0, problem.y.shape[0], chunk):
        y = problem.y[first : first + chunk]
        draws = predict_samples(model, samples, y, problem.physics)
        mean = draws.mean(0)
        yield draws, None if head is None else aleatoric_variance(head, model, mean, y, problem.physics)


def variance_head_of(model_name: str | Path, device: Any = "cpu") -> VarianceHead | None:
    """The model's variance head, if one was fitted (``recon fit-variance``)."""
    path = variance_path(model_name)
    return load_variance_head(path, device) if pair_paths(path)[0].is_file() else None


def uncertainty_maps(
    problem: rc.Problem,
    model: Any,
    samples: WeightSamples,
    coverage: float,
    head: VarianceHead | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float] | None, float]:
    """Posterior maps of every slice, in the input's scale: arrays ``(S, H, W)`` (with a variance
    ``head`` also ``epistemic`` and ``aleatoric``; ``std`` is then their total), metrics against the
    truth when known (PSNR/SSIM of the mean, interval coverage, Spearman(std, |error|), AUROC for
    the pixels with the 5% largest errors, AUSE), and the seconds spent."""
    calibration = samples.calibration.get(f"{coverage:g}")
    if calibration is None:
        warnings.warn(
            f"no calibration for coverage {coverage:g} (run `recon calibrate`): bounds are "
            "uncalibrated (sample quantiles, or Gaussian with a variance head)",
            UserWarning,
            stacklevel=2,
        )
    keys = ("mean", "std", "lower", "upper", "hallucination")
    keys += () if head is None else ("epistemic", "aleatoric")
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    start = time.perf_counter()
    with torch.no_grad():
        for draws, variance in _posterior_draws(problem, model, samples, head):
            maps = posterior_maps(draws, problem.physics, coverage, calibration, variance)
            for key in keys:
                parts[key].append(getattr(maps, key))
    seconds = time.perf_counter() - start
    arrays = {k: (torch.cat(v)[:, 0] * problem.scale).float().cpu().numpy() for k, v in parts.items()}
    metrics = None
    if problem.truth is not None:
        truth = (problem.truth[:, 0] * problem.scale).float().cpu().numpy()
        arrays = {k: rc._crop_to(v, truth.shape) for k, v in arrays.items()}
        error = np.abs(arrays["mean"] - truth)
        metrics = {
            **image_metrics(arrays["mean"], truth),
            "coverage": coverage_metric(arrays["lower"], arrays["upper"], truth),
            "spearman_std_error": spearman(arrays["std"], error),
            "auroc_large_errors": auroc(arrays["std"], error >= np.quantile(error, 0.95)),
            "ause": ause(arrays["std"], error),
            "calibrated": calibration is not None,
        }
    return arrays, metrics, seconds


def reconstruct_file(
    source: Path,
    out: Path,
    *,
    operator: str,
    params: Mapping[str, str],
    noise: str | None,
    seed: int,
    method: str | None,
    model_name: str | None,
    device: Any,
    reader: str | None,
    tv_lambda: float | None,
    tikhonov_lambda: float | None,
    iterations: int,
    uncertainty: str | None = None,
    samples: int = 16,
    coverage: float = 0.9,
) -> dict[str, Any]:
    """Reconstruct one file into ``out`` (+ ``.png`` and ``.metrics.json``); returns the report.
    With ``uncertainty`` (a sampler name) the reconstruction is the posterior mean of ``samples``
    weight samples, and ``std``, ``lower``, ``upper`` and ``hallucination`` maps are written too (and
    ``epistemic`` / ``aleatoric`` when the model has a variance head)."""
    if uncertainty is not None and method not in (None, "learned"):
        raise InputError("uncertainty maps come from the learned method's weight samples")
    if model_name is not None and method not in (None, "learned"):
        raise InputError(f"--model is for the learned method, not {method!r}")
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise InputError("output name must end in .h5", out)
    if not out.parent.is_dir():
        raise InputError("output folder does not exist", out.parent)
    scan = read_scan(source, reader=reader)
    problem = rc.prepare(scan, operator, params, noise=noise, seed=seed, device=device)
    typed = problem.info.get("params", {})
    model = None
    if method in (None, "learned"):
        model_name = model_name or default_model(operator, scan, typed)
        if model_name is None:
            if method == "learned":
                raise InputError(f"no bundled model for operator {operator!r}; give --model")
            warnings.warn(f"no bundled model for operator {operator!r}: using TV", UserWarning, stacklevel=2)
            method = "tv"
        else:
            model, metadata = load_model(model_name, device=device)
            for note in model_warnings(metadata, operator, scan, typed, noise):
                warnings.warn(note, UserWarning, stacklevel=2)
            method = "learned"
    result = rc.reconstruct(
        problem,
        method,
        tv_lambda=tv_lambda,
        tikhonov_lambda=tikhonov_lambda,
        iterations=iterations,
        operator=operator,
        model=model,
    )
    extra: dict[str, np.ndarray] = {}
    if uncertainty is not None:
        if model is None:
            raise InputError("uncertainty maps need a learned model")
        weights = load_samples(samples_path(model_name, uncertainty), model).subset(samples)
        head = variance_head_of(model_name, device)
        extra, metrics, seconds = uncertainty_maps(problem, model, weights, coverage, head)
        result.reconstruction = extra.pop("mean")
        result.metrics = (
            None
            if metrics is None
            else {
                **metrics,
                **{k: v for k, v in (result.metrics or {}).items() if k.endswith("_zero_filled")},
            }
        )
        result.info["seconds"] = seconds
    if not np.isfinite(result.reconstruction).all():
        raise InputError(f"the {method} reconstruction is not finite (check the noise level and λ)", source)
    middle = result.reconstruction.shape[0] // 2
    label = method if method != "learned" else f"learned ({Path(str(model_name)).name})"
    panels = {
        "zero-filled" if problem.complex_images else "input (adjoint)": result.zero_filled[middle],
        label: result.reconstruction[middle],
    }
    title = f"{source.name}  slice {middle}  {label}"
    if extra:
        panels["std"] = extra["std"][middle]
        panels["hallucination"] = extra["hallucination"][middle]
        label += f" + {uncertainty} ×{samples}"
    if result.truth is not None:
        panels["ground truth"] = result.truth[middle]
        panels["|error|"] = abs(result.reconstruction[middle] - result.truth[middle])
        title += f"  PSNR {result.metrics['psnr']:.2f} dB" if result.metrics else ""
    from recon import __version__

    attrs = {
        "source": str(source),
        "operator": operator,
        "method": method,
        "model": str(model_name or ""),
        "params": typed,
        "noise": noise or "none",
        "scale": problem.scale,
        "recon_version": __version__,
        "metrics": result.metrics or {},
    }
    arrays = {
        "reconstruction": result.reconstruction,
        "zero_filled": result.zero_filled,
        "mask": result.mask,
        **extra,
    }
    if uncertainty is not None:
        attrs.update(uncertainty=uncertainty, samples=samples, coverage=coverage)
    write_reconstruction(
        out, arrays, attrs, panels, title, result.metrics, error_keys=("|error|", "std", "hallucination")
    )
    return {
        "input": str(source),
        "output": str(out),
        "method": method,
        "model": model_name,
        "seconds": round(result.info["seconds"], 3),
        "metrics": result.metrics,
    }


def task_of(metadata: Mapping[str, Any]) -> Task:
    """The training task recorded in a model's metadata."""
    config = dict(metadata.get("task", {}))
    name = config.pop("task", None)
    config.pop("operator", None)
    if name is None:
        raise InputError("the model's metadata does not say which task it was trained for")
    return build_task(name, **config)


def operator_of(task: Task) -> tuple[str, dict[str, Any], str | None]:
    """``(operator, parameters, noise spec)`` that reproduce a task's measurements in ``prepare``."""
    config = task.config()
    if config["task"] == "mri":
        return (
            "mri",
            {
                "acceleration": config["acceleration"],
                "center_fraction": config["center_fraction"],
                "mask": config["mask"],
            },
            None,
        )
    if config["task"] == "deblur":
        return (
            "blur",
            {"sigma": config["blur_sigma"], "boundary": "reflect"},
            f"gaussian:sigma={config['sigma']}",
        )
    if config["task"] == "denoise":
        return "denoise", {}, f"gaussian:sigma={config['sigma']}"
    raise InputError(f"no operator reproduces task {config['task']!r}")


def sample_model(
    model_name: str | Path,
    sampler: str,
    count: int,
    *,
    device: Any = "cpu",
    seed: int = 0,
    sources: tuple[str, ...] = ("mr", "natural", "phantom"),
    out: Path | None = None,
    progress: bool = True,
) -> tuple[Path, WeightSamples]:
    """Draw ``count`` weight samples of a model with a registered sampler (``name:key=value``) and
    store them next to the model (or at ``out``)."""
    from recon.physics import parse_spec

    if count < 2:
        raise InputError(f"need at least 2 samples, got {count}")
    name, texts = parse_spec(sampler)
    entry = get_registry("samplers").lookup(name)
    method = entry.build(**entry.parse_params(texts))
    path = out if out is not None else samples_path(model_name, name)
    check_writable(path.parent)
    check_replaceable(path, SAMPLES_FORMAT)
    model, metadata = load_model(model_name, device=device)
    task = task_of(metadata)
    data = _training_patches(metadata, sources, seed)
    samples = method.run(
        model,
        task,
        data,
        count,
        generator=torch.Generator().manual_seed(seed),
        device=device,
        progress=progress,
    )
    if not all(bool(torch.isfinite(t).all()) for t in samples.tensors.values()):
        raise InputError(f"sampler {name!r} diverged (non-finite weights): use a smaller step size")
    save_samples(samples, path)
    return path, samples


def _training_patches(metadata: Mapping[str, Any], sources: tuple[str, ...], seed: int) -> PatchDataset:
    """Clean training patches of the model's size (what samplers and variance heads learn from)."""
    patch = int(metadata.get("config", {}).get("patch", 64))
    return PatchDataset(image_pool(sources, "train", seed=seed), patch, 100_000, seed=seed + 17)


def fit_variance_model(
    model_name: str | Path,
    *,
    steps: int = 400,
    batch: int = 4,
    lr: float = 1e-3,
    device: Any = "cpu",
    seed: int = 0,
    sources: tuple[str, ...] = ("mr", "natural", "phantom"),
    progress: bool = True,
) -> tuple[Path, float]:
    """Fit the model's variance head (``recon.uncertainty.variance``) on fresh simulated training
    pairs and store it beside the model; returns its path and the last 50 steps' mean NLL."""
    if batch < 1 or steps < 1:
        raise InputError(f"steps and batch must be positive, got {steps}, {batch}")
    model, metadata = load_model(model_name, device=device)
    task = task_of(metadata)
    data = _training_patches(metadata, sources, seed)
    batches = SimulatedBatches(task, data, batch, torch.Generator().manual_seed(seed), device)
    losses: list[float] = []
    bar = tqdm(total=steps, desc="variance head", disable=not progress)

    def report(step: int, loss: float) -> None:
        losses.append(loss)
        bar.update()
        bar.set_postfix(nll=f"{loss:.3f}")

    head = fit_variance_head(model, batches, steps=steps, lr=lr, seed=seed, progress=report)
    bar.close()
    if not all(bool(torch.isfinite(t).all()) for t in head.state_dict().values()):
        raise InputError("the variance head diverged (non-finite weights): use a smaller learning rate")
    path = variance_path(model_name)
    settings = {"steps": steps, "batch": batch, "lr": lr, "seed": seed, "sources": list(sources)}
    save_variance_head(head, path, settings)
    return path, float(np.mean(losses[-50:]))


def validation_moments(
    model_name: str | Path,
    sampler: str,
    *,
    samples: int = 16,
    data: Path | None = None,
    device: Any = "cpu",
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Posterior mean, total std and truth of every validation volume (default: the ``packaged-mr``
    validation split) under the model's stored samples (and variance head, if any): what
    :func:`recon.uncertainty.conformal_calibration` fits the factors on."""
    model, metadata = load_model(model_name, device=device)
    stored = load_samples(samples_path(model_name, sampler), model)
    weights = stored.subset(min(samples, stored.count))
    operator, params, noise = operator_of(task_of(metadata))
    files = (
        sorted(data.glob("*.h5")) if data is not None else sorted((packaged_mr_root() / "val").glob("*.h5"))
    )
    if not files:
        raise InputError("no validation volumes (.h5) found", data)
    head = variance_head_of(model_name, device)
    means, stds, truths = [], [], []
    for seed, file in enumerate(files):
        scan = read_scan(file)
        if operator != "mri":
            scan = Scan(scan.source, images=scan.images)
        problem = rc.prepare(
            scan,
            operator,
            {**params, **({"seed": seed} if operator == "mri" else {})},
            noise=noise,
            seed=seed,
            device=device,
        )
        if problem.truth is None:
            raise InputError("calibration needs volumes with a ground truth", file)
        with torch.no_grad():
            chunks = _posterior_draws(problem, model, weights, head)
            moments = [predictive_moments(*chunk) for chunk in chunks]
        means.append(torch.cat([m[0] for m in moments]))
        stds.append(torch.cat([m[3] for m in moments]))
        truths.append(problem.truth)
    return means, stds, truths


def store_calibration(
    model_name: str | Path, sampler: str, coverage: float, calibration: Calibration
) -> None:
    """Keep ``calibration`` for ``coverage`` with the model's ``sampler`` samples."""
    path = samples_path(model_name, sampler)
    stored = load_samples(path)
    stored.calibration[f"{coverage:g}"] = calibration
    save_samples(stored, path)


def calibrate_model(
    model_name: str | Path,
    sampler: str,
    *,
    coverage: float = 0.9,
    samples: int = 16,
    data: Path | None = None,
    device: Any = "cpu",
    bins: int = CALIBRATION_BINS,
) -> Calibration:
    """Fit the conformal interval factors (``bins`` spread groups) on validation volumes (default:
    the ``packaged-mr`` validation split) and store them with the samples; returns them."""
    moments = validation_moments(model_name, sampler, samples=samples, data=data, device=device)
    calibration = conformal_calibration(*moments, coverage, bins)
    store_calibration(model_name, sampler, coverage, calibration)
    return calibration
