r"""Centred orthonormal 2D FFT (fastMRI convention) with the shifts folded into phase factors.

fastMRI's ``fft2c(x) = fftshift(fft2(ifftshift(x)))``. Rolling memory twice per transform is slow;
for an axis of length :math:`N` with :math:`a = b = \lfloor N/2 \rfloor` the same map is

.. math::

    Y[k] = e^{2\pi i (k-b) a / N}\; \mathrm{FFT}\big(x[m]\, e^{2\pi i b m / N}\big)[k],

i.e. one elementwise *pre* phase, a plain FFT and one *post* phase (both :math:`\pm 1` chessboards
for even :math:`N`). The inverse is the exact adjoint, so the pair is unitary for every size; for
even sizes it equals fastMRI's ``ifft2c``. Operators fold the post phase into their sampling mask.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache

import torch
from torch import Tensor

from recon.layout import complex_dtype


def _axis_phases(n: int) -> tuple[Tensor, Tensor]:
    a = b = n // 2
    idx = torch.arange(n, dtype=torch.int64)
    pre = torch.remainder(b * idx, n).double() * (2 * math.pi / n)
    post = torch.remainder((idx - b) * a, n).double() * (2 * math.pi / n)
    return torch.polar(torch.ones(n, dtype=torch.float64), pre), torch.polar(
        torch.ones(n, dtype=torch.float64), post
    )


@lru_cache(maxsize=32)
def _phases_cpu(height: int, width: int) -> tuple[Tensor, Tensor]:
    pre_h, post_h = _axis_phases(height)
    pre_w, post_w = _axis_phases(width)
    return torch.outer(pre_h, pre_w), torch.outer(post_h, post_w)


def centring_phases(
    shape: tuple[int, int], dtype: torch.dtype = torch.complex64, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """``(pre, post)`` phase images of shape ``(H, W)`` with ``fft2c(x) = post * fft2(pre * x)``."""
    pre, post = _phases_cpu(int(shape[0]), int(shape[1]))
    dtype = complex_dtype(dtype)
    return pre.to(device=device, dtype=dtype), post.to(device=device, dtype=dtype)


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal FFT over the last two dimensions (complex or real input)."""
    pre, post = centring_phases(tuple(x.shape[-2:]), x.dtype, x.device)
    return torch.fft.fft2(x * pre, norm="ortho").mul_(post)


def ifft2c(k: Tensor) -> Tensor:
    """Inverse (= adjoint) of :func:`fft2c`."""
    pre, post = centring_phases(tuple(k.shape[-2:]), k.dtype, k.device)
    return torch.fft.ifft2(k * post.conj(), norm="ortho").mul_(pre.conj())


class MaskedFFT:
    r"""The sampled centred FFT :math:`k = M \odot F_c z` and its adjoint, for one mask, dtype and device.

    ``forward(z) = (post·M) ⊙ fft2(pre ⊙ z)``, ``adjoint(k) = conj(pre) ⊙ ifft2(conj(post·M) ⊙ k)``.

    For even sizes the pre phase is the chessboard :math:`(-1)^{m+n}`, and multiplying by it before
    an FFT is the same as swapping the quadrants of the FFT's output (a half-length circular shift).
    So the forward map is ``swap(fft2(z)) ⊙ (post·M)`` and the adjoint ``ifft2(swap(conj(post·M) ⊙
    k))``, and each swap is fused with the masked product: four quadrant products that read one
    quadrant and write the opposite one. One elementwise pass per transform instead of two (the
    passes are memory-bound on CPU, so this halves what recon adds to the bare FFTs). The FFT's own
    output goes into a per-thread workspace (fresh 10 MB allocations cost as much as a product).
    Odd sizes, and calls under autograd or ``vmap``, use the plain two-product form.
    (Transforming only the sampled phase-encode columns was tried and was no faster on CPU: the
    strided gather and scatter cost what the skipped column FFTs save.)
    """

    def __init__(
        self, mask: Tensor, dtype: torch.dtype = torch.complex64, device: torch.device | str = "cpu"
    ):
        dtype = complex_dtype(dtype)
        pre, post = centring_phases(tuple(mask.shape), dtype, device)
        weighted = post * mask.to(device=device, dtype=pre.real.dtype)
        self.pre, self.pre_conj = pre, pre.conj().resolve_conj()
        self.post, self.post_conj = weighted, weighted.conj().resolve_conj()
        self.even = all(n % 2 == 0 for n in mask.shape)
        self._local = threading.local()

    def _workspace(self, like: Tensor) -> Tensor:
        buffer = getattr(self._local, "buffer", None)
        if (
            buffer is None
            or buffer.shape != like.shape
            or buffer.dtype != like.dtype
            or buffer.device != like.device
        ):
            buffer = self._local.buffer = torch.empty(like.shape, dtype=like.dtype, device=like.device)
        return buffer

    def _plain(self, t: Tensor) -> bool:
        """Odd sizes, autograd and ``torch.func`` transforms (``vmap`` has no rule for ``out=``)."""
        return (
            not self.even
            or (torch.is_grad_enabled() and t.requires_grad)
            or torch._C._functorch.is_functorch_wrapped_tensor(t)
        )

    @staticmethod
    def _swap_product(t: Tensor, factor: Tensor, out: Tensor, before: bool) -> Tensor:
        """``out = swap(t ⊙ factor)`` (``before``) or ``swap(t) ⊙ factor``, the quadrant swap fused
        into four products."""
        h, w = t.shape[-2] // 2, t.shape[-1] // 2
        for rows_in, rows_out in ((slice(0, h), slice(h, None)), (slice(h, None), slice(0, h))):
            for cols_in, cols_out in ((slice(0, w), slice(w, None)), (slice(w, None), slice(0, w))):
                f = factor[rows_in, cols_in] if before else factor[rows_out, cols_out]
                torch.mul(t[..., rows_in, cols_in], f, out=out[..., rows_out, cols_out])
        return out

    def forward(self, z: Tensor) -> Tensor:
        """:math:`M \\odot F_c z` over the last two dimensions."""
        if self._plain(z):
            return torch.fft.fft2(z * self.pre, norm="ortho").mul_(self.post)
        if not z.is_complex():
            z = z.to(self.pre.dtype)
        spectrum = torch.fft.fft2(z, norm="ortho", out=self._workspace(z))
        return self._swap_product(spectrum, self.post, torch.empty_like(spectrum), before=False)

    def adjoint(self, k: Tensor) -> Tensor:
        """:math:`F_c^H (\\bar M \\odot k)` over the last two dimensions."""
        if self._plain(k):
            return torch.fft.ifft2(k * self.post_conj, norm="ortho").mul_(self.pre_conj)
        if not k.is_complex():
            k = k.to(self.pre.dtype)
        swapped = self._swap_product(k, self.post_conj, self._workspace(k), before=True)
        return torch.fft.ifft2(swapped, norm="ortho")
