"""Uncertainty and hallucination maps: weight samples, batched inference, posterior maps, calibration."""

from recon.uncertainty.maps import (
    CALIBRATION_BINS,
    Calibration,
    PosteriorMaps,
    conformal_calibration,
    interval_scale,
    null_space_projector,
    posterior_maps,
)
from recon.uncertainty.samples import (
    WeightSamples,
    load_samples,
    predict_samples,
    samples_path,
    save_samples,
    stack_parameters,
    subnetwork_parameters,
)

__all__ = [
    "CALIBRATION_BINS",
    "Calibration",
    "PosteriorMaps",
    "WeightSamples",
    "conformal_calibration",
    "interval_scale",
    "load_samples",
    "null_space_projector",
    "posterior_maps",
    "predict_samples",
    "samples_path",
    "save_samples",
    "stack_parameters",
    "subnetwork_parameters",
]
