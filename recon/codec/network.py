r"""The codec's autoencoder and its exact integer synthesis.

Analysis :math:`g_a`: 5×5 stride-2 conv → ReLU → 5×5 stride-2 conv → ReLU → 3×3 conv to ``latent``
channels (no bias, so a channel that group-sparse training switches off is exactly zero and can be
dropped). Synthesis :math:`g_s`: 3×3 conv → ReLU → ×2 nearest → 3×3 conv → ReLU → ×2 nearest → 3×3
conv to two maps: the prediction :math:`\hat x` (in units of the full intensity range) and the log
scale :math:`\log b` of the residual's Laplace law, the context of the lossless residual coder.

Rate model during training: per latent channel a logistic law (location μ_c, scale s_c) discretised
on the integers, :math:`P(q) = \sigma(\frac{q-\mu_c+\frac12}{s_c}) - \sigma(\frac{q-\mu_c-\frac12}{s_c})`;
residual rate from the discretised Laplace law of scale :math:`b`. Latents get additive uniform noise
for the rate and straight-through rounding for the prediction (Ballé et al. 2018; Minnen 2020).

:class:`IntegerSynthesis` runs :math:`g_s` in fixed point, exactly: weights ``round(w·2^FW)``,
activations ``round(a·2^FA)`` (both clamped), every product and partial sum an integer that the
floating-point type holds exactly (float32 convolutions, see :func:`exact_conv`), so the result
is exact in any summation order on any CPU or GPU; requantised by a floor division by :math:`2^{FW}`.
Encoder and decoder therefore compute bit-identical predictions and contexts, which
the lossless residual depends on. (Integer convolutions are not available in torch on CPU; exact
integer arithmetic inside float convolutions is the portable way to get them.)
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recon.errors import InputError

FA = 8  # fractional bits of activations
FW = 10  # fractional bits of weights
ACTIVATION_LIMIT = float((1 << 15) - 1)  # activations are clamped to ±(2^15 - 1) (±128 real units)
WEIGHT_LIMIT = (1 << 13) - 1  # integer weights are clipped to ±(2^13 - 1) (±8 real units)
A_SPLIT, W_SPLIT = 8, 7  # bits of the low pieces in exact_conv
FLOAT32_EXACT = float(1 << 24)
EXACT_LIMIT = float(1 << 52)


class CodecNet(nn.Module):
    """Float autoencoder with a factorised latent law and a residual-scale head."""

    def __init__(self, latent: int = 32, width: int = 32):
        super().__init__()
        if latent < 1 or width < 1:
            raise InputError("latent and width must be positive")
        self.latent, self.width = latent, width
        self.analysis = nn.Sequential(
            nn.Conv2d(1, width, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(width, width, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(width, latent, 3, padding=1, bias=False),
        )
        self.synthesis = nn.ModuleList(
            [
                nn.Conv2d(latent, width, 3, padding=1),
                nn.Conv2d(width, width, 3, padding=1),
                nn.Conv2d(width, 2, 3, padding=1),
            ]
        )
        self.location = nn.Parameter(torch.zeros(latent))
        self.log_scale = nn.Parameter(torch.zeros(latent))

    def synthesize(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """Latent → (prediction, log scale of the residual), both ``(B, 1, 4h, 4w)``."""
        first, second, last = self.synthesis
        h = F.relu(first(q))
        h = F.relu(second(F.interpolate(h, scale_factor=2, mode="nearest")))
        out = last(F.interpolate(h, scale_factor=2, mode="nearest"))
        return out[:, :1], out[:, 1:]

    def latent_bits(self, y: Tensor) -> Tensor:
        """Bits of (noisy or rounded) latents under the factorised logistic law, per image."""
        mu = self.location.view(1, -1, 1, 1)
        s = self.log_scale.exp().view(1, -1, 1, 1)
        p = torch.sigmoid((y - mu + 0.5) / s) - torch.sigmoid((y - mu - 0.5) / s)
        return -torch.log2(p.clamp_min(1e-9)).flatten(1).sum(1)


def residual_bits(x: Tensor, prediction: Tensor, log_scale: Tensor, levels: Tensor) -> Tensor:
    r"""Bits of the integer residual :math:`(x - \hat x)` in units of :math:`1/\mathrm{levels}` under the
    discretised Laplace law of scale :math:`b = e^{\log b}`, per image (``levels`` per image)."""
    step = 1.0 / levels.view(-1, 1, 1, 1)
    b = log_scale.clamp(-12, 4).exp()
    r = (x - prediction).abs()

    def upper(a: Tensor) -> Tensor:
        return 0.5 * torch.exp(-a.clamp_min(0) / b)

    p = torch.where(r < step / 2, 1 - 2 * upper(step / 2), upper(r - step / 2) - upper(r + step / 2))
    return -torch.log2(p.clamp_min(1e-12)).flatten(1).sum(1)


def _pieces(t: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """``t = high·2^bits + low`` with ``0 <= low < 2^bits`` (integer-valued tensors)."""
    high = torch.floor(t / (1 << bits))
    return high, t - high * (1 << bits)


def exact_conv(a: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    r"""One fixed-point 3×3 convolution, ``floor((a * W + B) / 2^FW)`` clamped, computed exactly.

    float32 holds every integer below :math:`2^{24}`, so a float32 convolution of integers is exact
    (in any summation order) when every output's :math:`\sum |a|\,|W|` stays below that. Cheapest
    first: (1) one float32 convolution, when a convolution of the magnitudes shows the sums below
    :math:`2^{23}` (a margin for that check's own rounding; typical activations pass); (2) ``a`` and
    ``W`` split into 8- and 7-bit pieces, four float32 piece convolutions recombined in float64,
    when the pieces' bounds and the fan-in allow; (3) one float64 convolution (exact below
    :math:`2^{53}`)."""
    a32, w32 = a.float(), weight.float()
    if float(F.conv2d(a32.abs(), w32.abs(), padding=1).max()) < FLOAT32_EXACT / 2:
        acc = F.conv2d(a32, w32, padding=1).double()
    else:
        acc = _split_conv(a, weight)
    acc = acc + bias.view(1, -1, 1, 1)
    if float(acc.abs().max()) >= EXACT_LIMIT:
        raise InputError("fixed-point overflow in the codec's synthesis (input far outside its range)")
    return torch.floor(acc / (1 << FW)).clamp_(-ACTIVATION_LIMIT, ACTIVATION_LIMIT)


def _split_conv(a: Tensor, weight: Tensor) -> Tensor:
    """``a * W`` (float64) for integers too large for one float32 convolution (see :func:`exact_conv`)."""
    a_high, a_low = _pieces(a, A_SPLIT)
    w_high, w_low = _pieces(weight, W_SPLIT)
    fan_in = weight[0].numel()
    bound = (
        fan_in * float(max(a_high.abs().max(), 1 << A_SPLIT)) * float(max(w_high.abs().max(), 1 << W_SPLIT))
    )
    if bound >= FLOAT32_EXACT:
        return F.conv2d(a, weight, padding=1)
    return sum(
        F.conv2d(x.float(), w.float(), padding=1).double() * scale
        for x, w, scale in (
            (a_high, w_high, float(1 << (A_SPLIT + W_SPLIT))),
            (a_high, w_low, float(1 << A_SPLIT)),
            (a_low, w_high, float(1 << W_SPLIT)),
            (a_low, w_low, 1.0),
        )
    )


@contextmanager
def _no_tf32():
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


class IntegerSynthesis:
    """:math:`g_s` with integer weights, evaluated exactly (see the module docstring)."""

    def __init__(self, weights: list[Tensor], biases: list[Tensor]):
        self.weights = [w.to(torch.float64) for w in weights]
        self.biases = [b.to(torch.float64) for b in biases]

    @staticmethod
    def from_float(net: CodecNet) -> tuple[list[Tensor], list[Tensor]]:
        """Integer tensors (int64) of ``net``'s synthesis: weights ·2^FW, biases ·2^(FA+FW)."""
        weights = [
            torch.round(c.weight.detach().double() * (1 << FW)).clamp(-WEIGHT_LIMIT, WEIGHT_LIMIT).long()
            for c in net.synthesis
        ]
        biases = [torch.round(c.bias.detach().double() * (1 << (FA + FW))).long() for c in net.synthesis]
        return weights, biases

    def __call__(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """Integer latents ``(1, C, h, w)`` → fixed-point (prediction, log scale), ·2^FA, float64."""
        device = q.device
        w = [t.to(device) for t in self.weights]
        b = [t.to(device) for t in self.biases]
        # im2col + GEMM only (no Winograd/FFT algorithms, no TF32): exact for integers
        with torch.backends.cudnn.flags(enabled=False), _no_tf32():
            a = q.to(torch.float64) * (1 << FA)
            a = exact_conv(a, w[0], b[0]).clamp_min_(0)
            a = exact_conv(F.interpolate(a, scale_factor=2, mode="nearest"), w[1], b[1]).clamp_min_(0)
            out = exact_conv(F.interpolate(a, scale_factor=2, mode="nearest"), w[2], b[2])
        return out[:, :1], out[:, 1:]
