r"""Encoding and decoding images with a :class:`~recon.codec.model.CodecModel`.

A slice ``x`` (integers in ``[0, 2^bits - 1]``) is coded as

1. latents :math:`q = \mathrm{round}(g_a(x / \text{levels}))`, clamped to ``[-R, R]``, each channel
   with its integer table;
2. unless the slice is *latent-only*, the residuals, quantised with step :math:`2\delta+1`
   (:math:`q_r = \mathrm{sign}(r)\lfloor(|r|+\delta)/(2\delta+1)\rfloor`, so :math:`|x - x'| \le \delta`;
   :math:`\delta = 0` is lossless), in four polyphase passes (:mod:`recon.codec.polyphase`): anchors
   against the exact integer prediction :math:`\hat x = g_s(q)`, the other pixels against
   interpolations of the pixels already decoded; hybrid-integer tokens with per-context tables
   (trained tables for the anchors; the trained tables adapted to the slice's own token counts for
   the interpolated passes, see :mod:`recon.codec.entropy`).

The encoder keeps, per slice, the smallest of: the passes recursed down to a grid of at most 4×4
anchors without latents (the *reference*: on every held-out image so far the autoencoder's
prediction does not pay for its latents), and the passes at polyphase depths 3, 2, 1, 0 with the
latents (the shallower ones only when depth 3 comes within 2% of the reference; a latent
candidate stops as soon as its bits so far show it cannot come that close, see :class:`_Budget`,
so that trying the autoencoder costs the encoder about its two network passes). Slices
with few distinct values (at most a quarter of the range, e.g. rescaled or quantised data) may code
the ranks of their values plus the value list losslessly (histogram packing), when that is smaller
than the requested coding — lossless or lossy: the held-out T1 slice (123 values spread over
12 bits) costs 0.84 bpp losslessly this way but 1.05 bpp at δ = 8 without it.

The slices of a stack are coded in order, each starting from the previous slice's adaptive token
counts (halved): on the held-out S0_10 volume 0.8% fewer bits than coding each slice alone. A slice
therefore decodes only after the ones before it (the decoder reads a file front to back anyway).

Quality targets: ``lossless`` (δ = 0); ``delta=D`` (every error within D, the same δ at every
level); ``psnr=P``: latent-only when that reaches P dB, else the largest δ whose reconstruction
reaches P (found by bisection on the reference's reconstructions; a latent candidate is written
only when it reaches P too); ``bpp=B``: the smallest δ whose *written* slice fits in B bits per
pixel, latent-only when none does. Under PSNR and rate targets δ may also
halve every second level towards the coarse grid (:func:`~recon.codec.polyphase.level_delta`), and
the slice may instead be *transform coded* (:mod:`recon.codec.subbands`: a CDF 9/7 wavelet with
context-coded bands, at the largest step that reaches the PSNR or the smallest that fits the rate);
the encoder tries them all and keeps the smallest file (PSNR) or the highest PSNR (rate). The
transform wins at low and middle rates, where coding against interpolations wastes bits (see
BENCHMARKS.md); it cannot bound every pixel's error, so ``lossless`` and ``delta`` never use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from recon.codec import colour, subbands
from recon.codec.container import (
    Header,
    container_overhead,
    pack_varint,
    read_header,
    read_varint,
    write_container,
)
from recon.codec.entropy import AdaptiveContexts, Reader, Writer, tokenize, untokenize, unzigzag, zigzag
from recon.codec.model import CONTEXTS, LATENT_RANGE, CodecModel, context_offset, contexts_of
from recon.codec.network import FA
from recon.codec.polyphase import CONTEXT_CLASSES, MAX_HALVING, level_delta, quantize_residual, run_passes
from recon.errors import InputError

LATENT_ONLY = 0xFFFFFFFF  # δ value in a slice header that marks a latent-only slice
HALVINGS = (0, 2)  # δ halving periods the encoder tries under PSNR and rate targets (0: none)
DEPTHS = (0, 1, 2, 3)  # polyphase depths the encoder tries with latents (it keeps the smallest file)
NO_LATENTS = 0x80  # depth bit: no latents; the passes recurse to a 4×4 anchor grid at mid-grey
WAVELET = 0x40  # depth bit: transform coded (recon.codec.subbands); δ is then the wavelet step
STEP_TOLERANCE = 1.01  # transform steps are searched to within 1% (about 0.09 dB)
MAX_DEPTH = 17
LATENT_MARGIN = 0.02  # depths 0-2 are tried when depth 3 with latents is within 2% of the reference
MAX_PALETTE_BITS = 16  # palette values are below 2**16
PALETTE_BITS_FIELD = 5  # bits of the field that gives the palette gaps' bit length
TokenSink = Callable[[int, np.ndarray, np.ndarray, np.ndarray], None]  # (pass, tokens, raw bits, contexts)


@dataclass(frozen=True)
class _SliceHeader:
    """What starts every slice's payload: the polyphase depth (its top bits :data:`NO_LATENTS` and
    :data:`WAVELET`) and δ's halving period (a byte each), then varints: δ (a transform-coded
    slice's step), the anchor context offset (zig-zag), the predictor flags and the palette size
    (0: none). 6–9 bytes for a typical slice."""

    delta: int
    offset: int
    depth: int
    latents: bool
    halving: int
    flags: int
    palette_size: int
    wavelet: bool = False

    def pack(self) -> bytes:
        depth = self.depth | (0 if self.latents else NO_LATENTS) | (WAVELET if self.wavelet else 0)
        fields = (self.delta, int(zigzag(np.int64(self.offset))), self.flags, self.palette_size)
        return bytes((depth, self.halving)) + b"".join(pack_varint(v) for v in fields)

    @classmethod
    def read(cls, payload: bytes, levels: int) -> tuple[_SliceHeader, int]:
        """Parse and validate (``levels``: the file's largest value); also the header's length."""
        if len(payload) < 2:
            raise InputError("corrupt codec payload (slice header cut short)")
        depth, halving = payload[0], payload[1]
        delta, position = read_varint(payload, 2)
        folded, position = read_varint(payload, position)
        flags, position = read_varint(payload, position, 64)
        palette_size, position = read_varint(payload, position)
        offset = int(unzigzag(np.int64(folded)))
        wavelet, latents = bool(depth & WAVELET), not depth & NO_LATENTS
        depth &= ~(NO_LATENTS | WAVELET)
        if wavelet:
            if latents or depth or halving or offset or flags or palette_size:
                raise InputError("corrupt codec payload (transform-coded slice with polyphase fields)")
            if not 1 <= delta <= subbands.max_step(levels):
                raise InputError(f"corrupt codec payload (wavelet step {delta} for values up to {levels})")
            return cls(delta, 0, 0, False, 0, 0, 0, wavelet=True), position
        if depth > (DEPTHS[-1] if latents else MAX_DEPTH) or (delta == LATENT_ONLY and not latents):
            raise InputError(f"corrupt codec payload (polyphase depth {depth})")
        if delta != LATENT_ONLY and delta > levels:
            raise InputError(f"corrupt codec payload (delta {delta} for values up to {levels})")
        if halving > MAX_HALVING:
            raise InputError(f"corrupt codec payload (delta halving period {halving})")
        if palette_size and (delta != 0 or palette_size > levels + 1):
            raise InputError(f"corrupt codec payload (palette of {palette_size} values)")
        return cls(delta, offset, depth, latents, halving, flags, palette_size), position


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
    """Integer latents ``(1, C, ceil(H/4), ceil(W/4))`` of one slice (edge-padded to multiples of 4).
    One slice at a time: batching a stack's slices was slower on the CPU (oneDNN), here and in the
    synthesis."""
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


class Coded(NamedTuple):
    """A slice's payload, the adaptive counts after it and the reconstruction it decodes to (not
    kept for latent-only slices: that is :attr:`_Slice.predicted`)."""

    payload: bytes
    counts: AdaptiveContexts
    recon: np.ndarray | None


class _Slice:
    """One slice's latents and prediction (computed once, when first needed), shared by every δ
    tried on it. ``fast``: never run the autoencoder, code only the no-latent passes."""

    def __init__(
        self,
        model: CodecModel,
        x: np.ndarray,
        levels: int,
        palette: np.ndarray | None = None,
        fast: bool = False,
        counts: AdaptiveContexts | None = None,
    ):
        self.model, self.x, self.levels, self.palette = model, x.astype(np.int64), levels, palette
        self.fast = fast
        self.counts = AdaptiveContexts(CONTEXT_CLASSES) if counts is None else counts  # at the start

    @cached_property
    def q(self) -> torch.Tensor:
        return _latents(self.model, self.x, self.levels)

    @cached_property
    def _synthesis(self) -> tuple[np.ndarray, torch.Tensor]:
        return _prediction(self.model, self.q, self.x.shape, self.levels)

    @property
    def predicted(self) -> np.ndarray:
        return self._synthesis[0]

    @property
    def log_scale(self) -> torch.Tensor:
        return self._synthesis[1]

    def passes(
        self,
        delta: int,
        depth: int,
        sink: TokenSink | None = None,
        latents: bool = True,
        halving: int = 0,
    ) -> tuple[np.ndarray, int]:
        """Reconstruction at ``delta`` (per level: :func:`level_delta`) and the predictor flags;
        every pass' tokens go to ``sink`` (the entropy coder when encoding, counters when training
        the tables). Without ``latents`` the anchors' prediction is mid-grey (see
        :func:`_no_latent_prediction`)."""
        flags = 0

        def choose(k: int, rows: np.ndarray, cols: np.ndarray, options: list[np.ndarray], d: int) -> int:
            nonlocal flags
            target = self.x[rows, cols]
            costs = [np.abs(quantize_residual(target - p, d)).sum() for p in options]
            flag = int(np.argmin(costs))
            flags |= flag << k
            return flag

        def code(
            k: int, rows: np.ndarray, cols: np.ndarray, prediction: np.ndarray, contexts: np.ndarray, d: int
        ):
            q = quantize_residual(self.x[rows, cols] - prediction, d)
            if sink is not None:
                token, _, raw = tokenize(q)
                sink(k, token, raw, contexts)
            return q

        if latents:
            offset = context_offset(self.levels, level_delta(delta, halving, depth))
            predicted, anchors = self.predicted, contexts_of(self.log_scale, offset)
        else:
            predicted, anchors = _no_latent_prediction(self.x.shape, self.levels)
        recon = run_passes(
            predicted, anchors, self.levels, delta, code, choose, depth, corrected=latents, halving=halving
        )
        return recon, flags

    def _coder(self, writer: Writer, state: AdaptiveContexts, after: PassHook | None = None) -> TokenSink:
        def sink(k: int, token: np.ndarray, raw: np.ndarray, contexts: np.ndarray) -> None:
            if k == 0:
                writer.tokens(token, raw, contexts, self.model.tables(k))
            else:
                writer.adaptive_tokens(token, raw, contexts, self.model.tables(k), state)
            if after is not None:
                after(k, writer.encoder.num_bits())

        return sink

    @property
    def palette_size(self) -> int:
        return 0 if self.palette is None else int(self.palette.size)

    def reconstruction(self, delta: int, halving: int = 0) -> np.ndarray:
        """The slice decoded from its reference candidate at ``delta``: the no-latent passes (or the
        autoencoder's prediction for latent-only). Targets choose δ by it; other candidates are
        written only when smaller and (under a PSNR target) as good."""
        if delta == LATENT_ONLY:
            return self.predicted
        return self.passes(delta, _full_depth(self.x.shape), latents=False, halving=halving)[0]

    @cached_property
    def transform(self) -> subbands.SubbandEncoder:
        return subbands.SubbandEncoder(self.x, self.levels, self.model.wavelet_tables)

    def encode_transform(self, step: int) -> Coded:
        """The slice transform coded (:mod:`recon.codec.subbands`) at wavelet ``step``; it leaves the
        polyphase passes' adaptive counts as they were."""
        writer = Writer()
        recon = self.transform.write(step, writer)
        head = _SliceHeader(step, 0, 0, False, 0, 0, 0, wavelet=True)
        return Coded(head.pack() + writer.bytes(), self.counts, recon)

    def _write_latents(self, writer: Writer) -> None:
        symbols = (self.q[0].to(torch.int64).cpu().numpy() + LATENT_RANGE).reshape(self.q.shape[1], -1)
        for channel, table in zip(symbols, self.model.latent_tables, strict=True):
            writer.categorical(channel, table)

    def _code(
        self, delta: int, depth: int, latents: bool, halving: int, after: PassHook | None = None
    ) -> Coded:
        """One candidate: the payload with the latents (if ``latents``) and the passes at ``depth``;
        ``after(pass, bits written so far)`` runs after every pass (it may stop the candidate)."""
        writer = Writer()
        if self.palette is not None:
            _write_palette(writer, self.palette)
        if latents:
            self._write_latents(writer)
            if after is not None:  # the latents alone may exceed the budget
                after(-1, writer.encoder.num_bits())
        offset, flags, counts, recon = 0, 0, self.counts.copy(), None
        if delta != LATENT_ONLY:
            offset = context_offset(self.levels, level_delta(delta, halving, depth))
            recon, flags = self.passes(delta, depth, self._coder(writer, counts, after), latents, halving)
        head = _SliceHeader(delta, offset, depth, latents, halving, flags, self.palette_size)
        return Coded(head.pack() + writer.bytes(), counts, recon)

    def encode(self, delta: int, min_psnr: float | None = None, halving: int = 0) -> Coded:
        """The slice at ``delta``: the reference candidate (no-latent passes, see
        :meth:`reconstruction`) or a smaller latent one whose reconstruction reaches ``min_psnr``
        (the reference does when δ was chosen for it). The latent candidates are tried deepest
        first; the shallower ones only when the deepest comes within :data:`LATENT_MARGIN` of the
        reference (on every held-out image so far it was 7–80% larger, so most slices skip them).
        A latent candidate stops as soon as its bits so far show it cannot come within the margin
        (:class:`_Budget`, an estimate that did not change a file on any held-out image)."""
        if delta == LATENT_ONLY:
            return self._code(LATENT_ONLY, 0, True, 0)
        reference_bits: dict[int, int] = {}  # per pass, for the latent candidates' budget
        record = None if self.fast else _record(reference_bits)
        best = self._code(delta, _full_depth(self.x.shape), False, halving, record)
        if self.fast:
            return best
        limit = (1 + LATENT_MARGIN) * 8 * len(best.payload)
        for depth in DEPTHS[::-1]:
            try:
                coded = self._code(delta, depth, True, halving, _Budget(reference_bits, depth, limit))
            except _OverBudget:  # not within the margin: at depth 3 the shallower ones are not tried
                if depth == DEPTHS[-1]:
                    break
                continue
            if min_psnr is None or psnr(self.x, coded.recon, self.levels) >= min_psnr:
                best = min(best, coded, key=lambda c: len(c.payload))
            if depth == DEPTHS[-1] and len(coded.payload) > (1 + LATENT_MARGIN) * len(best.payload):
                break
        return best


PassHook = Callable[[int, int], None]  # (pass number, bits written so far)
REMAINING_SAVING = 0.02  # see _Budget


class _OverBudget(Exception):
    """A latent candidate that can no longer come within :data:`LATENT_MARGIN` of the reference."""


def _record(bits: dict[int, int]) -> PassHook:
    """A pass hook that stores each pass' own bits (the reference's, for :class:`_Budget`)."""
    written = [0]

    def after(k: int, total: int) -> None:
        bits[k] = bits.get(k, 0) + total - written[0]
        written[0] = total

    return after


class _Budget:
    r"""Stops a latent candidate at ``depth`` (:class:`_OverBudget`) once it cannot come within
    ``limit`` (the reference's size plus the margin). Its passes at levels 0..``depth`` cover the
    same pixels as the reference's passes of the same number; the passes it has still to code are
    estimated at :math:`\max(0, \min(1, r) - s)` times the reference's bits for them, :math:`r` the
    ratio of the two over the passes coded so far (0 before the first: the latents alone must exceed
    the limit) and :math:`s` = :data:`REMAINING_SAVING`. Over 56 images (held-out, validation and
    training MR slices and photographs) a candidate's passes cost 0.986–1.15× the reference's in
    all and its latents 6–36% of the reference, so candidates stop before their finest level
    (three quarters of the pixels); on an image the autoencoder predicts well, :math:`r` is small
    from the coarse levels on and the candidate is coded to the end."""

    def __init__(self, reference_bits: dict[int, int], depth: int, limit: float):
        self.still = {k: reference_bits.get(k, 0) for k in range(1, 3 * depth + 4)}
        self.limit = limit
        self.written = 0.0
        self.compared = [0.0, 0.0]  # bits of the passes coded so far: the candidate's, the reference's

    def __call__(self, k: int, written: float) -> None:
        if k in self.still:
            self.compared[0] += written - self.written
            self.compared[1] += self.still.pop(k)
        self.written = written
        candidate, reference = self.compared
        ratio = max(0.0, min(1.0, candidate / reference) - REMAINING_SAVING) if reference else 0.0
        if written + ratio * sum(self.still.values()) > self.limit:
            raise _OverBudget


def _write_palette(writer: Writer, palette: np.ndarray) -> None:
    """The increasing palette as gaps :math:`g_i = p_i - p_{i-1} - 1` (:math:`p_{-1} = -1`) of
    :math:`b` bits each, :math:`b` (the bit length of the largest gap) in 5 bits first."""
    gaps = np.diff(palette, prepend=-1) - 1
    bits = int(gaps.max()).bit_length()
    writer.uniform(np.array([bits]), PALETTE_BITS_FIELD)
    if bits:
        writer.uniform(gaps, bits)


def _read_palette(reader: Reader, size: int) -> np.ndarray:
    bits = int(reader.uniform(1, PALETTE_BITS_FIELD)[0])
    if bits > MAX_PALETTE_BITS:
        raise InputError(f"corrupt codec payload (palette gaps of {bits} bits)")
    gaps = reader.uniform(size, bits) if bits else np.zeros(size, np.int64)
    return np.cumsum(gaps + 1) - 1


def _full_depth(shape: tuple[int, int]) -> int:
    """Depth at which the coarsest anchor grid is at most 4×4 pixels (coded against mid-grey: a few
    hundred bits at most, and two fewer tiny levels of Python work)."""
    return min(MAX_DEPTH, max(0, (max(shape) - 1).bit_length() - 3))


def _no_latent_prediction(shape: tuple[int, int], levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Prediction mid-grey and the widest anchor context, for slices coded without latents."""
    return np.full(shape, levels // 2, np.int64), np.full(shape, CONTEXTS - 1, np.int64)


def _decode_residuals(
    model: CodecModel,
    reader: Reader,
    predicted: np.ndarray,
    anchors: np.ndarray,
    levels: int,
    head: _SliceHeader,
    state: AdaptiveContexts,
) -> np.ndarray:
    """The mirror of :meth:`_Slice.passes` with the encoder's coder; updates ``state``."""

    def choose(k: int, rows: np.ndarray, cols: np.ndarray, options: list[np.ndarray], d: int) -> int:
        flag = (head.flags >> k) & 1
        if flag >= len(options):
            raise InputError("corrupt codec payload (predictor flag without latents)")
        return flag

    def code(
        k: int, rows: np.ndarray, cols: np.ndarray, prediction: np.ndarray, contexts: np.ndarray, _d: int
    ):
        if k == 0:
            token, raw = reader.tokens(contexts, model.tables(k))
        else:
            token, raw = reader.adaptive_tokens(contexts, model.tables(k), state)
        return untokenize(token, raw)

    return run_passes(
        predicted, anchors, levels, head.delta, code, choose, head.depth, head.latents, head.halving
    )


def psnr(x: np.ndarray, y: np.ndarray, levels: int) -> float:
    mse = float(np.mean((x.astype(np.float64) - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(max(levels, 1) ** 2 / mse)


def _encode_slice(part: _Slice, quality: Quality, overhead: float = 0.0) -> Coded:
    """The slice coded for ``quality``; ``overhead``: container bytes charged to this slice under a
    rate target. PSNR and rate targets try every δ halving period in :data:`HALVINGS` and keep the
    smaller file (PSNR) or the better PSNR (rate)."""
    if quality.lossless:
        return part.encode(0)
    if quality.delta is not None:
        return part.encode(quality.delta)
    if quality.latent_only or (
        quality.psnr is not None
        and not part.fast
        and psnr(part.x, part.reconstruction(LATENT_ONLY), part.levels) >= quality.psnr
    ):
        if part.fast:
            raise InputError("latent-only coding needs the autoencoder (not with fast encoding)")
        return part.encode(LATENT_ONLY)
    if quality.psnr is not None:
        target = quality.psnr
        coded = [part.encode(_largest_delta(part, target, h), target, h) for h in HALVINGS]
        coded += _transform_coded([part], (1.0,), _single, part.x, part.levels, quality) or []
        return min(coded, key=lambda c: len(c.payload))
    budget = quality.bpp * part.x.size / 8 - overhead
    transformed = _transform_coded([part], (1.0,), _single, part.x, part.levels, quality, budget)
    best = None if transformed is None else (psnr(part.x, transformed[0].recon, part.levels), transformed[0])
    for halving in HALVINGS:
        fitting = {part.levels: part.encode(part.levels, halving=halving)}  # δ → coded, within budget
        if len(fitting[part.levels].payload) > budget:  # even the coarsest does not fit
            continue
        low, high = 0, part.levels  # find the smallest δ whose slice fits (it was coded on the way)
        while low < high:
            mid = (low + high) // 2
            coded = part.encode(mid, halving=halving)
            if len(coded.payload) <= budget:
                fitting[mid], high = coded, mid
            else:
                low = mid + 1
        quality_db = psnr(part.x, fitting[low].recon, part.levels)
        if best is None or quality_db > best[0]:
            best = (quality_db, fitting[low])
    if best is not None:
        return best[1]
    return part.encode(part.levels if part.fast else LATENT_ONLY)  # nothing fits: the smallest


def _last_good_step(good: Callable[[int], bool], good_step: int, bad_step: int) -> int:
    """A step between ``good_step`` (``good``) and ``bad_step`` (not), either way round, that is
    ``good`` and within :data:`STEP_TOLERANCE` (or 1) of the boundary: bisection on the log scale,
    ``good`` monotone."""
    while True:
        low, high = sorted((good_step, bad_step))
        if high - low <= 1 or high <= STEP_TOLERANCE * low:
            return good_step
        mid = min(high - 1, max(low + 1, math.isqrt(low * high)))
        good_step, bad_step = (mid, bad_step) if good(mid) else (good_step, mid)


def _single(planes: list[np.ndarray]) -> np.ndarray:
    return planes[0]


def _transform_coded(
    parts: list[_Slice],
    ratios: tuple[float, ...],
    combine: Callable[[list[np.ndarray]], np.ndarray],
    original: np.ndarray,
    levels: int,
    quality: Quality,
    budget: float = 0.0,
) -> list[Coded] | None:
    """``parts`` transform coded at one step, scaled per part by ``ratios`` (a grey slice: one part,
    ratio 1; colour: the YCoCg-R planes), searched on the log scale to within 1%: under a PSNR target
    the largest step whose reconstruction (``combine`` of the parts' reconstructions, against
    ``original``) reaches it, under a rate target the smallest step whose payloads fit ``budget``
    bytes. None when the target cannot be met."""
    finest = max(math.ceil(p.transform.smallest_step / r) for p, r in zip(parts, ratios, strict=True))
    top = subbands.max_step(parts[0].levels)

    def steps(step: int) -> list[int]:
        return [
            min(subbands.max_step(p.levels), max(p.transform.smallest_step, round(step * r)))
            for p, r in zip(parts, ratios, strict=True)
        ]

    def code(step: int) -> list[Coded]:
        return [p.encode_transform(s) for p, s in zip(parts, steps(step), strict=True)]

    if quality.psnr is not None:

        def reaches(step: int) -> bool:
            decoded = [p.transform.reconstruction(s) for p, s in zip(parts, steps(step), strict=True)]
            return psnr(original, combine(decoded), levels) >= quality.psnr

        if not reaches(finest):
            return None
        return code(top if reaches(top) else _last_good_step(reaches, finest, top))
    fitting: list[list[Coded]] = []  # the last trial that fitted

    def fits(step: int) -> bool:
        trial = code(step)
        if sum(len(c.payload) for c in trial) > budget:
            return False
        fitting[:] = [trial]
        return True

    if not fits(top):
        return None
    if not fits(finest):
        _last_good_step(fits, top, finest)  # ends on the last step that fitted
    return fitting[0]


def _largest_delta(part: _Slice, target: float, halving: int) -> int:
    """The largest δ whose reconstruction reaches ``target`` dB (bisection; δ = 0 is exact)."""
    low, high = 0, part.levels
    while low < high:
        mid = (low + high + 1) // 2
        good = psnr(part.x, part.reconstruction(mid, halving), part.levels) >= target
        low, high = (mid, high) if good else (low, mid - 1)
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
    fast: bool = False,
) -> bytes:
    """Encode a uint8/uint16 array (2-D, ``(S, H, W)`` or ``(H, W, C)``) into ``.rcz`` bytes; ``kind``
    and ``scale`` are recorded for :mod:`recon.codec.files` (see :mod:`recon.codec.container`).
    ``fast``: skip the autoencoder and code only the no-latent passes (1.3–2× faster; the files
    decode with the same codec). RGB images are also coded as YCoCg-R planes (:mod:`recon.codec.colour`;
    not under a δ bound, which holds per RGB channel), and the better file is kept: the smaller one
    (lossless, PSNR target) or the one with the higher PSNR (rate target)."""
    quality = quality or Quality(lossless=True)
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise InputError(f"the codec takes uint8 or uint16 images, got {array.dtype}")
    slices, layout = _slices(array)
    height, width = slices[0].shape
    bits = bit_depth(array)

    def header(layout: int) -> Header:
        return Header(array.dtype, bits, layout, len(slices), height, width, model.identity, kind, scale)

    plain = header(layout)
    data, coded = _code_planes(plain, slices, [plain.levels] * len(slices), model, quality, fast)
    if not (layout == 2 and len(slices) == 3 and bits <= colour.MAX_BITS and quality.delta is None):
        return data  # nothing to compare with
    ycocg = header(3)
    if quality.lossless or quality.latent_only:
        planes, maxima = colour.forward(array, plain.levels), colour.plane_maxima(plain.levels)
        transformed = _code_planes(ycocg, planes, list(maxima), model, quality, fast)
    else:
        transformed = _transform_colour(ycocg, array, model, quality, fast)
    if transformed is None:
        return data
    candidates = [(data, _assemble(coded, plain)), (transformed[0], _assemble(transformed[1], ycocg))]
    return _better(candidates, array, plain.levels, quality)[0]


def _better(
    candidates: list[tuple[bytes, np.ndarray]], x: np.ndarray, levels: int, quality: Quality
) -> tuple[bytes, np.ndarray]:
    """The file to keep: under a rate target the best PSNR among those within it, otherwise (or if
    none fits) the smallest that reaches the PSNR target (every one, without a target)."""

    def score(candidate: tuple[bytes, np.ndarray]) -> tuple[bool, float]:
        size, quality_db = len(candidate[0]), psnr(x, candidate[1], levels)
        if quality.bpp is not None:
            fits = 8 * size <= quality.bpp * x.size
            return fits, quality_db if fits else -size
        reaches = quality.psnr is None or quality_db >= quality.psnr
        return reaches, -size

    return max(candidates, key=score)


def _code_planes(
    header: Header,
    planes: list[np.ndarray],
    maxima: list[int],
    model: CodecModel,
    quality: Quality,
    fast: bool,
) -> tuple[bytes, list[np.ndarray]]:
    """The file with every plane coded for ``quality`` on its own (``maxima``: each plane's largest
    value), and the planes it decodes to."""
    payloads, decoded, counts = [], [], AdaptiveContexts(CONTEXT_CLASSES)
    for x, maximum in zip(planes, maxima, strict=True):
        part = _Slice(model, x, maximum, fast=fast, counts=counts)
        coded = _encode_slice(part, quality, container_overhead(len(planes)))
        recon = part.predicted if coded.recon is None else coded.recon
        palette = None if quality.latent_only else np.unique(x)
        if palette is not None and 4 * palette.size <= maximum + 1:  # few values: code their ranks
            # losslessly, whenever that is smaller (then it is also better) than the requested coding
            ranks = np.searchsorted(palette, x)
            packed = _Slice(model, ranks, max(1, palette.size - 1), palette, fast, counts).encode(0)
            if len(packed.payload) < len(coded.payload):
                coded, recon = packed, x
        payloads.append(coded.payload)
        decoded.append(recon)
        counts = coded.counts.next_slice()
    return write_container(header, payloads), decoded


def _transform_colour(
    header: Header, array: np.ndarray, model: CodecModel, quality: Quality, fast: bool
) -> tuple[bytes, list[np.ndarray]] | None:
    """The RGB ``array``'s YCoCg-R planes transform coded together under a PSNR or rate target
    (:func:`_transform_coded`: one step for the image, the chroma planes' scaled by
    :data:`~recon.codec.colour.CHROMA_STEP_RATIOS`), searched on the RGB PSNR or on the file's size;
    None when the target cannot be met this way."""
    planes = colour.forward(array, header.levels)
    parts = [
        _Slice(model, p, m, fast=fast)
        for p, m in zip(planes, colour.plane_maxima(header.levels), strict=True)
    ]
    budget = 0.0 if quality.bpp is None else quality.bpp * array.size / 8 - 3 * container_overhead(3)

    def rgb(decoded: list[np.ndarray]) -> np.ndarray:
        return colour.inverse(decoded, header.levels)

    coded = _transform_coded(parts, colour.CHROMA_STEP_RATIOS, rgb, array, header.levels, quality, budget)
    if coded is None:
        return None
    return write_container(header, [c.payload for c in coded]), [c.recon for c in coded]


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
    maxima = colour.plane_maxima(header.levels) if header.layout == 3 else [header.levels] * header.slices
    shape = (header.height, header.width)
    planes, counts = [], AdaptiveContexts(CONTEXT_CLASSES)
    for i, (payload, maximum) in enumerate(zip(payloads, maxima, strict=True)):
        if i:
            counts = counts.next_slice()
        planes.append(_decode_slice(model, payload, shape, maximum, counts))
    return _assemble(planes, header).astype(header.dtype), header


def _assemble(planes: list[np.ndarray], header: Header) -> np.ndarray:
    """The decoded planes as the array the file stores (:attr:`Header.shape`)."""
    if header.layout == 3:
        return colour.inverse(planes, header.levels)
    out = np.stack(planes)
    if header.layout == 0:
        return out[0]
    return out if header.layout == 1 else np.moveaxis(out, 0, -1)


def _decode_slice(
    model: CodecModel, payload: bytes, shape: tuple[int, int], maximum: int, counts: AdaptiveContexts
) -> np.ndarray:
    """One slice's values (int64, up to ``maximum``); ``counts``: the polyphase passes' adaptive
    state, updated."""
    head, start = _SliceHeader.read(payload, maximum)
    reader = Reader(payload[start:])
    values = _read_slice(model, reader, head, shape, maximum, counts)
    reader.finish()
    return values


def _read_slice(
    model: CodecModel,
    reader: Reader,
    head: _SliceHeader,
    shape: tuple[int, int],
    maximum: int,
    counts: AdaptiveContexts,
) -> np.ndarray:
    if head.wavelet:
        return subbands.read(reader, shape, maximum, head.delta, model.wavelet_tables)
    levels, palette = maximum, None
    if head.palette_size:
        palette = _read_palette(reader, head.palette_size)
        if palette[-1] > maximum:
            raise InputError("corrupt codec payload (palette out of range)")
        levels = max(1, head.palette_size - 1)
    if head.latents:
        h4, w4 = -(-shape[0] // 4), -(-shape[1] // 4)
        symbols = np.stack([reader.categorical(h4 * w4, table) for table in model.latent_tables])
        q = torch.from_numpy(symbols - LATENT_RANGE).reshape(1, -1, h4, w4).to(_device(model))
        predicted, log_scale = _prediction(model, q, shape, levels)
        if head.delta == LATENT_ONLY:
            return predicted
        anchors = contexts_of(log_scale, head.offset)
    else:
        predicted, anchors = _no_latent_prediction(shape, levels)
    values = _decode_residuals(model, reader, predicted, anchors, levels, head, counts)
    return values if palette is None else palette[np.clip(values, 0, head.palette_size - 1)]
