r"""Residual coding in four interleaved passes (polyphase), each pass vectorised.

Pixels are split by the parity of their row and column: *anchors* ``(even, even)``, then *row*
pixels ``(even, odd)`` and *column* pixels ``(odd, even)``, then *centre* pixels ``(odd, odd)``. Anchors
are predicted by the autoencoder (context: its residual scale). Every later pass sees the exact
reconstructed values of the earlier ones, so its pixels are interpolated from both sides — left/right
anchors, top/bottom anchors, or the flatter of the two pairs around a centre pixel (edge-directed) —
either plainly or as the autoencoder's prediction corrected by the neighbours' interpolated
prediction error (the encoder picks the cheaper per pass and slice; one flag bit each). Their context
is the neighbours' disagreement :math:`a = |n_1 - n_2|` in residual steps, as the class
:math:`\min(\lfloor\log_2 a\rfloor + 1, 15)`, with token tables learned from training images.

This is what lets a residual coder with no per-pixel sequential loop exploit local correlation (the
idea of checkerboard / hierarchical interpolation coders); the passes are all integer arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ACTIVITY_CLASSES = 16
PASSES = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row parity, column parity), in coding order

# code(pass, rows, cols, prediction, contexts) -> quantised residuals of those pixels
Code = Callable[[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# choose(pass, rows, cols, [plain prediction, corrected prediction]) -> 0 or 1
Choose = Callable[[int, np.ndarray, np.ndarray, list[np.ndarray]], int]


def quantize_residual(r: np.ndarray, delta: int) -> np.ndarray:
    """:math:`\\mathrm{sign}(r)\\lfloor(|r|+\\delta)/(2\\delta+1)\\rfloor`: error at most δ."""
    return np.sign(r) * ((np.abs(r) + delta) // (2 * delta + 1))


def activity_class(a: np.ndarray, step: int) -> np.ndarray:
    steps = np.abs(a) // step
    return np.minimum(
        np.floor(np.log2(np.maximum(steps, 1))).astype(np.int64) + (steps > 0), ACTIVITY_CLASSES - 1
    )


def _neighbours(
    values: np.ndarray, rows: np.ndarray, cols: np.ndarray, axis: int
) -> tuple[np.ndarray, np.ndarray]:
    """Values before and after each pixel along ``axis`` (the one before where none is after)."""
    h, w = values.shape
    if axis == 1:
        after = np.where(cols + 1 < w, cols + 1, cols - 1)
        return values[rows, cols - 1], values[rows, after]
    after = np.where(rows + 1 < h, rows + 1, rows - 1)
    return values[rows - 1, cols], values[after, cols]


def interpolate(recon: np.ndarray, predicted: np.ndarray, k: int, corrected: bool, rows, cols):
    """Prediction and disagreement of pass ``k`` (1: row, 2: column, 3: centre) from ``recon``."""
    error = recon - predicted

    def pair(axis):
        a, b = _neighbours(recon, rows, cols, axis)
        if corrected:
            ea, eb = _neighbours(error, rows, cols, axis)
            return predicted[rows, cols] + (ea + eb) // 2, a - b
        return (a + b) // 2, a - b

    if k == 1:
        return pair(1)
    if k == 2:
        return pair(0)
    (ph, dh), (pv, dv) = pair(1), pair(0)
    horizontal = np.abs(dh) <= np.abs(dv)
    return np.where(horizontal, ph, pv), np.where(horizontal, dh, dv)


def positions(shape: tuple[int, int], k: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    rp, cp = PASSES[k]
    rows, cols = np.meshgrid(np.arange(rp, h, 2), np.arange(cp, w, 2), indexing="ij")
    return rows.ravel(), cols.ravel()


def run_passes(
    predicted: np.ndarray,
    anchor_contexts: np.ndarray,
    levels: int,
    delta: int,
    code: Code,
    choose: Choose,
) -> np.ndarray:
    """Reconstruct pass by pass; ``code`` codes (or decodes) each pass' residuals, ``choose`` picks
    the predictor of passes 1–3 (encoder: the cheaper one; decoder: the flag it read)."""
    step = 2 * delta + 1
    recon = np.zeros(predicted.shape, np.int64)
    for k in range(4):
        rows, cols = positions(predicted.shape, k)
        if rows.size == 0:
            continue
        if k == 0:
            prediction, contexts = predicted[rows, cols], anchor_contexts[rows, cols]
        else:
            options = [interpolate(recon, predicted, k, corrected, rows, cols) for corrected in (False, True)]
            prediction, disagreement = options[choose(k, rows, cols, [p for p, _ in options])]
            contexts = activity_class(disagreement, step)
        q = code(k, rows, cols, prediction, contexts)
        recon[rows, cols] = np.clip(prediction + q * step, 0, levels)
    return recon
