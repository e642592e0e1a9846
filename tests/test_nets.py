"""GraphNet: execution, validation, FLOPs, exact compaction, safetensors+JSON round trips."""

from __future__ import annotations

import json

import pytest
import torch

from recon import InputError
from recon.nets import (
    GraphNet,
    align_channels,
    channel_report,
    compact,
    compact_flop_fraction,
    compact_weight_fraction,
    drop_thin_branches,
    flops,
    fold_into_convs,
    gated_autoencoder,
    gated_branches,
    gated_unet,
    inference_network,
    load_graph,
    save_graph,
    stacked_forward,
)
from recon.nets.align import aligned_widths
from recon.nets.graph import FORMAT, _channels_last, dead_after, node_channels
from recon.sparsity import density


def _sparsify(net: GraphNet, seed: int, rows: float = 0.5, gates: float = 0.3) -> GraphNet:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, conv in net.convs.items():
            conv.weight.normal_(0, 0.3, generator=g)
            conv.bias.uniform_(-0.2, 0.3, generator=g)
            if name != "head":
                conv.weight[torch.rand(conv.weight.shape[0], generator=g) < rows] = 0
        for p in net.gates.values():
            p.fill_(
                0.0
                if float(torch.rand((), generator=g)) < gates
                else float(torch.rand((), generator=g)) + 0.2
            )
    return net


@pytest.mark.parametrize("size", [(32, 32), (37, 45)])
def test_unet_keeps_the_image_size(size):
    net = GraphNet(gated_unet(widths=(4, 8, 16)))
    assert net(torch.randn(2, 1, *size)).shape == (2, 1, *size)


def test_autoencoder_shapes_and_latent():
    spec = gated_autoencoder(widths=(4, 8), latent=6)
    net = GraphNet(spec)
    assert net(torch.randn(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    assert net.convs["latent"].out_channels == 6 and spec["meta"]["latent"] == "latent"


def test_flops_closed_form():
    spec = {
        "format": FORMAT,
        "in_channels": 3,
        "nodes": [{"name": "c", "op": "conv", "inputs": ["input"], "out": 5, "kernel": 3, "stride": 1}],
        "output": "c",
    }
    assert flops(spec, (10, 12)) == (2 * 3 * 9 + 1) * 5 * 10 * 12
    strided = {**spec, "nodes": [{**spec["nodes"][0], "stride": 2}]}
    assert flops(strided, (10, 12)) == (2 * 3 * 9 + 1) * 5 * 5 * 6


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda s: s.update(format="other"), "format"),
        (lambda s: s["nodes"][0].update(inputs=["nowhere"]), "undefined node"),
        (lambda s: s["nodes"][0].update(op="pool"), "unknown op"),
        (lambda s: s["nodes"].append(dict(s["nodes"][0])), "repeated"),
        (lambda s: s.update(output="nothing"), "output"),
        (lambda s: s["nodes"][0].update(gates=["missing"]), "undefined gate"),
    ],
)
def test_spec_validation(change, message):
    spec = {
        "format": FORMAT,
        "in_channels": 1,
        "gates": {},
        "nodes": [{"name": "c", "op": "conv", "inputs": ["input"], "out": 2}],
        "output": "c",
    }
    change(spec)
    with pytest.raises(InputError, match=message):
        GraphNet(spec)


def test_pixel_unshuffle_runs_the_graph_on_pixel_blocks():
    """With ``pixel_unshuffle`` f the net is shuffle(graph(unshuffle(x))) on the reflect-padded image,
    cropped back; its FLOPs are the graph's on the f-times smaller input."""
    spec = gated_unet(2, 2, widths=(4, 8), unshuffle=2)
    assert spec["in_channels"] == 2 and spec["pixel_unshuffle"] == 2
    net = _sparsify(GraphNet(spec), seed=1).double()
    plain = GraphNet({k: v for k, v in spec.items() if k != "pixel_unshuffle"} | {"in_channels": 8})
    plain.load_state_dict(net.state_dict())
    plain.double()
    x = torch.randn(3, 2, 21, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (0, 0, 0, 1), mode="reflect")
    expected = torch.nn.functional.pixel_shuffle(plain(torch.nn.functional.pixel_unshuffle(padded, 2)), 2)
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected[..., :21, :], rtol=0, atol=0)
    assert flops(spec, (21, 16)) == flops(plain.spec, (11, 8))
    for bad in (0, 9, 1.5, True):
        with pytest.raises(InputError, match="unshuffle"):
            GraphNet({**spec, "pixel_unshuffle": bad})


def _family(family: str, widths: tuple[int, ...]) -> dict:
    if family == "autoencoder":
        return gated_autoencoder(widths=widths[:2], latent=10)
    return gated_unet(widths=widths, blocks=2, unshuffle=2 if family == "unet-unshuffled" else 1)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("family", ["unet", "autoencoder", "unet-unshuffled"])
def test_compaction_preserves_outputs_and_cuts_flops(seed, family):
    net = _sparsify(GraphNet(_family(family, (6, 12, 24))), seed)
    size = (31, 34) if family == "unet-unshuffled" else (32, 32)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        net = net.to(dtype)
        small = compact(net)
        assert next(small.parameters()).dtype == dtype
        x = torch.randn(2, 1, *size, dtype=dtype, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            a, b = net(x), small(x)
            last = small.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
            small.to(memory_format=torch.contiguous_format)
        for out in (b, last):  # channel placement differs by memory layout (plane copies / a product)
            assert float((a - out).abs().max()) <= tol * max(1.0, float(a.abs().max()))
    assert flops(small.spec, (32, 32)) < flops(net.spec, (32, 32))
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in net.parameters())


def test_compact_fractions_count_only_what_compaction_keeps():
    """conv a (1→4, 3×3) then conv b (4→2, 3×3): with a's channel 0 switched off, b's kernels on that
    channel are non-zero but read a constant, so compaction folds them into b's bias."""
    spec = {
        "format": FORMAT,
        "in_channels": 1,
        "gates": {},
        "nodes": [
            {"name": "a", "op": "conv", "inputs": ["input"], "out": 4},
            {"name": "b", "op": "conv", "inputs": ["a"], "out": 2, "act": "none"},
        ],
        "output": "b",
    }
    net = GraphNet(spec)
    with torch.no_grad():
        for conv in net.convs.values():
            conv.weight.fill_(0.5)
        net.convs["a"].weight[0] = 0
    total = 4 * 9 + 2 * 4 * 9
    assert density(net) == (3 * 9 + 2 * 4 * 9) / total  # the non-zero fraction counts b's dead column
    assert compact_weight_fraction(net) == (3 * 9 + 2 * 3 * 9) / total
    conv_flops = (2 * 9 + 1) * 3 + (2 * 3 * 9 + 1) * 2  # per pixel, after compaction
    assert compact_flop_fraction(net, (8, 8)) == conv_flops / ((2 * 9 + 1) * 4 + (2 * 4 * 9 + 1) * 2)
    dense = GraphNet(gated_unet(widths=(4, 8)))
    with torch.no_grad():
        for gate in dense.gates.values():
            gate.fill_(1.0)
    assert compact_weight_fraction(dense) == 1.0 and compact_flop_fraction(dense) == 1.0


@pytest.mark.parametrize("family", ["unet", "autoencoder", "unet-unshuffled"])
@pytest.mark.parametrize("subset", ["all", "last", "gates"])
@pytest.mark.parametrize("per_sample_input", [False, True])
def test_stacked_forward_matches_one_pass_per_weight_set(family, subset, per_sample_input):
    net = compact(
        _sparsify(GraphNet(_family(family, (4, 8))), seed=3)
    ).double()  # compacted: take/to/offset/const nodes
    params = {n: p.detach() for n, p in net.named_parameters()}
    names = {
        "all": list(params),
        "last": [n for n in params if n.startswith(f"convs.{net.conv_nodes()[-1]['name']}.")],
        "gates": [n for n in params if n.startswith("gates.")] or list(params)[:2],
    }[subset]
    k, g = 3, torch.Generator().manual_seed(0)
    stacked = {
        n: params[n] + 0.1 * torch.randn((k, *params[n].shape), generator=g, dtype=torch.float64)
        for n in names
    }
    size = (15, 18) if family == "unet-unshuffled" else (16, 16)
    shape = (k, 2, 1, *size) if per_sample_input else (2, 1, *size)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = stacked_forward(net, {**params, **stacked}, set(stacked), x, k)
        for i in range(k):
            net.load_state_dict({n: t[i] for n, t in stacked.items()}, strict=False)
            torch.testing.assert_close(out[i], net(x[i] if per_sample_input else x), rtol=1e-10, atol=1e-12)


def test_closed_blocks_and_dead_units_disappear():
    net = _sparsify(GraphNet(gated_unet(widths=(4, 8), blocks=1)), seed=0, rows=0.0, gates=0.0)
    with torch.no_grad():
        net.gates["enc0_b0_gate"].zero_()
        net.convs["dec0_b0_conv1"].weight.zero_()  # a whole layer of dead ReLUs: a constant
        net.convs["dec0_b0_conv1"].bias.fill_(0.7)
    small = compact(net)
    names = {n["name"] for n in small.spec["nodes"]}
    assert not {"enc0_b0_conv1", "enc0_b0_conv2", "dec0_b0_conv1"} & names
    x = torch.randn(1, 1, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(net.double()(x), small.double()(x))


def test_gated_branches_are_the_convolutions_feeding_a_gated_sum_input():
    spec = gated_unet(widths=(4, 8), blocks=1)
    blocks = [f"{level}_b0" for level in ("enc0", "enc1", "dec0")]
    assert gated_branches(spec) == {
        **{f"{b}_gate": [f"{b}_conv2", f"{b}_conv1"] for b in blocks},
        "skip_input": [],  # the global residual's gate is on the input itself
    }  # the skip gates sit on convolution inputs, not on sums


def test_thin_branches_are_switched_off_exactly():
    net = _sparsify(GraphNet(gated_unet(widths=(8, 16), blocks=1)), seed=3, rows=0.0, gates=0.0)
    with torch.no_grad():
        net.convs["enc1_b0_conv1"].weight[2:] = 0  # a two-channel bottleneck
    assert drop_thin_branches(net, 2) == []  # not thinner than 2
    before = compact(net)
    assert drop_thin_branches(net, 3) == ["enc1_b0_gate"] and float(net.gates["enc1_b0_gate"].detach()) == 0
    assert drop_thin_branches(net, 3) == []  # already off
    small = compact(net)
    names = {n["name"] for n in small.spec["nodes"]}
    assert not {"enc1_b0_conv1", "enc1_b0_conv2"} & names and "dec0_b0_conv1" in names
    assert flops(small.spec, (32, 32)) < flops(before.spec, (32, 32))
    x = torch.randn(1, 1, 20, 20, dtype=torch.float64)
    torch.testing.assert_close(net.double()(x), small.double()(x), atol=1e-5, rtol=0)


def test_unread_channels_are_removed():
    net = _sparsify(
        GraphNet(gated_unet(widths=(4, 8), blocks=0, residual=False)), seed=1, rows=0.0, gates=1.0
    )
    with torch.no_grad():
        net.convs["dec0"].weight[:, 1] = 0  # channel 1 of the upsampled input is never read
        net.convs["head"].weight[:, 2] = 0  # dec0's channel 2 is never read
    small = compact(net)
    assert small.convs["dec0"].out_channels == 3
    x = torch.randn(1, 1, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(net.double()(x), small.double()(x))


def test_channel_report():
    net = _sparsify(GraphNet(gated_unet(widths=(4, 8))), seed=2)
    report = channel_report(net)
    assert report["total_channels"] == sum(c.out_channels for c in net.convs.values())
    assert 0 < report["active_channels"] < report["total_channels"]
    assert report["active_gates"] == sum(1 for p in net.gates.values() if float(p.detach()) != 0)


def test_save_and_load_round_trip(tmp_path):
    net = compact(_sparsify(GraphNet(gated_unet(widths=(4, 8))), seed=3))
    weights, description = save_graph(net, tmp_path / "model", metadata={"task": "denoise"})
    assert weights.suffix == ".safetensors" and description.suffix == ".json"
    document = json.loads(description.read_text())
    assert document["metadata"] == {"task": "denoise"} and document["graph"]["format"] == FORMAT
    loaded, meta = load_graph(tmp_path / "model.json")
    x = torch.randn(1, 1, 24, 24)
    torch.testing.assert_close(loaded(x), net(x))
    assert meta["task"] == "denoise"


def test_corrupt_model_files_are_input_errors(tmp_path):
    net = GraphNet(gated_unet(widths=(4, 8)))
    weights, description = save_graph(net, tmp_path / "m")
    raw = weights.read_bytes()
    weights.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="cannot read weights"):
        load_graph(tmp_path / "m")
    save_graph(net, tmp_path / "m")
    description.write_text("{not json")
    with pytest.raises(InputError, match="not a recon network"):
        load_graph(tmp_path / "m")
    other = GraphNet(gated_unet(widths=(4, 6)))
    save_graph(net, tmp_path / "m")
    save_graph(other, tmp_path / "o")
    (tmp_path / "o.safetensors").replace(tmp_path / "m.safetensors")
    with pytest.raises(InputError, match="do not match"):
        load_graph(tmp_path / "m")
    with pytest.raises(InputError, match="not found"):
        load_graph(tmp_path / "absent")


def test_building_networks_leaves_the_global_rng_alone():
    from recon import get_registry

    state = torch.get_rng_state()
    GraphNet(gated_unet(widths=(4, 8)))
    get_registry("networks").build("unet", in_channels=1, out_channels=1, scales=2)
    get_registry("networks").build("dncnn", in_channels=1, out_channels=1, depth=3)
    assert torch.equal(torch.get_rng_state(), state)


def _chain(widths: tuple[int, int]) -> dict:
    """input → a → b → head (1 channel) → output = head + input: head is tied to the output."""
    return {
        "format": FORMAT,
        "in_channels": 1,
        "gates": {},
        "nodes": [
            {"name": "a", "op": "conv", "inputs": ["input"], "out": widths[0]},
            {"name": "b", "op": "conv", "inputs": ["a"], "out": widths[1]},
            {"name": "head", "op": "conv", "inputs": ["b"], "out": 1, "act": "none"},
            {"name": "out", "op": "add", "inputs": ["head", "input"], "channels": 1},
        ],
        "output": "out",
    }


def test_aligned_widths_round_up_within_the_growth_limit():
    spec = _chain((5, 13))
    free = {"input": 1, "head": 1, "out": 1}
    assert aligned_widths(spec, 8, float("inf")) == {**free, "a": 8, "b": 16}
    assert aligned_widths(spec, 8, 0.25) == {**free, "a": 5, "b": 16}  # 8/5 = 1.6, 16/13 = 1.23
    assert aligned_widths(spec, 8, 0.0) == {**free, "a": 5, "b": 13}
    assert aligned_widths(spec, 4, 0.0) == aligned_widths(_chain((5, 13)), 1, 9.0)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("family", ["unet", "autoencoder", "unet-unshuffled"])
def test_alignment_pads_channels_with_zeros_and_keeps_outputs(seed, family):
    small = compact(_sparsify(GraphNet(_family(family, (6, 12, 24))), seed)).double()
    aligned = align_channels(small, 8, max_growth=float("inf"))
    before, after = node_channels(small.spec), node_channels(aligned.spec)
    tied = {n for n in before if after[n] % 8}  # widths tied to the input / output keep theirs
    assert {"input", small.spec["output"]} <= tied and all(after[n] == before[n] for n in tied)
    assert all(after[n] == -(-before[n] // 8) * 8 for n in set(before) - tied)
    assert any(after[n] > before[n] for n in before)  # the random widths are not all aligned already
    assert flops(aligned.spec, (32, 32)) > flops(small.spec, (32, 32))
    x = torch.randn(2, 1, 31, 34, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(aligned(x), small(x), atol=1e-10, rtol=1e-10)  # summation order
    assert align_channels(small, 8, max_growth=0.0).spec["nodes"] == small.spec["nodes"]  # nothing fits
    with pytest.raises(ValueError):
        align_channels(small, 0)


def test_inference_network_is_aligned_channels_last_and_exact():
    net = compact(_sparsify(GraphNet(_family("unet-unshuffled", (6, 12, 24))), seed=4)).eval()
    fast = inference_network(net)
    assert not fast.training and all(
        p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.dim() == 4
    )
    assert node_channels(fast.spec) == aligned_widths(fold_into_convs(net).spec, 8, 0.1)
    x = torch.randn(1, 1, 40, 36, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net(x)
        error = float((fast(x) - expected).abs().max())
    assert error <= 1e-5 * float(expected.abs().max())  # float32 rounding (outputs reach ~200 here)
    plain = torch.nn.Conv2d(1, 1, 3)
    assert inference_network(plain) is plain  # not a GraphNet: left alone


def test_sum_gates_and_placements_fold_into_the_convolutions_they_read():
    """a (ReLU, gate −0.5: not foldable) and b (no activation, gate 0.7) land on channels of s,
    which adds a constant offset."""
    spec = {
        "format": FORMAT,
        "in_channels": 1,
        "gates": {"ga": -0.5, "gb": 0.7},
        "nodes": [
            {"name": "a", "op": "conv", "inputs": ["input"], "out": 3},
            {"name": "b", "op": "conv", "inputs": ["input"], "out": 2, "act": "none"},
            {"name": "s", "op": "add", "inputs": ["a", "b"], "gates": ["ga", "gb"], "channels": 4,
             "take": [[2, 0, 1], None], "to": [[0, 1, 3], [2, 3]], "offset": True},
            {"name": "out", "op": "conv", "inputs": ["s"], "out": 1, "act": "none"},
        ],
        "output": "out",
    }  # fmt: skip
    net = GraphNet(spec).double()
    net.offset_s.copy_(torch.tensor([0.5, -1.0, 2.0, 0.25]))
    folded = fold_into_convs(net)
    s = next(n for n in folded.spec["nodes"] if n["name"] == "s")
    assert s["gates"] == ["ga", None] and not {"take", "to", "offset"} & set(s)  # the offset: into b's bias
    assert folded.convs["a"].out_channels == folded.convs["b"].out_channels == 4
    x = torch.randn(2, 1, 9, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_folding_a_compacted_unet_keeps_outputs_and_removes_per_input_work(seed):
    small = compact(_sparsify(GraphNet(_family("unet-unshuffled", (6, 12, 24))), seed, gates=0.0)).double()
    folded = fold_into_convs(small)

    def per_input_work(net: GraphNet) -> int:  # gates and placements on sum inputs, offsets
        sums = [n for n in net.spec["nodes"] if n["op"] == "add"]
        gates = sum(g is not None for n in sums for g in n.get("gates") or [])
        offsets = sum(bool(n.get("offset")) for n in sums)
        return gates + offsets + sum(t is not None for n in sums for t in n.get("take") or [])

    assert per_input_work(folded) < per_input_work(small)
    x = torch.randn(1, 1, 30, 26, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), small(x), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("spec", [gated_unet(1, 1, widths=(4, 8), blocks=1), gated_autoencoder(1)])
def test_forward_drops_each_value_after_its_last_reader(spec) -> None:
    nodes = spec["nodes"]
    dead = dead_after(spec)
    read = {src for node in nodes for src in node["inputs"]}
    dropped = [name for names in dead for name in names]
    assert sorted(dropped) == sorted(read - {spec["output"]})  # every value read, dropped once
    for i, names in enumerate(dead):
        for name in names:
            assert name in nodes[i]["inputs"]  # dropped by its reader ...
            assert all(name not in later["inputs"] for later in nodes[i + 1 :])  # ... the last one


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 1, 6), (2, 1, 5, 5), (1, 1, 1, 1)])
def test_channels_last_is_read_from_strides(shape) -> None:
    for t in (torch.rand(shape), torch.rand(shape).contiguous(memory_format=torch.channels_last)):
        assert _channels_last(t) == t.is_contiguous(memory_format=torch.channels_last)
    assert not _channels_last(torch.rand(shape).transpose(2, 3)[..., :1, :]) or shape[2] == 1


def test_vmap_over_weight_sets_matches_one_call_per_set() -> None:
    """torch.func users may vmap a compacted network (channels-last, placed sums) over weight sets."""
    from torch.func import functional_call, vmap

    net = compact(_sparsify(GraphNet(_family("unet-unshuffled", (6, 12, 24))), seed=4)).eval()
    net = net.to(memory_format=torch.channels_last)
    x = torch.randn(1, 1, 24, 20, generator=torch.Generator().manual_seed(2))
    x = x.contiguous(memory_format=torch.channels_last)
    params = dict(net.named_parameters())
    stacked = {k: torch.stack([p.detach(), 1.5 * p.detach()]) for k, p in params.items()}
    with torch.no_grad():
        batched = vmap(lambda p: functional_call(net, p, (x,)))(stacked)
        for i in range(2):
            one = functional_call(net, {k: v[i] for k, v in stacked.items()}, (x,))
            error = float((batched[i] - one).abs().max())
            assert error <= 1e-5 * float(one.abs().max())  # float32 rounding (outputs reach ~100s)
