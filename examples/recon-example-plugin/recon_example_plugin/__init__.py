"""Example recon plugin: random-pixel inpainting, y = m ⊙ x with a seeded binary mask m.

It uses only recon's public API (``recon.hookimpl``, ``recon.InputError``) and deepinv.
"""

from __future__ import annotations

import torch
from deepinv.physics import LinearPhysics

from recon import InputError, hookimpl


class Inpainting(LinearPhysics):
    """Keep the pixels where ``mask`` is 1: :math:`A = A^H = \\mathrm{diag}(m)`."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return x * self.mask.to(x.real.dtype if x.is_complex() else x.dtype)

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.A(y)

    def exact_norm(self) -> float:
        return float(self.mask.max())


def inpainting(img_size: tuple[int, int], keep: float = 0.5, seed: int = 0) -> Inpainting:
    """Random-pixel inpainting: keep a fraction `keep` of the pixels (seeded)."""
    if not 0 < keep <= 1:
        raise InputError(f"keep must be in (0, 1], got {keep}")
    generator = torch.Generator().manual_seed(seed)
    mask = (torch.rand(tuple(img_size), generator=generator) < keep).float()
    if not mask.any():
        mask.view(-1)[0] = 1.0
    return Inpainting(mask)


@hookimpl
def recon_register_operators(register):
    register("inpainting", inpainting, domain="real")
