"""Uncertainty and hallucination maps: weight samples, batched inference, posterior maps, calibration."""

from recon.uncertainty.maps import PosteriorMaps, conformal_scale, null_space_projector, posterior_maps
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
    "PosteriorMaps",
    "WeightSamples",
    "conformal_scale",
    "load_samples",
    "null_space_projector",
    "posterior_maps",
    "predict_samples",
    "samples_path",
    "save_samples",
    "stack_parameters",
    "subnetwork_parameters",
]
