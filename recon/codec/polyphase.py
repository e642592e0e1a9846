r"""Residual coding in four interleaved passes (polyphase), each pass vectorised.

Pixels are split by the parity of their row and column: *anchors* ``(even, even)``, then *row*
pixels ``(even, odd)`` and *column* pixels ``(odd, even)``, then *centre* pixels ``(odd, odd)``. Anchors
are predicted by the autoencoder (context: its residual scale). Every later pass sees the exact
reconstructed values of the earlier ones, so its pixels are interpolated from both sides — left/right
anchors, top/bottom anchors, or the flatter of the two pairs around a centre pixel (edge-directed) —
either plainly or as the autoencoder's prediction corrected by the neighbours' interpolated
prediction error — or, for centre pixels without latents, as the mean of all four neighbours (the
encoder picks the cheaper per pass and slice; one flag bit each). Their context
is the neighbours' disagreement plus the residuals already coded around the pixel,
:math:`a = |n_1 - n_2| + \sum_{4\text{-neighbours}} |q|` in residual steps (local error energy, as in
CALIC; pixels not yet coded count 0 on both sides), as the class
:math:`\min(\lfloor\log_2 a\rfloor + 1, 15)`, or a class of its own when the neighbours are all 0
(background, which would otherwise cost a fraction of a bit per pixel), with token tables learned
from training images.

The anchors can themselves be coded this way, recursively (``depth``), so that only a sparse grid
rests on the autoencoder's prediction. This is what lets a residual coder with no per-pixel
sequential loop exploit local correlation (the idea of checkerboard / hierarchical interpolation
coders); the passes are all integer arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

ACTIVITY_CLASSES = 16
ZERO_CLASS = ACTIVITY_CLASSES  # both neighbours exactly 0 (image background): its own table
CONTEXT_CLASSES = ACTIVITY_CLASSES + 1
PASSES = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row parity, column parity), in coding order

# code(pass, rows, cols, prediction, contexts, delta) -> quantised residuals of those pixels
Code = Callable[[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]
# choose(pass, rows, cols, [plain prediction, corrected prediction], delta) -> 0 or 1
Choose = Callable[[int, np.ndarray, np.ndarray, list[np.ndarray], int], int]
MAX_HALVING = 8  # largest halving period a file may state


def level_delta(delta: int, halving: int, level: int) -> int:
    """δ of resolution ``level`` (0: finest): ``delta`` halved every ``halving`` levels towards the
    coarse grid (0: the same δ everywhere). Coarse pixels are few and every finer pixel is
    interpolated from them, so at low rates they are worth more precision (the idea behind the
    finer quantisation of a wavelet's coarse bands); every error stays within ``delta``."""
    return delta >> (level // halving) if halving else delta


def quantize_residual(r: np.ndarray, delta: int) -> np.ndarray:
    """:math:`\\mathrm{sign}(r)\\lfloor(|r|+\\delta)/(2\\delta+1)\\rfloor`: error at most δ."""
    return np.sign(r) * ((np.abs(r) + delta) // (2 * delta + 1))


def activity_class(a: np.ndarray, step: int) -> np.ndarray:
    steps = np.abs(a) // step
    return np.minimum(
        np.floor(np.log2(np.maximum(steps, 1))).astype(np.int64) + (steps > 0), ACTIVITY_CLASSES - 1
    )


@dataclass(frozen=True)
class _Layout:
    """Where the pixels of one pass live, as flat indices into the full-resolution image: the
    pixels themselves and, per axis, the neighbour before and after each (the one before where none
    is after; the grid's last row or column before the first, as numpy's index -1 does). Cached per
    shape, stride and pass: the gathers are then 1-D ``take`` s, several times faster than 2-D fancy
    indexing into strided views."""

    rows: np.ndarray  # full-resolution coordinates, for the callbacks
    cols: np.ndarray
    index: np.ndarray
    around: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]  # axis 0, axis 1


CACHED_LAYOUT_PIXELS = 1 << 15  # passes up to this size keep their layouts (a few MB at most)


def _layout(shape: tuple[int, int], stride: int, k: int) -> _Layout:
    """The pass' layout: cached for small passes (an image's coarse levels, and whole slices of
    typical MR sizes, which are coded again and again), built afresh for large ones."""
    grid = len(range(0, shape[0], stride)) * len(range(0, shape[1], stride))
    return (
        _cached_layout(shape, stride, k)
        if grid <= 4 * CACHED_LAYOUT_PIXELS
        else _build_layout(shape, stride, k)
    )


def _build_layout(shape: tuple[int, int], stride: int, k: int) -> _Layout:
    height, width = shape
    gh, gw = len(range(0, height, stride)), len(range(0, width, stride))
    rp, cp = PASSES[k]
    rows, cols = np.meshgrid(np.arange(rp, gh, 2), np.arange(cp, gw, 2), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()

    def flat(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return (r * stride) * width + c * stride

    below = np.where(rows + 1 < gh, rows + 1, (rows - 1) % gh)
    right = np.where(cols + 1 < gw, cols + 1, (cols - 1) % gw)
    layout = _Layout(
        rows * stride,
        cols * stride,
        flat(rows, cols),
        ((flat((rows - 1) % gh, cols), flat(below, cols)), (flat(rows, (cols - 1) % gw), flat(rows, right))),
    )
    for array in (layout.rows, layout.cols, layout.index, *layout.around[0], *layout.around[1]):
        array.flags.writeable = False  # shared through the cache
    return layout


_cached_layout = lru_cache(maxsize=64)(_build_layout)


def _neighbours(values: np.ndarray, layout: _Layout, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Values (flat, full resolution) before and after each pixel of the pass along ``axis``."""
    before, after = layout.around[axis]
    return np.take(values, before), np.take(values, after)


PLAIN, CORRECTED, MEAN4 = 0, 1, 2


def interpolate(recon: np.ndarray, predicted: np.ndarray, k: int, modes: tuple[int, ...], layout: _Layout):
    """Prediction, disagreement and "neighbours all zero" of pass ``k`` (1: row, 2: column,
    3: centre) from ``recon`` (flat), one triple per mode in ``modes``: PLAIN, CORRECTED or (centre
    only) MEAN4, the mean of all four neighbours (best for noise). Neighbours are gathered once."""
    axes = {1: (1,), 2: (0,), 3: (1, 0)}[k]
    neighbours = {axis: _neighbours(recon, layout, axis) for axis in axes}

    def pair(axis: int, mode: int):
        a, b = neighbours[axis]
        zero = (a == 0) & (b == 0)
        if mode == CORRECTED:
            pa, pb = _neighbours(predicted, layout, axis)
            return np.take(predicted, layout.index) + (a - pa + b - pb) // 2, a - b, zero
        return (a + b) // 2, a - b, zero

    def option(mode: int):
        if k != 3:
            return pair(axes[0], mode)
        (ph, dh, zh), (pv, dv, zv) = pair(1, mode), pair(0, mode)
        if mode == MEAN4:
            return (2 * (ph + pv) + 2) // 4, (np.abs(dh) + np.abs(dv)) // 2, zh & zv
        horizontal = np.abs(dh) <= np.abs(dv)
        return np.where(horizontal, ph, pv), np.where(horizontal, dh, dv), zh & zv

    return [option(mode) for mode in modes]


def run_passes(
    predicted: np.ndarray,
    anchor_contexts: np.ndarray,
    levels: int,
    delta: int,
    code: Code,
    choose: Choose,
    depth: int = 0,
    corrected: bool = True,
    halving: int = 0,
) -> np.ndarray:
    """Reconstruct pass by pass; ``code`` codes (or decodes) each pass' residuals, ``choose`` picks
    the predictor of passes 1–3 (encoder: the cheaper one; decoder: the flag it read).

    With ``depth`` D > 0 the anchors are themselves coded the same way, recursively, on the grid of
    stride 2, 4, …: only the pixels of stride :math:`2^{D+1}` use the autoencoder's prediction.
    Callbacks get full-resolution ``rows, cols`` and the pass number ``3·level + k`` (k = 1, 2, 3;
    0 for the autoencoder-predicted anchors). ``corrected=False`` offers only the plain interpolation
    (without latents the corrected one is the same). Level n quantises with
    :func:`level_delta` (``delta``, ``halving``, n), which ``code`` and ``choose`` receive."""
    shape = predicted.shape
    recon = np.zeros(predicted.size, np.int64)  # flat, full resolution
    energy = np.zeros(predicted.size, np.int64)  # |coded residual| of each pixel coded so far
    guess, anchor_contexts = np.ravel(predicted), np.ravel(anchor_contexts)

    def level(n: int) -> None:
        stride = 1 << n
        d = level_delta(delta, halving, n)
        step = 2 * d + 1
        for k in range(4):
            if k == 0 and n < depth:  # the anchors are the next level's grid (never empty)
                level(n + 1)
                continue
            layout = _layout(shape, stride, k)
            if layout.index.size == 0:
                continue
            full = (layout.rows, layout.cols)
            if k == 0:
                number = 0
                prediction, contexts = np.take(guess, layout.index), np.take(anchor_contexts, layout.index)
            else:
                number = 3 * n + k
                modes = (PLAIN, CORRECTED) if corrected else (PLAIN, MEAN4) if k == 3 else (PLAIN,)
                options = interpolate(recon, guess, k, modes, layout)
                prediction, disagreement, zero = options[choose(number, *full, [o[0] for o in options], d)]
                nearby = sum(sum(_neighbours(energy, layout, axis)) for axis in (0, 1))
                contexts = np.where(
                    zero, ZERO_CLASS, activity_class(np.abs(disagreement) + nearby * step, step)
                )
            q = code(number, *full, prediction, contexts, d)
            recon[layout.index] = np.clip(prediction + q * step, 0, levels)
            energy[layout.index] = np.abs(q)

    level(0)
    return recon.reshape(shape)
