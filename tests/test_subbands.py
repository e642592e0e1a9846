"""The codec's transform path: integer CDF 9/7 lifting and the context-coded bands."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recon.codec import subbands, wavelet
from recon.codec.entropy import Reader, Writer, laplace_token_probabilities, quantize_table

TABLES = np.stack([quantize_table(laplace_token_probabilities(2.0))] * subbands.CONTEXTS)


@settings(max_examples=40, deadline=None)
@given(height=st.integers(1, 70), width=st.integers(1, 70), seed=st.integers(0, 2**32 - 1))
def test_integer_lifting_is_exactly_invertible_at_any_size(height, width, seed):
    x = np.random.default_rng(seed).integers(-(1 << 22), 1 << 22, size=(height, width))
    levels = wavelet.levels_for(x.shape)
    bands = wavelet.forward(x, levels)
    assert [b.shape for b in bands] == wavelet.band_shapes(x.shape, levels)
    assert sum(b.size for b in bands) == x.size
    assert np.array_equal(wavelet.inverse(bands, levels), x)


def test_high_pass_annihilates_cubics_and_low_pass_keeps_constants():
    """The 9/7 analysis high-pass has four vanishing moments: a cubic leaves only rounding (and the
    boundary) in the detail band, and a constant passes the low band unchanged up to its DC gain."""
    t = np.arange(64, dtype=np.float64)
    cubic = np.round((0.002 * (t - 30) ** 3 - 0.05 * (t - 20) ** 2 + 3 * t) * 256).astype(np.int64)
    y = wavelet._forward_axis0(cubic[:, None])[:, 0]
    interior = y[32 + 3 : 64 - 3]  # detail coefficients away from both ends: rounding only
    assert np.abs(interior).max() <= 4 and np.abs(y[32:]).max() < 0.03 * np.abs(cubic).max()
    constant = wavelet._forward_axis0(np.full((64, 1), 1 << 20, np.int64))[:, 0]
    assert np.abs(constant[32:]).max() <= 1 and np.ptp(constant[:32]) <= 1


@pytest.mark.parametrize("levels", [1, 3, 6])
def test_band_gains_are_the_synthesis_energies(levels):
    size = 1024  # as the literals were measured: smaller grids shift the coarse bands' energy
    shapes = wavelet.band_shapes((size, size), levels)
    for b, (gain, shape) in enumerate(zip(wavelet.band_gains(levels), shapes, strict=True)):
        bands = [np.zeros(s, np.int64) for s in shapes]
        bands[b][shape[0] // 2, shape[1] // 2] = 1 << 26
        energy = float(((wavelet.inverse(bands, levels).astype(np.float64) / (1 << 26)) ** 2).sum())
        assert energy == pytest.approx(gain, rel=1e-4)


def test_band_steps_equalise_the_error_each_band_adds():
    """Uniform noise of ±Δ_b/2 in every band gives each band the same pixel-domain error energy per
    coefficient: g_b Δ_b² is the same for every band."""
    levels = 5
    steps = subbands.band_steps(64 * 40, levels)
    energy = np.array(wavelet.band_gains(levels)) * np.array(steps, np.float64) ** 2
    assert np.ptp(energy) / energy.mean() < 2e-3


def _image(shape, top, seed=0):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    edges = (xx + 2 * yy) % 23 < 11
    image = 0.4 + 0.2 * np.sin(xx / 6.0) * np.cos(yy / 4.0) + 0.2 * edges + 0.02 * g.standard_normal(shape)
    return np.clip(np.round(image * top), 0, top).astype(np.int64)


@settings(max_examples=30, deadline=None)
@given(
    height=st.integers(1, 48),
    width=st.integers(1, 48),
    top=st.sampled_from([255, 4095, 65535]),
    grey_step=st.floats(0.3, 40.0),
    seed=st.integers(0, 1000),
)
def test_bands_decode_to_the_encoders_reconstruction(height, width, top, grey_step, seed):
    x = _image((height, width), top, seed)
    encoder = subbands.SubbandEncoder(x, top, TABLES)
    step = max(encoder.smallest_step, round(grey_step * (top + 1) / 256 * (1 << subbands.FRACTION_BITS)))
    writer = Writer()
    reconstruction = encoder.write(step, writer)
    decoded = subbands.read(Reader(writer.bytes()), x.shape, top, step, TABLES)
    assert np.array_equal(decoded, reconstruction)
    assert np.array_equal(reconstruction, encoder.reconstruction(step))
    assert reconstruction.min() >= 0 and reconstruction.max() <= top


def test_error_follows_the_step_and_offsets_lower_each_bands_error():
    x = _image((96, 80), 255)
    encoder = subbands.SubbandEncoder(x, 255, TABLES)
    errors = []
    for grey in (1, 4, 16):
        step = grey << subbands.FRACTION_BITS
        errors.append(np.sqrt(np.mean((encoder.reconstruction(step) - x) ** 2.0)))
        bands, offsets = encoder.quantize(step)
        steps = subbands.band_steps(step, encoder.levels)
        fitted = subbands.dequantize(bands, steps, offsets)
        plain = subbands.dequantize(bands, steps, [0] * len(offsets))
        for c, a, b in zip(encoder.coefficients[1:], fitted[1:], plain[1:], strict=True):
            if grey > 1:  # (at a step of one grey level the integer rounding is as large as the offsets)
                assert np.sum((a - c) ** 2.0) <= np.sum((b - c) ** 2.0)  # the mean offset is least squares
    assert errors[0] < 1.5 and errors[0] < errors[1] < errors[2] < 16


@settings(max_examples=30, deadline=None)
@given(
    height=st.integers(1, 20),
    width=st.integers(1, 20),
    bits=st.sampled_from([1, 8, 12, 15]),
    seed=st.integers(0, 2**32 - 1),
)
def test_ycocg_r_is_exactly_invertible_and_keeps_its_ranges(height, width, bits, seed):
    from recon.codec import colour

    maximum = (1 << bits) - 1
    rgb = np.random.default_rng(seed).integers(0, maximum + 1, size=(height, width, 3))
    planes = colour.forward(rgb, maximum)
    for plane, top in zip(planes, colour.plane_maxima(maximum), strict=True):
        assert plane.min() >= 0 and plane.max() <= top
    assert np.array_equal(colour.inverse(planes, maximum), rgb)
    grey = np.repeat(rgb[..., :1], 3, axis=-1)  # R = G = B: no chroma at all
    assert np.all(colour.forward(grey, maximum)[1] == maximum) and np.all(
        colour.forward(grey, maximum)[2] == maximum
    )


def test_rate_distortion_quantiser_trades_bits_for_error(monkeypatch):
    """λ = 0 is plain rounding; with λ > 0 each |q| is the rounded value, one less or 0, the file is
    smaller at the same step, and the finest step whose file is no larger than plain rounding's has
    the lower error (a crop of a training photograph, the bundled codec's trained tables)."""
    from skimage import color, data

    from recon.codec.model import default_codec

    x = np.round(color.rgb2gray(data.coffee())[100:228, 200:328] * 255).astype(np.int64)
    encoder = subbands.SubbandEncoder(x, 255, default_codec().wavelet_tables)
    step = 8 << subbands.FRACTION_BITS

    def size_and_error(delta: int) -> tuple[int, float]:
        writer = Writer()
        decoded = encoder.write(delta, writer)
        return len(writer.bytes()), float(np.mean((decoded - x) ** 2.0))

    chosen, _ = encoder.quantize(step)
    monkeypatch.setattr(subbands, "RDO_LAMBDA", 0.0)
    rounded, _ = encoder.quantize(step)
    steps = subbands.band_steps(step, encoder.levels)
    for q, c, band_step in zip(rounded[1:], encoder.coefficients[1:], steps[1:], strict=True):
        assert np.array_equal(np.abs(q), np.floor(np.abs(c) / band_step + 0.5))
    for q, r in zip(chosen[1:], rounded[1:], strict=True):
        assert np.all((q == r) | (q == r - np.sign(r)) | (q == 0))
    plain_size, plain_error = size_and_error(step)
    monkeypatch.undo()
    assert size_and_error(step)[0] < plain_size
    finer = step
    while size_and_error(finer - 8)[0] <= plain_size:
        finer -= 8
    assert finer < step and size_and_error(finer)[1] < 0.97 * plain_error
