"""Sparse training by linearized Bregman iterations: regularizers, optimizers, sparse initialisation.

Also the built-in plugin that registers the regularizers (``recon list regularizers``).
"""

from recon.hookspecs import Register, hookimpl
from recon.sparsity.init import density, sparse_init_
from recon.sparsity.optim import AdaBreg, LinBreg, ProxSGD, param_groups
from recon.sparsity.regularizers import (
    L1,
    GroupL12,
    Null,
    Regularizer,
    build_regularizer,
    group_l12,
    l1,
    null,
)

__all__ = [
    "L1",
    "AdaBreg",
    "GroupL12",
    "LinBreg",
    "Null",
    "ProxSGD",
    "Regularizer",
    "build_regularizer",
    "density",
    "param_groups",
    "sparse_init_",
]


@hookimpl
def recon_register_regularizers(register: Register) -> None:
    register("l1", l1)
    register("group-l12", group_l12)
    register("null", null)
