r"""Transform coding of a slice: integer CDF 9/7 wavelet, rate-distortion optimised quantiser, coded bands.

The path that wins at low rates, where coding pixels against interpolations of their neighbours
(:mod:`recon.codec.polyphase`) spends its bits badly: an interpolating coder has no update step, so
a coarse δ aliases, while a wavelet's low band is an anti-aliased average.

1. :mod:`recon.codec.wavelet` transforms :math:`X = (x - m)\,2^F` (:data:`FRACTION_BITS`,
   :math:`m` mid-grey) in :func:`~recon.codec.wavelet.levels_for` levels.
2. Band :math:`b` is quantised with step :math:`\Delta_b = \lfloor \Delta w_b / 2^{16} \rceil`,
   :math:`w_b = \lfloor 2^{16}/\sqrt{g_b} \rceil` (:math:`g_b` the band's synthesis energy, so every
   band adds the same error per coefficient), and reconstructed at
   :math:`\mathrm{sign}(q)(|q| + r_b/32)\Delta_b`, :math:`r_b` the band's mean position inside its
   quantisation cells, sent in 5 bits (what a Laplacian band needs: its values crowd the cell's
   lower end). The encoder chooses each :math:`|q|` (rate-distortion optimised quantisation; the
   decoder does not need to know how) among :math:`n = \mathrm{round}(|c|/\Delta_b)`, :math:`n - 1`
   and 0, whichever minimises :math:`(|c|/\Delta_b - |q|)^2 + \lambda\,\mathrm{bits}(q)`,
   :math:`\lambda` = :data:`RDO_LAMBDA` and the bits those of the trained table of the coefficient's
   context, which is known at that point of the coding order: +0.27 dB at equal rate on training
   photographs over a dead-zone quantiser (BENCHMARKS.md).
3. The low band is coded as differences to the value above (left on its first row); every other
   band in four polyphase passes (even/even, even/odd, odd/even, odd/odd positions), so that each pass
   sees the magnitudes of the passes before it on both sides. A coefficient's context is the class of
   its activity :math:`a = 2|p| + \sum_{3\times3}|p| + \sum_{\text{siblings}}|s| + 4(\sum_{4}|n| +
   \tfrac12\sum_{\text{diag}}|n|)` — parent :math:`p` in the next coarser band of the same
   orientation (and its 3×3 neighbourhood), the same position in the bands of this level already
   coded, and the neighbours already coded (others count 0) — per pass, and apart for the coarsest
   level (no parent). Tokens (:func:`~recon.codec.entropy.tokenize`) are coded adaptively from the
   codec's trained tables (:class:`~recon.codec.entropy.AdaptiveContexts`).

Everything the decoder computes is integer arithmetic, so it decodes to the same pixels on every
machine. Measured against JPEG 2000 at equal bytes: ``benchmarks/compression.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from recon.codec import wavelet
from recon.codec.entropy import AdaptiveContexts, Reader, Writer, token_bits, tokenize, untokenize

FRACTION_BITS = 6
RDO_LAMBDA = 0.12  # bits → squared steps; 0.10–0.12 best on training photographs (0.05: −0.07 dB, 0.2: −0.08)
OFFSET_UNIT = 32  # reconstruction offsets r_b in 1/32 of a step …
OFFSET_BITS = 5  # … in [-16, 15], sent as r_b + 16
ACTIVITY_EDGES = np.array([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512])
CLASSES = len(ACTIVITY_EDGES) + 1
PASSES = ((0, 0), (0, 1), (1, 0), (1, 1))
GROUPS = 2  # the coarsest level (no parent), the others
CONTEXTS = 1 + GROUPS * len(PASSES) * CLASSES  # context 0: the low band's differences
W_PARENT, W_PARENT_AREA, W_SIBLING, W_NEIGHBOUR = 2, 1, 1, 4

# code(band, pass, contexts) -> the quantised values of that pass (row-major), or the low band's
# differences for band 0 (pass 0, contexts all 0); called in coding order.
Code = Callable[[int, int, np.ndarray], np.ndarray]
TokenSink = Callable[[np.ndarray, np.ndarray, np.ndarray], None]  # (tokens, raw bits, contexts)
Pass = tuple[np.ndarray, np.ndarray]  # one pass' quantised values and their contexts


def settings() -> dict[str, object]:
    """What the decoder's arithmetic depends on (part of the codec's identity)."""
    return {
        "fraction_bits": FRACTION_BITS,
        "lifts": list(wavelet.LIFTS),
        "max_levels": wavelet.MAX_LEVELS,
        "smallest_side": wavelet.SMALLEST_SIDE,
        "weights": [band_weights(n) for n in range(wavelet.MAX_LEVELS + 1)],
        "offset_bits": OFFSET_BITS,
        "activity_edges": ACTIVITY_EDGES.tolist(),
        "activity_weights": [W_PARENT, W_PARENT_AREA, W_SIBLING, W_NEIGHBOUR],
        "groups": GROUPS,
    }


def max_step(maximum: int) -> int:
    """The largest step a file may state: the whole range (every band but the low one is then 0)."""
    return (maximum + 1) << FRACTION_BITS


def band_weights(levels: int) -> list[int]:
    """:math:`w_b = \\lfloor 2^{16}/\\sqrt{g_b}\\rceil` (IEEE square roots of literals: identical
    everywhere)."""
    return [round(65536 / g**0.5) for g in wavelet.band_gains(levels)]


def band_steps(delta: int, levels: int) -> list[int]:
    return [max(1, (delta * w + 32768) >> 16) for w in band_weights(levels)]


def _activity_class(a: np.ndarray) -> np.ndarray:
    return np.searchsorted(ACTIVITY_EDGES, a, side="right")


def _parent_of(parent: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows = np.minimum(np.arange(shape[0]) // 2, parent.shape[0] - 1)
    cols = np.minimum(np.arange(shape[1]) // 2, parent.shape[1] - 1)
    return parent[np.ix_(rows, cols)]


def _box3(a: np.ndarray) -> np.ndarray:
    p = np.pad(a, 1)
    h, w = a.shape
    return sum(p[i : i + h, j : j + w] for i in range(3) for j in range(3))


def _fit(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``a`` cropped or zero-padded to ``shape`` (sibling bands differ by one for odd sizes)."""
    out = np.zeros(shape, a.dtype)
    h, w = min(shape[0], a.shape[0]), min(shape[1], a.shape[1])
    out[:h, :w] = a[:h, :w]
    return out


def _neighbourhood(magnitude: np.ndarray) -> np.ndarray:
    """:math:`\\sum_4 |n| + \\frac12 \\sum_{diag}|n|` of every position (zeros beyond the band)."""
    p = np.pad(magnitude, 1)
    four = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]
    return four + (p[:-2, :-2] + p[:-2, 2:] + p[2:, :-2] + p[2:, 2:]) // 2


def run_bands(shape: tuple[int, int], levels: int, code: Code) -> list[np.ndarray]:
    """All bands' quantised values, in coding order, each pass' contexts computed from what was
    coded before it; ``code`` codes (encoder) or decodes (decoder) each pass."""
    shapes = wavelet.band_shapes(shape, levels)
    low = shapes[0]
    bands = [low_from_differences(code(0, 0, np.zeros(low[0] * low[1], np.int64)).reshape(low))]
    for b in range(1, len(shapes)):
        level, orientation = (b - 1) // 3, (b - 1) % 3  # level 0: the coarsest
        h, w = shapes[b]
        base = np.zeros((h, w), np.int64)
        if level > 0:
            parent = np.abs(bands[b - 3])
            base += W_PARENT * _parent_of(parent, (h, w)) + W_PARENT_AREA * _parent_of(_box3(parent), (h, w))
        for sibling in bands[b - orientation : b]:
            base += W_SIBLING * _fit(np.abs(sibling), (h, w))
        group = 0 if level == 0 else 1
        q = np.zeros((h, w), np.int64)
        for k, (r0, c0) in enumerate(PASSES):
            part = (slice(r0, None, 2), slice(c0, None, 2))
            if q[part].size == 0:
                continue
            activity = base[part] + W_NEIGHBOUR * _neighbourhood(np.abs(q))[part]
            contexts = 1 + _activity_class(activity).ravel() + CLASSES * (k + len(PASSES) * group)
            q[part] = code(b, k, contexts).reshape(q[part].shape)
        bands.append(q)
    return bands


def low_differences(low: np.ndarray) -> np.ndarray:
    """Each low-band value minus the one above it (left of it on the first row)."""
    d = low.copy()
    d[1:] -= low[:-1]
    d[0, 1:] -= low[0, :-1]
    return d


def low_from_differences(d: np.ndarray) -> np.ndarray:
    low = d.copy()
    low[0] = np.cumsum(d[0])
    return np.cumsum(low, axis=0)


def dequantize(bands: list[np.ndarray], steps: list[int], offsets: list[int]) -> list[np.ndarray]:
    """:math:`\\mathrm{sign}(q)\\lfloor ((32|q| + r_b)\\Delta_b + 16)/32 \\rfloor`; the low band
    :math:`q\\Delta`."""
    out = [bands[0] * steps[0]]
    for q, step, offset in zip(bands[1:], steps[1:], offsets, strict=True):
        magnitude = ((OFFSET_UNIT * np.abs(q) + offset) * step + OFFSET_UNIT // 2) // OFFSET_UNIT
        out.append(np.sign(q) * np.where(q != 0, magnitude, 0))
    return out


def to_pixels(bands: list[np.ndarray], levels: int, maximum: int) -> np.ndarray:
    """Inverse transform, rounded to integers in ``[0, maximum]``."""
    x = wavelet.inverse(bands, levels)
    middle = (maximum + 1) // 2
    return np.clip(((x + (1 << (FRACTION_BITS - 1))) >> FRACTION_BITS) + middle, 0, maximum)


class SubbandEncoder:
    """One slice's transform (computed once) and its coding at any step ``delta`` (in units of
    :math:`2^{-F}` grey levels) with the token ``tables`` (which the rate-distortion choices
    price by)."""

    def __init__(self, x: np.ndarray, maximum: int, tables: np.ndarray):
        self.x, self.maximum = np.asarray(x, np.int64), maximum
        self.tables = tables
        frequencies = tables.astype(np.float64)
        self.token_cost = -np.log2(frequencies / frequencies.sum(1, keepdims=True))
        self.levels = wavelet.levels_for(self.x.shape)
        centred = (self.x - (maximum + 1) // 2) << FRACTION_BITS
        self.coefficients = wavelet.forward(centred, self.levels)

    @property
    def smallest_step(self) -> int:
        """The finest step whose values (and low-band differences) the tokens can carry (below
        :math:`2^{14}` in magnitude), and at least an eighth of a grey level."""
        weights = band_weights(self.levels)
        needed = max(
            int(np.abs(c).max(initial=0)) * 4 // w + 1
            for c, w in zip(self.coefficients, weights, strict=True)
        )
        return max(1 << (FRACTION_BITS - 3), needed)

    def quantize(self, delta: int) -> tuple[list[np.ndarray], list[int]]:
        """Quantised bands (rate-distortion optimised) and the detail bands' reconstruction offsets
        at ``delta``."""
        bands, offsets, _ = self._quantized(delta)
        return bands, offsets

    def _quantized(self, delta: int) -> tuple[list[np.ndarray], list[int], list[Pass]]:
        """:meth:`quantize`, and every pass' values with their contexts in coding order (what
        :meth:`tokens` codes: the contexts come from this same walk over the bands)."""
        steps = band_steps(delta, self.levels)
        low = (2 * self.coefficients[0] + steps[0]) // (2 * steps[0])  # plain rounding: a dense band
        passes: list[Pass] = []

        def choose(b: int, k: int, contexts: np.ndarray) -> np.ndarray:
            if b == 0:
                passes.append((low_differences(low).ravel(), contexts))
                return passes[-1][0]
            r0, c0 = PASSES[k]
            c = self.coefficients[b][r0::2, c0::2].ravel()
            scaled, sign = np.abs(c) / steps[b], np.sign(c)
            nearest = np.floor(scaled + 0.5).astype(np.int64)
            best, best_cost = np.zeros_like(nearest), np.full(nearest.shape, np.inf)
            for magnitude in (nearest, np.maximum(nearest - 1, 0), np.zeros_like(nearest)):
                token = tokenize(sign * magnitude)[0]
                bits = self.token_cost[contexts, token] + token_bits(token)
                cost = (scaled - magnitude) ** 2 + RDO_LAMBDA * bits
                better = cost < best_cost
                best, best_cost = np.where(better, sign * magnitude, best), np.where(better, cost, best_cost)
            passes.append((best, contexts))
            return best

        bands = run_bands(self.x.shape, self.levels, choose)
        offsets = []
        for q, c, step in zip(bands[1:], self.coefficients[1:], steps[1:], strict=True):
            nonzero = q != 0
            inside = np.abs(c[nonzero]) / step - np.abs(q[nonzero]) if nonzero.any() else np.zeros(1)
            offsets.append(int(np.clip(round(float(inside.mean()) * OFFSET_UNIT), -16, 15)))
        return bands, offsets, passes

    def reconstruction(self, delta: int) -> np.ndarray:
        return self._pixels(delta, *self.quantize(delta))

    def _pixels(self, delta: int, bands: list[np.ndarray], offsets: list[int]) -> np.ndarray:
        steps = band_steps(delta, self.levels)
        return to_pixels(dequantize(bands, steps, offsets), self.levels, self.maximum)

    def tokens(self, delta: int, sink: TokenSink) -> tuple[list[np.ndarray], list[int]]:
        """Quantise at ``delta`` and hand every pass' tokens to ``sink`` in coding order."""
        bands, offsets, passes = self._quantized(delta)
        for values, contexts in passes:
            token, _, raw = tokenize(values)
            sink(token, raw, contexts)
        return bands, offsets

    def write(self, delta: int, writer: Writer) -> np.ndarray:
        """Code the slice at ``delta`` into ``writer``; returns its reconstruction."""
        state = AdaptiveContexts(CONTEXTS)

        def sink(token: np.ndarray, raw: np.ndarray, contexts: np.ndarray) -> None:
            writer.adaptive_tokens(token, raw, contexts, self.tables, state)

        bands, offsets = self.tokens(delta, sink)
        writer.uniform(np.array(offsets, np.int64) + (1 << (OFFSET_BITS - 1)), OFFSET_BITS)
        return self._pixels(delta, bands, offsets)


def read(reader: Reader, shape: tuple[int, int], maximum: int, delta: int, tables: np.ndarray) -> np.ndarray:
    """The mirror of :meth:`SubbandEncoder.write`: the decoded slice."""
    levels = wavelet.levels_for(shape)
    state = AdaptiveContexts(CONTEXTS)

    def code(b: int, k: int, contexts: np.ndarray) -> np.ndarray:
        token, raw = reader.adaptive_tokens(contexts, tables, state)
        return untokenize(token, raw)

    bands = run_bands(shape, levels, code)
    offsets = reader.uniform(3 * levels, OFFSET_BITS) - (1 << (OFFSET_BITS - 1))
    return to_pixels(dequantize(bands, band_steps(delta, levels), list(offsets)), levels, maximum)
