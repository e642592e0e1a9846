"""Built-in feature plugins: training terms (first-order adversarial / TV training, distillation
from a trained teacher) and samplers over network weights (pSGLD, BAOAB, MC dropout, ensembles).

Registered through recon's public hooks, as a third-party plugin would be.
"""

from recon.hookspecs import Register, hookimpl
from recon.plugins import samplers
from recon.plugins.adversarial import adversarial_tv
from recon.plugins.distillation import distill


@hookimpl
def recon_register_training_terms(register: Register) -> None:
    register("adversarial-tv", adversarial_tv)
    register("distill", distill)


@hookimpl
def recon_register_samplers(register: Register) -> None:
    register("psgld", samplers.PSGLD)
    register("baoab", samplers.BAOAB)
    register("mc-dropout", samplers.MCDropout)
    register("ensemble", samplers.Ensemble)
