"""Uncertainty and hallucination maps: weight samples, batched inference, posterior maps, calibration."""

from recon.uncertainty.maps import (
    CALIBRATION_BINS,
    Calibration,
    PosteriorMaps,
    conformal_calibration,
    interval_scale,
    null_space_projector,
    posterior_maps,
    predictive_moments,
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
from recon.uncertainty.variance import (
    VarianceHead,
    aleatoric_variance,
    fit_variance_head,
    load_variance_head,
    save_variance_head,
    variance_path,
)

__all__ = [
    "CALIBRATION_BINS",
    "Calibration",
    "PosteriorMaps",
    "VarianceHead",
    "WeightSamples",
    "aleatoric_variance",
    "conformal_calibration",
    "fit_variance_head",
    "interval_scale",
    "load_samples",
    "load_variance_head",
    "null_space_projector",
    "posterior_maps",
    "predict_samples",
    "predictive_moments",
    "samples_path",
    "save_samples",
    "save_variance_head",
    "stack_parameters",
    "subnetwork_parameters",
    "variance_path",
]
