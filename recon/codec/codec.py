r"""Encoding and decoding images with a :class:`~recon.codec.model.CodecModel`.

A slice ``x`` (integers in ``[0, 2^bits - 1]``) is coded as

1. latents :math:`q = \mathrm{round}(g_a(x / \text{levels}))`, clamped to ``[-R, R]``, each channel
   with its integer table;
2. unless the slice is *latent-only*, the residual of the exact integer prediction
   :math:`\hat x = g_s(q)`: :math:`r = x - \hat x`, quantised with step :math:`2\delta+1`
   (:math:`q_r = \mathrm{sign}(r)\lfloor(|r|+\delta)/(2\delta+1)\rfloor`, so :math:`|x - x'| \le \delta`;
   :math:`\delta = 0` is lossless), hybrid-integer tokens coded with the table of each pixel's context.

Quality targets: ``lossless`` (δ = 0); ``psnr=P``: latent-only when that reaches P dB, else the
largest δ whose reconstruction reaches P (found by bisection on exact reconstructions); ``bpp=B``: the
smallest δ whose *written* slice fits in B bits per pixel, latent-only when none does; ``delta=D``.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from recon.codec.container import Header, container_overhead, read_header, write_container
from recon.codec.entropy import Reader, Writer, tokenize, untokenize
from recon.codec.model import LATENT_RANGE, CodecModel, context_offset, contexts_of
from recon.codec.network import FA
from recon.errors import InputError

LATENT_ONLY = 0xFFFFFFFF  # δ value in a slice header that marks a latent-only slice
_SLICE = struct.Struct("<Ii")  # δ, context offset


@dataclass(frozen=True)
class Quality:
    """What to aim for: exactly one of lossless, a PSNR (dB), a rate (bits per pixel), a δ or the
    latents alone (the autoencoder's reconstruction, the lowest rate)."""

    lossless: bool = False
    psnr: float | None = None
    bpp: float | None = None
    delta: int | None = None
    latent_only: bool = False

    def __post_init__(self) -> None:
        chosen = [self.lossless, self.psnr is not None, self.bpp is not None, self.delta is not None]
        if sum(chosen) + self.latent_only != 1:
            raise InputError("choose exactly one of lossless, psnr, bpp, delta or latent-only")
        if self.psnr is not None and not (math.isfinite(self.psnr) and 0 < self.psnr < 200):
            raise InputError(f"PSNR target must be in (0, 200) dB, got {self.psnr}")
        if self.bpp is not None and not (math.isfinite(self.bpp) and self.bpp > 0):
            raise InputError(f"rate target must be a positive number of bits per pixel, got {self.bpp}")
        if self.delta is not None and not 0 <= self.delta < LATENT_ONLY:
            raise InputError(f"delta must be a non-negative integer, got {self.delta}")


def _device(model: CodecModel) -> torch.device:
    return next(model.net.parameters()).device


def _latents(model: CodecModel, x: np.ndarray, levels: int) -> torch.Tensor:
    """Integer latents ``(1, C, ceil(H/4), ceil(W/4))`` of one slice (edge-padded to multiples of 4)."""
    h, w = x.shape
    image = torch.from_numpy(x.astype(np.float32) / max(levels, 1))[None, None].to(_device(model))
    image = F.pad(image, (0, -w % 4, 0, -h % 4), mode="replicate")
    with torch.no_grad():
        y = model.net.analysis(image)
    return torch.round(y).clamp_(-LATENT_RANGE, LATENT_RANGE)


def _prediction(model: CodecModel, q: torch.Tensor, shape: tuple[int, int], levels: int):
    """Exact integer prediction ``x̂`` (int64, clipped to the range) and fixed-point log scale."""
    mean, log_scale = model.synthesis(q)
    h, w = shape
    mean, log_scale = mean[0, 0, :h, :w], log_scale[0, 0, :h, :w]
    half = 1 << (FA - 1)
    pixels = torch.floor((mean * levels + half) / (1 << FA)).clamp_(0, levels)
    return pixels.to(torch.int64).cpu().numpy(), log_scale


def _quantize_residual(r: np.ndarray, delta: int) -> np.ndarray:
    return np.sign(r) * ((np.abs(r) + delta) // (2 * delta + 1))


class _Slice:
    """One slice's latents and prediction, shared by every δ tried on it."""

    def __init__(self, model: CodecModel, x: np.ndarray, levels: int):
        self.model, self.x, self.levels = model, x.astype(np.int64), levels
        self.q = _latents(model, x, levels)
        self.predicted, self.log_scale = _prediction(model, self.q, x.shape, levels)

    def reconstruction(self, delta: int) -> np.ndarray:
        if delta == LATENT_ONLY:
            return self.predicted
        step = 2 * delta + 1
        return np.clip(
            self.predicted + _quantize_residual(self.x - self.predicted, delta) * step, 0, self.levels
        )

    def encode(self, delta: int) -> bytes:
        writer = Writer()
        symbols = (self.q[0].to(torch.int64).cpu().numpy() + LATENT_RANGE).reshape(self.q.shape[1], -1)
        for channel, table in zip(symbols, self.model.latent_tables, strict=True):
            writer.categorical(channel, table)
        offset = 0
        if delta != LATENT_ONLY:
            offset = context_offset(self.levels, delta)
            token, _, raw = tokenize(_quantize_residual(self.x - self.predicted, delta).ravel())
            writer.tokens(token, raw, contexts_of(self.log_scale, offset).ravel(), self.model.residual_tables)
        return _SLICE.pack(delta, offset) + writer.bytes()


def psnr(x: np.ndarray, y: np.ndarray, levels: int) -> float:
    mse = float(np.mean((x.astype(np.float64) - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(max(levels, 1) ** 2 / mse)


def _choose_delta(part: _Slice, quality: Quality, overhead: float = 0.0) -> int:
    """δ for one slice; ``overhead``: container bytes charged to this slice under a rate target."""
    if quality.lossless:
        return 0
    if quality.delta is not None:
        return quality.delta
    if quality.latent_only:
        return LATENT_ONLY
    if quality.psnr is not None:
        if psnr(part.x, part.reconstruction(LATENT_ONLY), part.levels) >= quality.psnr:
            return LATENT_ONLY
        low, high = 0, part.levels  # PSNR(low) is infinite; find the largest δ that meets the target
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (
                (mid, high)
                if psnr(part.x, part.reconstruction(mid), part.levels) >= quality.psnr
                else (low, mid - 1)
            )
        return low
    budget = quality.bpp * part.x.size / 8 - overhead
    if len(part.encode(part.levels)) > budget:
        return LATENT_ONLY  # even the coarsest residual does not fit: latents alone
    low, high = 0, part.levels  # find the smallest δ whose slice fits the budget
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if len(part.encode(mid)) <= budget else (mid + 1, high)
    return low


def _slices(array: np.ndarray) -> tuple[list[np.ndarray], int]:
    if array.ndim == 2:
        return [array], 0
    if array.ndim == 3 and array.shape[-1] in (3, 4) and array.shape[0] > 4:
        return [array[..., c] for c in range(array.shape[-1])], 2
    if array.ndim == 3:
        return list(array), 1
    raise InputError(
        f"expected a 2-D image, an (S, H, W) stack or an (H, W, C) image, got shape {array.shape}"
    )


def bit_depth(array: np.ndarray) -> int:
    return max(1, int(array.max()).bit_length()) if array.size else 1


def compress(
    array: np.ndarray,
    model: CodecModel,
    quality: Quality | None = None,
    *,
    kind: str = "npy",
    scale: float = 0.0,
) -> bytes:
    """Encode a uint8/uint16 array (2-D, ``(S, H, W)`` or ``(H, W, C)``) into ``.rcz`` bytes; ``kind``
    and ``scale`` are recorded for :mod:`recon.codec.files` (see :mod:`recon.codec.container`)."""
    quality = quality or Quality(lossless=True)
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise InputError(f"the codec takes uint8 or uint16 images, got {array.dtype}")
    slices, layout = _slices(array)
    height, width = slices[0].shape
    header = Header(
        array.dtype, bit_depth(array), layout, len(slices), height, width, model.identity, kind, scale
    )
    if not (1 <= height <= 1 << 16 and 1 <= width <= 1 << 16 and len(slices) <= 1 << 16):
        raise InputError(f"image size {array.shape} outside the codec's limits")
    payloads = []
    for x in slices:
        part = _Slice(model, x, header.levels)
        payloads.append(part.encode(_choose_delta(part, quality, container_overhead(len(slices)))))
    return write_container(header, payloads)


def decompress(data: bytes, model: CodecModel) -> np.ndarray:
    """Decode ``.rcz`` bytes (validated first) with the codec that wrote them: the integer array."""
    return decompress_with_header(data, model)[0]


def decompress_with_header(data: bytes, model: CodecModel) -> tuple[np.ndarray, Header]:
    """:func:`decompress`, also returning the file's header (kind, scale)."""
    header, payloads = read_header(data)
    if header.identity != model.identity:
        raise InputError(
            f"file was written by codec {header.identity.hex()}, this codec is {model.identity.hex()}"
        )
    out = np.empty((header.slices, header.height, header.width), dtype=header.dtype)
    h4, w4 = -(-header.height // 4), -(-header.width // 4)
    device = _device(model)
    for i, payload in enumerate(payloads):
        if len(payload) < _SLICE.size:
            raise InputError("corrupt codec payload (slice header cut short)")
        delta, offset = _SLICE.unpack_from(payload)
        if delta != LATENT_ONLY and delta > header.levels:
            raise InputError(f"corrupt codec payload (delta {delta} for {header.bits}-bit data)")
        reader = Reader(payload[_SLICE.size :])
        symbols = np.stack([reader.categorical(h4 * w4, table) for table in model.latent_tables])
        q = torch.from_numpy(symbols - LATENT_RANGE).reshape(1, -1, h4, w4).to(device)
        predicted, log_scale = _prediction(model, q, (header.height, header.width), header.levels)
        if delta == LATENT_ONLY:
            out[i] = predicted
            continue
        token, raw = reader.tokens(contexts_of(log_scale, offset).ravel(), model.residual_tables)
        residual = untokenize(token, raw).reshape(predicted.shape) * (2 * delta + 1)
        out[i] = np.clip(predicted + residual, 0, header.levels)
    if header.layout == 0:
        return out[0], header
    return (out if header.layout == 1 else np.moveaxis(out, 0, -1)), header
