"""Built-in operator plugin: MRI (single- and multi-coil), blur, denoise and the noise models.

Registered through recon's public hooks exactly as a third-party plugin would be.
"""

from __future__ import annotations

from recon.hookspecs import Register, hookimpl
from recon.operators import blur, mri, noise
from recon.operators.masks import MaskKind, mask_function


def build_mri(
    img_size: tuple[int, int],
    acceleration: float = 4.0,
    center_fraction: float = 0.08,
    mask: MaskKind = "random",
    seed: int | None = 0,
) -> mri.CartesianMRI:
    """Single-coil Cartesian MRI (centred orthonormal FFT) with a fastMRI-style mask."""
    return mri.CartesianMRI(mask_function(mask, acceleration, center_fraction)(img_size, seed))


def build_multicoil_mri(
    img_size: tuple[int, int],
    coils: int = 8,
    acceleration: float = 4.0,
    center_fraction: float = 0.08,
    mask: MaskKind = "random",
    seed: int | None = 0,
) -> mri.MulticoilMRI:
    """Multi-coil Cartesian MRI with simulated, normalised ring-coil sensitivity maps."""
    sampling = mask_function(mask, acceleration, center_fraction)(img_size, seed)
    return mri.MulticoilMRI(sampling, mri.simulated_coil_maps(img_size, coils))


@hookimpl
def recon_register_operators(register: Register) -> None:
    register("mri", build_mri, domain="complex")
    register("mri-multicoil", build_multicoil_mri, domain="complex")
    register("blur", blur.build_blur, domain="real")
    register("denoise", noise.build_denoise, domain="real")


@hookimpl
def recon_register_noise_models(register: Register) -> None:
    register("gaussian", noise.gaussian)
    register("poisson", noise.poisson, positive=True)
    register("poisson-gaussian", noise.poisson_gaussian, positive=True)
    register("rician", noise.rician)
