"""The learned codec: entropy-coding tables, exact integer synthesis, round trips, container safety."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recon.codec import CodecModel, CodecNet, Quality, compress, decompress, load_codec, psnr, save_codec
from recon.codec import codec as codec_module
from recon.codec.entropy import (
    CHUNK,
    PRIOR_WEIGHT,
    TABLE_TOTAL,
    TOKENS,
    AdaptiveContexts,
    Reader,
    Writer,
    laplace_token_probabilities,
    quantize_table,
    tokenize,
    untokenize,
)
from recon.codec.network import ACTIVATION_LIMIT, FW, FixedPointConv, exact_conv
from recon.codec.training import prune_latents
from recon.errors import InputError
from tests.conftest import CUDA


@pytest.fixture(scope="module")
def model() -> CodecModel:
    torch.manual_seed(0)
    net = CodecNet(latent=4, width=8)
    with torch.no_grad():  # a rough predictor: latent 0 carries the mean intensity
        net.analysis[-1].weight.mul_(4)
    return CodecModel.from_net(net)


def test_tokens_round_trip_every_residual():
    r = np.arange(-65535, 65536)
    token, extra, raw = tokenize(r)
    assert token.min() == 0 and token.max() == TOKENS - 1
    assert np.array_equal(untokenize(token, raw), r)
    assert np.all(raw < (1 << extra))


@pytest.mark.parametrize("scale", [0.3, 3.0, 200.0])
def test_laplace_token_probabilities_match_rounded_laplace_samples(scale):
    p = laplace_token_probabilities(scale)
    assert p.sum() == pytest.approx(1.0) and np.all(p >= 0)
    samples = np.round(np.random.default_rng(0).laplace(0, scale, 400_000)).astype(np.int64)
    observed = np.bincount(tokenize(samples)[0], minlength=TOKENS) / samples.size
    assert np.abs(observed - p).max() < 4e-3


def test_quantized_tables_are_positive_and_sum_to_the_total():
    counts = quantize_table(np.array([1e-12, 0.5, 0.5 - 1e-12, 0.0]))
    assert counts.sum() == TABLE_TOTAL and counts.min() >= 1


def test_adaptive_probabilities_are_the_prior_plus_the_counts_so_far():
    prior = np.stack([quantize_table(laplace_token_probabilities(s)) for s in (0.5, 4.0)])
    state = AdaptiveContexts(2)
    assert np.array_equal(state.probabilities(prior, np.array([1, 0])), prior[[1, 0]] / TABLE_TOTAL)
    state.update(np.array([1, 1, 1, 0]), np.array([7, 7, 3, 0]))
    p = state.probabilities(prior, np.array([1]))[0]
    expected = (PRIOR_WEIGHT * prior[1, 7] + 2 * TABLE_TOTAL) / (TABLE_TOTAL * (PRIOR_WEIGHT + 3))
    assert p[7] == pytest.approx(expected, rel=1e-15) and p.sum() == pytest.approx(1.0, rel=1e-15)


def test_adaptive_chunks_tile_the_pass_and_grow_with_the_counts():
    state = AdaptiveContexts(1)
    sizes = []
    for part in state.chunks(40 * CHUNK):
        sizes.append(part.stop - part.start)
        state.update(np.zeros(sizes[-1], np.int64), np.zeros(sizes[-1], np.int64))
    assert sum(sizes) == 40 * CHUNK and sizes[0] == CHUNK and max(sizes) > 2 * CHUNK
    assert len(sizes) < 40


def test_adaptive_tokens_round_trip_and_cost_less_when_the_prior_is_wrong():
    rng = np.random.default_rng(0)
    contexts = rng.integers(0, 3, 5000)
    token, _, raw = tokenize(np.round(rng.laplace(0, 40.0, 5000)).astype(np.int64))
    wrong = np.stack([quantize_table(laplace_token_probabilities(0.5))] * 3)  # expects tiny residuals
    sizes = []
    for adaptive in (False, True):
        writer = Writer()
        if adaptive:
            writer.adaptive_tokens(token, raw, contexts, wrong, AdaptiveContexts(3))
        else:
            writer.tokens(token, raw, contexts, wrong)
        sizes.append(len(writer.bytes()))
    reader = Reader(writer.bytes())
    back_token, back_raw = reader.adaptive_tokens(contexts, wrong, AdaptiveContexts(3))
    assert np.array_equal(back_token, token) and np.array_equal(back_raw, raw)
    assert sizes[1] < 0.8 * sizes[0]


def test_raw_bits_in_one_call_are_the_stream_of_one_call_per_length():
    """The format: after the tokens, the raw bits of the pixels with 1, 2, … bits, each group in
    pixel order as uniform symbols (the writer now sends them in one call)."""
    rng = np.random.default_rng(1)
    token, extra, raw = tokenize(np.round(rng.laplace(0, 300.0, 3000)).astype(np.int64))
    contexts = np.zeros(token.size, np.int64)
    tables = np.stack([quantize_table(laplace_token_probabilities(300.0))])
    batched, reference = Writer(), Writer()
    batched.tokens(token, raw, contexts, tables)
    reference.categorical(token, tables[0])
    for bits in range(1, int(extra.max()) + 1):
        reference.uniform(raw[extra == bits], bits)
    assert len(np.unique(extra)) > 5 and batched.bytes() == reference.bytes()
    back_token, back_raw = Reader(batched.bytes()).tokens(contexts, tables)
    assert np.array_equal(back_token, token) and np.array_equal(back_raw, raw)


@pytest.mark.parametrize(
    ("channels", "a_bits", "w_bits"),
    [(8, 6, 6), (48, 15, 13), (3, 24, 16)],  # one float32 convolution, four float32 pieces, float64
)
def test_fixed_point_convolution_is_exact_integer_arithmetic(channels, a_bits, w_bits):
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-(1 << a_bits), 1 << a_bits, (1, channels, 7, 6), generator=g).double()
    w = torch.randint(-(1 << w_bits), 1 << w_bits, (2, channels, 3, 3), generator=g).double()
    b = torch.randint(-(1 << 30), 1 << 30, (2,), generator=g).double()
    out = exact_conv(a, w, b)
    ai, wi, bi = a.long().numpy(), w.long().numpy(), b.long().numpy()
    padded = np.pad(ai[0], ((0, 0), (1, 1), (1, 1))).astype(object)  # Python integers: no overflow
    ref = np.zeros((2, 7, 6), np.int64)
    for o in range(2):
        for i in range(7):
            for j in range(6):
                ref[o, i, j] = int((padded[:, i : i + 3, j : j + 3] * wi[o].astype(object)).sum()) + int(
                    bi[o]
                )
    limit = int(ACTIVATION_LIMIT)
    assert np.array_equal(out[0].long().numpy(), np.clip(np.floor_divide(ref, 1 << FW), -limit, limit))


@pytest.mark.parametrize(("a_bits", "w_bits"), [(8, 8), (15, 13), (24, 16)])  # the three paths
def test_upsampling_folded_into_the_convolution_is_exact(a_bits, w_bits):
    g = torch.Generator().manual_seed(1)
    a = torch.randint(-(1 << a_bits), 1 << a_bits, (2, 5, 4, 7), generator=g).double()
    w = torch.randint(-(1 << w_bits), 1 << w_bits, (3, 5, 3, 3), generator=g).double()
    b = torch.randint(-(1 << 20), 1 << 20, (3,), generator=g).double()
    folded = FixedPointConv(w, b, upsample=True)(a).double()
    assert folded.shape == (2, 3, 8, 14)
    assert torch.equal(folded, exact_conv(F.interpolate(a, scale_factor=2, mode="nearest"), w, b))


def test_latent_candidate_budget_extrapolates_the_passes_coded_so_far():
    reference = {0: 50, 1: 100, 2: 100, 3: 100}  # the reference's bits per pass (depth 0: passes 1-3)
    budget = codec_module._Budget(reference, depth=0, limit=306.0)
    budget(-1, 300)  # latents alone within the limit: nothing to compare yet
    budget(0, 301)  # the anchors: still nothing
    with pytest.raises(codec_module._OverBudget):
        budget(1, 401)  # pass 1 as dear as the reference's: 401 + 0.98 · 200 > 306
    cheap = codec_module._Budget(reference, depth=0, limit=306.0)
    cheap(-1, 100)
    cheap(1, 130)  # pass 1 cost 30 of the reference's 100: 130 + (0.3 - 0.02) · 200 = 186
    cheap(2, 160)  # 160 + 0.28 · 100 = 188
    with pytest.raises(codec_module._OverBudget):
        codec_module._Budget(reference, depth=0, limit=306.0)(-1, 307)


def test_default_encoder_writes_the_same_file_without_the_latent_budget(model, monkeypatch):
    x = np.random.default_rng(3).integers(0, 4096, (37, 45)).astype(np.uint16)
    stopped = []

    def spy(self, k, written):
        try:
            unbounded(self, k, written)
        except codec_module._OverBudget:
            stopped.append(k)
            raise

    unbounded = codec_module._Budget.__call__
    monkeypatch.setattr(codec_module._Budget, "__call__", spy)
    with_budget = compress(x, model)
    monkeypatch.setattr(codec_module._Budget, "__call__", lambda self, k, written: None)
    assert stopped and compress(x, model) == with_budget


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    wide=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_lossless_round_trip_is_bit_exact(model, height, width, wide, seed):
    rng = np.random.default_rng(seed)
    dtype, top = (np.uint16, int(rng.integers(1, 65536))) if wide else (np.uint8, 255)
    x = rng.integers(0, top + 1, size=(height, width)).astype(dtype)
    y = decompress(compress(x, model), model)
    assert y.dtype == x.dtype and np.array_equal(x, y)


def _smooth(shape, top, seed=0):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = 0.5 + 0.3 * np.sin(xx / 7.0) * np.cos(yy / 5.0) + 0.02 * g.standard_normal(shape)
    return np.clip(np.round(image * top), 0, top)


def test_stacks_and_colour_images_round_trip(model):
    stack = np.stack([_smooth((33, 20), 4095, s) for s in range(3)]).astype(np.uint16)
    assert np.array_equal(decompress(compress(stack, model), model), stack)
    colour = np.stack([_smooth((24, 30), 255, s) for s in range(3)], -1).astype(np.uint8)
    assert np.array_equal(decompress(compress(colour, model), model), colour)


def test_a_stack_codes_its_slices_with_the_counts_carried_over(model):
    from recon.codec.container import read_header

    stack = np.stack([_smooth((48, 48), 4095, s) for s in range(6)]).astype(np.uint16)
    together = compress(stack, model, fast=True)
    alone = [compress(x, model, fast=True) for x in stack]
    assert np.array_equal(decompress(together, model), stack)
    payload_alone = sum(len(read_header(a)[1][0]) for a in alone)
    payload_together = sum(len(p) for p in read_header(together)[1])
    assert payload_together < 0.995 * payload_alone  # coding each slice from scratch would give 1.0
    lossy = compress(stack, model, Quality(delta=5), fast=True)  # and near-lossless stacks decode too
    assert np.abs(decompress(lossy, model).astype(int) - stack).max() <= 5


def test_level_delta_halves_towards_the_coarse_grid():
    from recon.codec.polyphase import level_delta

    assert [level_delta(20, 2, n) for n in range(7)] == [20, 20, 10, 10, 5, 5, 2]
    assert [level_delta(20, 0, n) for n in range(3)] == [20, 20, 20]


def test_halved_delta_bounds_each_level_and_rate_targets_keep_the_better_choice(model, monkeypatch):
    import recon.codec.codec as codec_module
    from recon.codec.codec import _SliceHeader
    from recon.codec.container import read_header

    x = _smooth((128, 96), 255, 2).astype(np.uint8)  # levels 0-4: stride 16 is coded at level 4
    monkeypatch.setattr(codec_module, "HALVINGS", (2,))
    monkeypatch.setattr(codec_module, "_transform_coded", lambda *a: None)  # polyphase passes only
    data = compress(x, model, Quality(psnr=32.0), fast=True)
    head, _ = _SliceHeader.read(read_header(data)[1][0], 255)
    error = np.abs(decompress(data, model).astype(np.int64) - x)
    assert head.halving == 2 and error.max() <= head.delta and psnr(x, x - error, 255) >= 32.0
    assert error[::4, ::4].max() <= head.delta >> 1 and error[::16, ::16].max() <= head.delta >> 2
    budget = 0.6 * 8 * len(data) / x.size
    quality = {}
    for halvings in ((0,), (0, 2)):
        monkeypatch.setattr(codec_module, "HALVINGS", halvings)
        coded = compress(x, model, Quality(bpp=budget), fast=True)
        assert 8 * len(coded) / x.size <= budget
        quality[halvings] = psnr(x, decompress(coded, model), 255)
    assert quality[(0, 2)] >= quality[(0,)]


@pytest.mark.parametrize("target", [30.0, 45.0, 60.0])
def test_lossy_mode_meets_its_psnr_target(model, target):
    x = _smooth((48, 40), 4095).astype(np.uint16)
    y = decompress(compress(x, model, Quality(psnr=target)), model)
    assert psnr(x, y, 4095) >= target


def test_near_lossless_bound_and_rate_target(model):
    x = _smooth((48, 40), 4095).astype(np.uint16)
    for delta in (1, 7, 40):
        y = decompress(compress(x, model, Quality(delta=delta)), model)
        assert np.abs(x.astype(np.int64) - y).max() <= delta
    lossless = len(compress(x, model)) * 8 / x.size
    budget = lossless / 2
    data = compress(x, model, Quality(bpp=budget))
    assert len(data) * 8 / x.size <= budget
    assert psnr(x, decompress(data, model), 4095) > 20
    with pytest.raises(InputError):
        Quality(psnr=40.0, bpp=1.0)


@pytest.mark.parametrize(
    ("quality", "colour"),
    [(Quality(lossless=True), False), (Quality(psnr=30.0), False), (Quality(psnr=30.0), True)],
)  # polyphase, transform, YCoCg planes
def test_every_corruption_and_truncation_is_a_clean_error(model, quality, colour):
    image = _colour((6, 7)) if colour else _smooth((9, 11), 255)
    data = compress(image.astype(np.uint8), model, quality)
    for position in range(len(data)):
        broken = bytearray(data)
        broken[position] ^= 0x5A
        with pytest.raises(InputError):
            decompress(bytes(broken), model)
    for length in range(len(data)):
        with pytest.raises(InputError):
            decompress(data[:length], model)
    with pytest.raises(InputError):
        decompress(data + b"\0", model)


def test_low_rates_are_transform_coded_and_beat_the_polyphase_passes(model, monkeypatch):
    from recon.codec.codec import _SliceHeader
    from recon.codec.container import read_header

    x = _smooth((96, 128), 255, 4).astype(np.uint8)
    data = compress(x, model, Quality(bpp=0.5), fast=True)
    head, _ = _SliceHeader.read(read_header(data)[1][0], 255)
    transformed = psnr(x, decompress(data, model), 255)
    assert head.wavelet and 8 * len(data) / x.size <= 0.5
    monkeypatch.setattr(codec_module, "_transform_coded", lambda *a: None)
    polyphase = compress(x, model, Quality(bpp=0.5), fast=True)
    assert 8 * len(polyphase) / x.size <= 0.5 and transformed > psnr(x, decompress(polyphase, model), 255) + 1
    y = decompress(compress(x, model, Quality(psnr=36.0), fast=True), model)
    assert psnr(x, y, 255) >= 36.0


def _colour(shape, seed=0):
    """An RGB image whose channels share their structure, as photographs' do."""
    base = _smooth(shape, 200, seed)
    tint = np.random.default_rng(seed).integers(0, 40, 3)
    return np.clip(np.stack([base + tint[c] + 8 * (c - 1) * np.sin(base / 30) for c in range(3)], -1), 0, 255)


def test_rgb_images_are_coded_as_ycocg_planes_when_that_is_better(model):
    from recon.codec.container import read_header

    x = _colour((64, 80)).astype(np.uint8)
    lossless = compress(x, model, fast=True)
    assert read_header(lossless)[0].layout == 3 and np.array_equal(decompress(lossless, model), x)
    channels = b"".join(compress(x[..., c], model, fast=True) for c in range(3))
    assert len(lossless) < 0.9 * len(channels)
    budget = 0.5
    lossy = compress(x, model, Quality(bpp=budget), fast=True)
    y = decompress(lossy, model)
    assert read_header(lossy)[0].layout == 3 and y.shape == x.shape and y.dtype == x.dtype
    assert 8 * len(lossy) <= budget * x.size
    channels = [compress(x[..., c], model, Quality(bpp=budget), fast=True) for c in range(3)]
    per_channel = np.stack([decompress(c, model) for c in channels], -1)
    assert psnr(x, y, 255) > psnr(x, per_channel, 255) + 1
    assert psnr(x, decompress(compress(x, model, Quality(psnr=38.0), fast=True), model), 255) >= 38.0
    ycocg = read_header(lossy)[0]  # the YCoCg file at the coarsest steps: the chroma steps stay in range
    coarse, _ = codec_module._transform_colour(ycocg, x, model, Quality(psnr=12.0), True)
    assert decompress(coarse, model).shape == x.shape
    bounded = compress(x, model, Quality(delta=4), fast=True)  # a δ bound holds per RGB channel
    assert read_header(bounded)[0].layout == 2
    assert np.abs(decompress(bounded, model).astype(int) - x).max() <= 4


def test_colour_headers_are_validated(model):
    from recon.codec.container import Header

    with pytest.raises(InputError, match="YCoCg"):
        Header(np.dtype(np.uint8), 8, 3, 4, 8, 8, model.identity)
    with pytest.raises(InputError, match="YCoCg"):
        Header(np.dtype(np.uint16), 16, 3, 3, 8, 8, model.identity)


def test_transform_slice_headers_are_validated(model):
    from recon.codec.codec import _SliceHeader
    from recon.codec.subbands import max_step

    good = _SliceHeader(640, 0, 0, False, 0, 0, 0, wavelet=True)
    assert _SliceHeader.read(good.pack(), 255)[0] == good
    for bad in (
        _SliceHeader(640, 0, 2, False, 0, 0, 0, wavelet=True),  # a polyphase depth
        _SliceHeader(640, 0, 0, False, 2, 0, 0, wavelet=True),  # a δ halving
        _SliceHeader(640, 0, 0, True, 0, 0, 0, wavelet=True),  # latents
        _SliceHeader(max_step(255) + 1, 0, 0, False, 0, 0, 0, wavelet=True),  # beyond the range
        _SliceHeader(0, 0, 0, False, 0, 0, 0, wavelet=True),
    ):
        with pytest.raises(InputError, match="corrupt"):
            _SliceHeader.read(bad.pack(), 255)


def test_header_fields_are_variable_length_integers(model):
    from recon.codec.container import pack_varint, read_header, read_varint

    for value in (0, 1, 127, 128, 16383, 16384, 2**32 - 1):
        encoded = pack_varint(value)
        assert read_varint(b"\0" + encoded, 1) == (value, 1 + len(encoded))
        assert len(encoded) == max(1, -(-value.bit_length() // 7))
    with pytest.raises(InputError, match="too long"):
        read_varint(pack_varint(2**32), 0)  # more than the field's 32 bits
    x = _smooth((128, 128), 4095, 1).astype(np.uint16)
    data = compress(x, model, fast=True)
    header, payloads = read_header(data)
    length_field = len(pack_varint(len(payloads[0])))
    # magic, version, descriptor, bits 7 | sides 1 + 2 + 2 | identity 16 | entry | header CRC 4
    assert header.shape == x.shape and len(data) - len(payloads[0]) == 7 + 5 + 16 + length_field + 4 + 4


def test_hostile_header_sizes_are_refused_before_allocating(model):
    import struct
    import zlib

    from recon.codec.container import _FIXED, MAGIC, VERSION, pack_varint

    uint16_stack = 1 | 1 << 1  # descriptor: uint16, layout (S, H, W)
    fixed = _FIXED.pack(MAGIC, VERSION, uint16_stack, 16) + pack_varint(60000) * 3 + model.identity
    table = (pack_varint(0) + struct.pack("<I", zlib.crc32(b""))) * 4
    with pytest.raises(InputError, match=r"absurd|too large|truncated"):
        decompress(fixed + table + struct.pack("<I", zlib.crc32(fixed + table)), model)
    endless = _FIXED.pack(MAGIC, VERSION, 0, 8) + b"\xff" * 40  # a varint that never ends
    with pytest.raises(InputError, match="too long"):
        decompress(endless, model)


def test_files_from_another_codec_are_refused(model):
    other = CodecModel.from_net(CodecNet(latent=3, width=8))
    with pytest.raises(InputError, match="written by codec"):
        decompress(compress(np.zeros((8, 8), np.uint8), model), other)


def test_saved_codec_decodes_in_another_process(model, tmp_path):
    save_codec(model, tmp_path / "codec")
    loaded = load_codec(tmp_path / "codec")
    assert loaded.identity == model.identity
    x = _smooth((37, 29), 4095, 3).astype(np.uint16)
    (tmp_path / "x.rcz").write_bytes(compress(x, loaded))
    code = (
        "import numpy as np, sys; from recon.codec import load_codec, decompress; "
        f"m = load_codec(r'{tmp_path / 'codec'}'); "
        f"sys.stdout.buffer.write(decompress(open(r'{tmp_path / 'x.rcz'}', 'rb').read(), m).tobytes())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    assert out == x.tobytes()


def test_tampered_codec_model_is_refused(model, tmp_path):
    import json

    save_codec(model, tmp_path / "codec")
    document = json.loads((tmp_path / "codec.json").read_text())
    document["decoder"]["width"] = 9
    (tmp_path / "codec.json").write_text(json.dumps(document))
    with pytest.raises(InputError):
        load_codec(tmp_path / "codec")


def test_pruning_switched_off_latents_keeps_the_outputs():
    torch.manual_seed(1)
    net = CodecNet(latent=6, width=8)
    with torch.no_grad():
        net.analysis[-1].weight[[1, 4]] = 0
    small = prune_latents(net)
    x = torch.rand(2, 1, 16, 20)
    assert small.latent == 4
    y, y_small = net.analysis(x), small.analysis(x)
    torch.testing.assert_close(y[:, [0, 2, 3, 5]], y_small)
    torch.testing.assert_close(net.synthesize(torch.round(y))[0], small.synthesize(torch.round(y_small))[0])


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_encoded_on_cuda_decodes_on_cpu(model):
    x = _smooth((64, 48), 4095).astype(np.uint16)
    model.net.cuda()
    try:
        data = compress(x, model)
    finally:
        model.net.cpu()
    assert np.array_equal(decompress(data, model), x)
    assert math.isfinite(psnr(x, x + 1, 4095))


@pytest.fixture
def codec_path(model, tmp_path):
    save_codec(model, tmp_path / "codec")
    return tmp_path / "codec"


def test_cli_round_trips_every_file_type(cli, codec_path, tmp_path):
    import h5py
    import imagecodecs
    import pydicom

    image16 = _smooth((40, 36), 4095).astype(np.uint16)
    image8 = _smooth((30, 26), 255).astype(np.uint8)
    floats = (_smooth((24, 20), 4095) / 4095 * 3e-4).astype(np.float32)
    np.save(tmp_path / "a.npy", image16)
    (tmp_path / "b.png").write_bytes(imagecodecs.png_encode(image16))
    (tmp_path / "c.tif").write_bytes(imagecodecs.tiff_encode(image8))
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("reconstruction_rss", data=np.stack([floats, floats[::-1]]))
    from recon.codec.files import write_array

    write_array(tmp_path / "e.dcm", image16, "dicom")
    for name in ("a.npy", "b.png", "c.tif", "d.h5", "e.dcm"):
        r = cli("compress", tmp_path / name, "--out", tmp_path / f"{name}.rcz", "--model", codec_path)
        assert r.code == 0, r.err
        assert r.json()["bpp"] > 0
    r = cli("decompress", tmp_path / "a.npy.rcz", "--out", tmp_path / "a2.npy", "--model", codec_path)
    assert r.code == 0 and np.array_equal(np.load(tmp_path / "a2.npy"), image16)
    cli("decompress", tmp_path / "b.png.rcz", "--out", tmp_path / "b2.png", "--model", codec_path)
    assert np.array_equal(imagecodecs.imread(tmp_path / "b2.png"), image16)
    cli("decompress", tmp_path / "c.tif.rcz", "--out", tmp_path / "c2.tif", "--model", codec_path)
    assert np.array_equal(imagecodecs.imread(tmp_path / "c2.tif"), image8)
    cli("decompress", tmp_path / "e.dcm.rcz", "--out", tmp_path / "e2.dcm", "--model", codec_path)
    assert np.array_equal(pydicom.dcmread(tmp_path / "e2.dcm").pixel_array, image16)
    cli("decompress", tmp_path / "d.h5.rcz", "--out", tmp_path / "d2.h5", "--model", codec_path)
    with h5py.File(tmp_path / "d2.h5") as f:
        back = f["reconstruction_rss"][()]
    scale = 3e-4 / 65535
    assert back.dtype == np.float32 and np.abs(back - np.stack([floats, floats[::-1]])).max() <= scale


def test_cli_folders_lossy_targets_and_bad_input(cli, codec_path, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        np.save(src / f"s{i}.npy", _smooth((20, 24), 4095, i).astype(np.uint16))
    r = cli("compress", src, "--out", tmp_path / "packed", "--psnr", "40", "--model", codec_path)
    assert r.code == 0 and len(list((tmp_path / "packed").glob("*.rcz"))) == 3
    r = cli("decompress", tmp_path / "packed", "--out", tmp_path / "unpacked", "--model", codec_path)
    assert r.code == 0
    for i in range(3):
        back = np.load(tmp_path / "unpacked" / f"s{i}.npy")
        assert psnr(np.load(src / f"s{i}.npy"), back, 4095) >= 40
    (tmp_path / "junk.rcz").write_bytes(b"\x89RCZ" + b"\0" * 40)
    bad = [
        ("decompress", tmp_path / "junk.rcz", "--out", tmp_path / "x.npy"),
        ("compress", tmp_path / "missing.npy", "--out", tmp_path / "x.rcz"),
        ("compress", src / "s0.npy", "--out", tmp_path / "x.rcz", "--psnr", "nan"),
        ("compress", src / "s0.npy", "--out", tmp_path / "x.bmp.rcz", "--model", tmp_path / "nope"),
    ]
    np.save(tmp_path / "nan.npy", np.full((4, 4), np.nan, np.float32))
    bad.append(("compress", tmp_path / "nan.npy", "--out", tmp_path / "x.rcz"))
    for args in bad:
        r = cli(*args, *(() if "--model" in args else ("--model", codec_path)))
        assert r.code == 2 and "Traceback" not in r.err and r.err.startswith("recon: error")
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "x.rcz").exists()


def test_bundled_codec_is_lossless_on_a_real_mr_slice_and_beats_zlib():
    import zlib

    from recon.codec.model import default_codec
    from recon.datasets.training import mr_slices

    codec = default_codec()
    assert codec.meta["latent_active"] < codec.meta["latent_super"]  # group sparsity removed channels
    x = np.round(mr_slices("test")[-1] * 4095).astype(np.uint16)
    data = compress(x, codec)
    assert np.array_equal(decompress(data, codec), x)
    assert len(data) < len(zlib.compress(x.tobytes(), 9))


def test_few_distinct_values_are_coded_as_ranks(model):
    from recon.codec.codec import _SliceHeader
    from recon.codec.container import read_header

    x = (_smooth((40, 44), 60) * 67).astype(np.uint16)  # 61 distinct values spread over 12 bits
    x[0, 0] = 65535  # and one far away: the palette's gaps need all 16 bits
    data = compress(x, model)
    assert np.array_equal(decompress(data, model), x)
    _, payloads = read_header(data)
    assert _SliceHeader.read(payloads[0], 65535)[0].palette_size == np.unique(x).size  # palette used
    lossy = compress(x, model, Quality(delta=20))  # lossless ranks cost less than δ = 20 on 12 bits
    assert len(lossy) == len(data) and np.array_equal(decompress(lossy, model), x)


def test_fast_encoding_skips_the_autoencoder_and_decodes_with_the_same_codec(model, monkeypatch):
    import recon.codec.codec as codec_module

    x = _smooth((30, 34), 4095).astype(np.uint16)
    monkeypatch.setattr(codec_module, "_latents", lambda *a: pytest.fail("autoencoder ran"))
    assert np.array_equal(decompress(compress(x, model, fast=True), model), x)
    assert psnr(x, decompress(compress(x, model, Quality(psnr=50.0), fast=True), model), 4095) >= 50
    assert len(compress(x, model, Quality(bpp=3.0), fast=True)) * 8 / x.size <= 3.0
    with pytest.raises(InputError, match="latent-only"):
        compress(x, model, Quality(latent_only=True), fast=True)


@pytest.mark.slow
@pytest.mark.parametrize("residual_rate", [True, False])
def test_training_a_small_codec_prunes_latents_and_round_trips(residual_rate):
    from recon.codec.training import train_codec

    model, history = train_codec(
        steps=6,
        latent=8,
        width=8,
        start_channels=2,
        lam=0.5,
        distortion=0.0 if residual_rate else 100.0,
        residual_rate=residual_rate,
        batch=2,
        progress=False,
    )
    assert model.net.latent == history["active_latents"][-1] <= 8
    assert model.latent_tables.shape[0] == model.net.latent
    x = _smooth((33, 35), 4095).astype(np.uint16)
    assert np.array_equal(decompress(compress(x, model), model), x)


def test_latent_candidates_are_written_when_smaller_and_skipped_when_far_behind(monkeypatch):
    from recon.codec.codec import _Slice, _SliceHeader
    from recon.codec.container import read_header
    from recon.codec.model import default_codec

    bundled = default_codec()
    x = _smooth((64, 48), 255).astype(np.uint8)
    predicted = decompress(compress(x, bundled, Quality(latent_only=True)), bundled)  # the autoencoder's
    data = compress(predicted, bundled)  # own output: its latents predict it well
    head, _ = _SliceHeader.read(read_header(data)[1][0], 255)
    assert head.latents and len(data) < len(compress(predicted, bundled, fast=True))
    assert np.array_equal(decompress(data, bundled), predicted)
    tried, code = [], _Slice._code
    monkeypatch.setattr(_Slice, "_code", lambda self, *a: tried.append(a[:4]) or code(self, *a))
    data = compress(x, bundled)  # noise on a sinusoid: the latents do not pay
    assert [depth for _, depth, latents, _ in tried if latents] == [3]  # depths 0-2 were not coded
    assert len(data) == len(compress(x, bundled, fast=True))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    colour=st.booleans(),
    target=st.sampled_from([Quality(bpp=0.3), Quality(bpp=2.0), Quality(psnr=25.0), Quality(psnr=45.0)]),
    seed=st.integers(0, 1000),
)
def test_lossy_targets_hold_at_any_size(model, height, width, colour, target, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(height, width, 3) if colour else (height, width)).astype(np.uint8)
    if colour and height <= 4:
        x = x[..., 0]  # (H, W, C) needs more than 4 rows to read as colour
    data = compress(x, model, target, fast=True)
    y = decompress(data, model)  # degenerate sizes (one row, 1×1) too: every path decodes
    assert y.shape == x.shape and y.dtype == x.dtype
    if target.psnr is not None:  # (a rate target may be below the header's own size here)
        assert psnr(x, y, 255) >= target.psnr


def test_codec_commands_do_not_import_deepinv(tmp_path):
    """``recon compress`` / ``decompress`` round-trip without importing deepinv (recon's operator
    functions are imported on first use), which saves its import time on every codec call."""
    x = _smooth((40, 33), 4095, 5).astype(np.uint16)
    np.save(tmp_path / "x.npy", x)
    x_npy, x_rcz, y_npy = (str(tmp_path / name) for name in ("x.npy", "x.rcz", "y.npy"))
    code = (
        "import sys; from recon.cli import main; "
        f"assert main(['compress', {x_npy!r}, '--out', {x_rcz!r}, '--fast']) == 0; "
        f"assert main(['decompress', {x_rcz!r}, '--out', {y_npy!r}]) == 0; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('deepinv', 'torchvision')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    assert np.array_equal(np.load(tmp_path / "y.npy"), x)
    import recon

    assert recon.build_operator is recon.physics.build_operator  # the lazy name is the real function
