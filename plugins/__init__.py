"""Built-in feature plugins: training terms (first-order adversarial / TV training …).

Registered through recon's public hooks, as a third-party plugin would be.
"""

from recon.hookspecs import Register, hookimpl
from recon.plugins.adversarial import adversarial_tv


@hookimpl
def recon_register_training_terms(register: Register) -> None:
    register("adversarial-tv", adversarial_tv)
