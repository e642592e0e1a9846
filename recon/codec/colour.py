r"""The reversible YCoCg-R colour transform (Malvar & Sullivan 2003) for RGB images.

.. math::
    C_o = R - B,\quad t = B + \lfloor C_o/2 \rfloor,\quad C_g = G - t,\quad Y = t + \lfloor C_g/2 \rfloor

and back :math:`t = Y - \lfloor C_g/2\rfloor,\ G = C_g + t,\ B = t - \lfloor C_o/2\rfloor,\ R = B + C_o`:
integer lifting, exactly invertible, so lossless files use it too (JPEG XL's default transform).
For :math:`b`-bit channels :math:`Y` keeps the range :math:`[0, 2^b - 1]` and the chroma planes
:math:`[-(2^b-1), 2^b-1]`, stored offset by :math:`2^b - 1`.

An error :math:`e` in one plane reaches R, G and B through the (linearised) inverse with energy
:math:`w = (3, \tfrac12, \tfrac34)` for (Y, Co, Cg), so lossy coding quantises the chroma planes
with steps :math:`\sqrt{w_Y/w_c}` = 2.449 (Co) and 2 (Cg) times the luma step: every plane then adds
the same RGB error per unit of its step (equal slope).

Four lines of integer arithmetic are written here because no dependency offers the reversible
variant on integer arrays.
"""

from __future__ import annotations

import numpy as np

MAX_BITS = 15  # chroma planes need one bit more; the residual coder carries at most 16
CHROMA_STEP_RATIOS = (1.0, (3 / 0.5) ** 0.5, (3 / 0.75) ** 0.5)  # Y, Co, Cg


def plane_maxima(maximum: int) -> tuple[int, int, int]:
    """The largest stored value of each plane for channels up to ``maximum``."""
    return maximum, 2 * maximum, 2 * maximum


def forward(rgb: np.ndarray, maximum: int) -> list[np.ndarray]:
    """``(H, W, 3)`` integers → Y, Co + maximum, Cg + maximum (int64)."""
    r, g, b = (rgb[..., c].astype(np.int64) for c in range(3))
    co = r - b
    t = b + (co >> 1)
    cg = g - t
    return [t + (cg >> 1), co + maximum, cg + maximum]


def inverse(planes: list[np.ndarray], maximum: int) -> np.ndarray:
    """The exact inverse of :func:`forward` (``(H, W, 3)`` int64), clipped to ``[0, maximum]``
    (only lossy planes can leave the range)."""
    y, co, cg = (np.asarray(p, np.int64) for p in planes)
    co, cg = co - maximum, cg - maximum
    t = y - (cg >> 1)
    g = cg + t
    b = t - (co >> 1)
    return np.clip(np.stack([b + co, g, b], axis=-1), 0, maximum)
