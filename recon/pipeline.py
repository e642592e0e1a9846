"""The main job end to end: read a scan, pick the method and model, reconstruct, write the outputs.

Without ``--model`` the learned method uses the bundled model for the operator (``mri-4x`` or
``mri-8x``, whichever acceleration is nearer; ``deblur-gauss``; ``denoise-gauss``). An operator with
no bundled model falls back to TV with a warning. A model trained for other settings than the
input's (acceleration, blur width, noise level) is used with a warning naming the difference.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from recon import reconstruct as rc
from recon.datasets.readers import read_scan
from recon.datasets.scan import Scan
from recon.errors import InputError
from recon.modelio import bundled_models, load_model
from recon.outputs import write_reconstruction
from recon.registry import get_registry

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


def input_files(folder: Path) -> list[Path]:
    """Files in ``folder`` that a registered reader claims by suffix (hidden files skipped)."""
    suffixes = {s for e in get_registry("dataset_readers").values() for s in e.meta.get("suffixes", ())}
    files = [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and any(p.name.lower().endswith(s) for s in suffixes)
    ]
    if not files:
        raise InputError("no readable files in this folder", folder)
    return files


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
) -> dict[str, Any]:
    """Reconstruct one file into ``out`` (+ ``.png`` and ``.metrics.json``); returns the report."""
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
    middle = result.reconstruction.shape[0] // 2
    label = method if method != "learned" else f"learned ({Path(str(model_name)).name})"
    panels = {
        "zero-filled" if problem.complex_images else "input (adjoint)": result.zero_filled[middle],
        label: result.reconstruction[middle],
    }
    title = f"{source.name}  slice {middle}  {label}"
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
    arrays = {"reconstruction": result.reconstruction, "zero_filled": result.zero_filled, "mask": result.mask}
    write_reconstruction(out, arrays, attrs, panels, title, result.metrics, error_keys=("|error|",))
    return {
        "input": str(source),
        "output": str(out),
        "method": method,
        "model": model_name,
        "seconds": round(result.info["seconds"], 3),
        "metrics": result.metrics,
    }
