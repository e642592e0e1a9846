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
floating-point type holds exactly (float32 convolutions, see :class:`FixedPointConv`; each ×2
nearest upsampling is folded into the convolution after it), so the result is exact in any
summation order on any CPU or GPU; requantised by a floor division by :math:`2^{FW}`.
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
    r"""One fixed-point 3×3 convolution, ``floor((a * W + B) / 2^FW)`` clamped, computed exactly
    (float64 result; :class:`IntegerSynthesis` uses :class:`FixedPointConv`, the same arithmetic
    with its weights prepared once)."""
    return FixedPointConv(weight, bias)(a).double()


def _fold_upsampling(weight: Tensor) -> Tensor:
    r"""Weights ``(4·O, C, 3, 3)`` of "×2 nearest upsampling, then the 3×3 ``weight``" as one 3×3
    convolution of the low-resolution input, output phase :math:`(p_i, p_j)` in channel
    :math:`4o + 2p_i + p_j` (the order :func:`torch.nn.functional.pixel_shuffle` reads). Output row
    :math:`2i + p` reads upsampled rows :math:`2i+p-1, 2i+p, 2i+p+1`, i.e. input rows
    :math:`i-1, i, i` (:math:`p = 0`) or :math:`i, i, i+1` (:math:`p = 1`): the taps that land on the
    same input row are summed. Integer weights stay integers (at most 4× larger)."""
    rows = weight.new_zeros((2, 3, 3))  # [phase, low-res tap, high-res tap]
    rows[0, 0, 0] = rows[0, 1, 1] = rows[0, 1, 2] = 1
    rows[1, 1, 0] = rows[1, 1, 1] = rows[1, 2, 2] = 1
    folded = torch.einsum("pak,qbl,ockl->opqcab", rows, rows, weight)
    return folded.reshape(-1, weight.shape[1], 3, 3)


class FixedPointConv:
    r"""``floor((a * W + B) / 2^FW)`` clamped to :data:`ACTIVATION_LIMIT`, exact, for integer-valued
    float32 activations ``a`` (the result is one too). ``upsample``: ``a`` is first upsampled ×2
    (nearest), folded into the weights (:func:`_fold_upsampling`; a quarter of the pixels at 4× the
    channels, which oneDNN runs faster than a thin convolution of the large image).

    float32 holds every integer below :math:`2^{24}`, so a float32 convolution of integers is exact
    (in any summation order) when every output's :math:`\sum |a|\,|W|` stays below that. Cheapest
    first: (1) one float32 convolution, when :math:`\sum_c \max|a_c| \max_o \sum_k |W_{oc,k}|`
    (no convolution needed) or else a convolution of the magnitudes shows the sums below
    :math:`2^{23}` (a margin for that check's own rounding); (2) ``a`` and ``W`` split into 8- and
    7-bit pieces, four float32 piece convolutions recombined in float64, when the pieces' bounds and
    the fan-in allow; (3) one float64 convolution (exact below :math:`2^{53}`)."""

    def __init__(self, weight: Tensor, bias: Tensor, upsample: bool = False):
        weight = weight.double()
        if upsample:
            weight, bias = _fold_upsampling(weight), bias.repeat_interleave(4)
        self.upsample = upsample
        self.weight, self.bias = weight, bias.double()
        self.weight32, self.magnitude32, self.bias32 = weight.float(), weight.abs().float(), bias.float()
        self.channel_bound = weight.abs().sum((2, 3)).amax(0)  # (C,): max over outputs of Σ_k |W|
        self.small_bias = bool(self.bias.abs().max() < FLOAT32_EXACT / 2)

    def to(self, device: torch.device) -> FixedPointConv:
        for name in ("weight", "bias", "weight32", "magnitude32", "bias32", "channel_bound"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def _float32_is_exact(self, a: Tensor) -> bool:
        peak = torch.maximum(a.amax((0, 2, 3)), -a.amin((0, 2, 3))).double()
        if float(peak @ self.channel_bound) < FLOAT32_EXACT / 2:
            return True
        return float(F.conv2d(a.abs(), self.magnitude32, padding=1).max()) < FLOAT32_EXACT / 2

    def __call__(self, a: Tensor) -> Tensor:
        a32 = a if a.dtype == torch.float32 else a.float()  # rounds only where (1) is not taken
        if self._float32_is_exact(a32):
            acc = F.conv2d(a32, self.weight32, padding=1)
            if self.small_bias:  # |acc| + |B| < 2^24: the sum and the floor stay exact in float32
                return self._finish(torch.floor((acc + self.bias32.view(1, -1, 1, 1)) / (1 << FW)))
            acc = acc.double()
        else:
            acc = _split_conv(a.double(), self.weight)
        acc = acc + self.bias.view(1, -1, 1, 1)
        if float(acc.abs().max()) >= EXACT_LIMIT:
            raise InputError("fixed-point overflow in the codec's synthesis (input far outside its range)")
        return self._finish(torch.floor(acc / (1 << FW)))

    def _finish(self, out: Tensor) -> Tensor:
        """Clamped (then exact in float32) and, after upsampling, the phases back in place."""
        out = out.clamp_(-ACTIVATION_LIMIT, ACTIVATION_LIMIT).float()
        return F.pixel_shuffle(out, 2) if self.upsample else out


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
    """:math:`g_s` with integer weights, evaluated exactly (see the module docstring); the layers'
    weights are prepared once per device."""

    def __init__(self, weights: list[Tensor], biases: list[Tensor]):
        self.layers = [
            FixedPointConv(w, b, upsample=i > 0) for i, (w, b) in enumerate(zip(weights, biases, strict=True))
        ]
        self._device = torch.device("cpu")

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
        """Integer latents ``(B, C, h, w)`` → fixed-point (prediction, log scale), ·2^FA, float64."""
        if q.device != self._device:
            self.layers = [layer.to(q.device) for layer in self.layers]
            self._device = q.device
        first, second, last = self.layers
        # im2col + GEMM only (no Winograd/FFT algorithms, no TF32): exact for integers
        with torch.backends.cudnn.flags(enabled=False), _no_tf32():
            a = first(q.float() * (1 << FA)).clamp_min_(0)
            out = last(second(a).clamp_min_(0)).double()
        return out[:, :1], out[:, 1:]
