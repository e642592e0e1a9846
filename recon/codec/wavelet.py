r"""The CDF 9/7 wavelet (JPEG 2000's irreversible transform) as integer lifting.

One level along an axis splits :math:`x` into :math:`s_i = x_{2i}` and :math:`d_i = x_{2i+1}` and lifts

.. math::
    d_i \mathrel{+}= \alpha(s_i + s_{i+1}),\quad s_i \mathrel{+}= \beta(d_{i-1} + d_i),\quad
    d_i \mathrel{+}= \gamma(s_i + s_{i+1}),\quad s_i \mathrel{+}= \delta(d_{i-1} + d_i)

(Daubechies & Sweldens 1998), with whole-sample symmetric extension at both ends and any length.
Every update is :math:`\lfloor (c\,(a+b) + 2^{P-1}) / 2^P \rfloor` with :math:`c` the coefficient in
:data:`LIFT_BITS`-bit fixed point, on int64: the inverse subtracts the very same integers in reverse
order, so the transform is exactly invertible and the decoder's arithmetic is identical on every
machine. A float wavelet (PyWavelets') is not bit-exact across builds, which a decoder that must
give the same pixels everywhere cannot afford: this is why the lifting is written here. The usual
scaling by :math:`K` is left out; the quantiser absorbs it through :func:`band_gains`.

2-D: columns then rows of the low band, level by level (Mallat). Bands come coarse to fine:
``[LL, (HL, LH, HH) of the coarsest level, …, (HL, LH, HH) of the finest]`` (HL: high along rows).
"""

from __future__ import annotations

import numpy as np

LIFT_BITS = 24
_STEPS = (-1.586134342059924, -0.052980118572961, 0.882911075530934, 0.443506852043971)
LIFTS = tuple(round(c * (1 << LIFT_BITS)) for c in _STEPS)  # fixed-point α, β, γ, δ
_HALF = 1 << (LIFT_BITS - 1)
MAX_LEVELS = 6
SMALLEST_SIDE = 8  # the low band's shorter side stays at least this long
# Energy of each band's synthesis function (squared norm of an impulse's inverse on a 1024² grid) of
# unscaled lifting: detail bands of level l = 1 (finest) … 6, (HL = LH, HH), and the low band after
# L = 1 … 6 levels. Quantising band b with step Δ/√g_b gives every band the same share of the error.
_DETAIL_GAINS = (
    (1.022700, 0.619779),
    (1.741038, 0.935506),
    (3.336715, 1.887771),
    (6.063420, 3.526155),
    (10.712950, 6.282212),
    (18.767687, 11.029934),
)
_LOW_GAINS = (1.0, 1.687562, 3.240182, 5.897784, 10.426387, 18.268606, 31.933643)


def _update(coefficient: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (coefficient * (a + b) + _HALF) >> LIFT_BITS


def _right(s: np.ndarray, n: int) -> np.ndarray:
    """:math:`s_{i+1}` for :math:`i < n` (axis 0), mirrored past the end (:math:`s_m = s_{m-1}`)."""
    return s[1 : n + 1] if s.shape[0] > n else np.concatenate([s[1:], s[-1:]])


def _left_and_own(d: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """:math:`d_{i-1}` and :math:`d_i` for :math:`i < n` (:math:`d_{-1} = d_0`, :math:`d_m = d_{m-1}`)."""
    before = np.concatenate([d[:1], d[: n - 1]])
    own = d if d.shape[0] == n else np.concatenate([d, d[-1:]])
    return before, own


def _lift(s: np.ndarray, d: np.ndarray, sign: int, order: range) -> None:
    for k in order:
        if k % 2 == 0:
            d += sign * _update(LIFTS[k], s[: d.shape[0]], _right(s, d.shape[0]))
        else:
            s += sign * _update(LIFTS[k], *_left_and_own(d, s.shape[0]))


def _forward_axis0(x: np.ndarray) -> np.ndarray:
    if x.shape[0] < 2:
        return x.copy()
    s, d = x[0::2].copy(), x[1::2].copy()
    _lift(s, d, 1, range(len(LIFTS)))
    return np.concatenate([s, d])


def _inverse_axis0(y: np.ndarray) -> np.ndarray:
    if y.shape[0] < 2:
        return y.copy()
    m = (y.shape[0] + 1) // 2
    s, d = y[:m].copy(), y[m:].copy()
    _lift(s, d, -1, range(len(LIFTS) - 1, -1, -1))
    x = np.empty_like(y)
    x[0::2], x[1::2] = s, d
    return x


def levels_for(shape: tuple[int, int]) -> int:
    """Levels: halve until the low band's shorter side would drop below :data:`SMALLEST_SIDE` (at
    most :data:`MAX_LEVELS`)."""
    n, side = 0, min(shape)
    while n < MAX_LEVELS and (side + 1) // 2 >= SMALLEST_SIDE:
        side, n = (side + 1) // 2, n + 1
    return n


def band_shapes(shape: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    """Shapes of the bands in :func:`forward`'s order."""
    sizes = [shape]
    for _ in range(levels):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    out = [sizes[-1]]
    for level in range(levels, 0, -1):
        (h, w), (lh, lw) = sizes[level - 1], sizes[level]
        out += [(lh, w - lw), (h - lh, lw), (h - lh, w - lw)]
    return out


def band_gains(levels: int) -> list[float]:
    """Synthesis energy of every band in :func:`forward`'s order."""
    gains = [_LOW_GAINS[levels]]
    for level in range(levels, 0, -1):
        detail, diagonal = _DETAIL_GAINS[level - 1]
        gains += [detail, detail, diagonal]
    return gains


def forward(x: np.ndarray, levels: int) -> list[np.ndarray]:
    """Integer 2-D transform of int64 ``x``: bands coarse to fine (see the module docstring)."""
    low, details = np.asarray(x, np.int64), []
    for _ in range(levels):
        h, w = low.shape
        t = _forward_axis0(_forward_axis0(low).T).T
        lh, lw = (h + 1) // 2, (w + 1) // 2
        details.append((t[:lh, lw:], t[lh:, :lw], t[lh:, lw:]))
        low = t[:lh, :lw]
    bands = [low]
    for level in reversed(details):
        bands.extend(level)
    return [np.ascontiguousarray(b) for b in bands]


def inverse(bands: list[np.ndarray], levels: int) -> np.ndarray:
    """The exact inverse of :func:`forward`."""
    low = bands[0]
    for level in range(levels):
        hl, lh, hh = bands[1 + 3 * level : 4 + 3 * level]
        low = _inverse_axis0(_inverse_axis0(np.block([[low, hl], [lh, hh]]).T).T)
    return low
