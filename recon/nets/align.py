r"""Channel alignment: pad a GraphNet's channel counts up to multiples of the vector width.

A compacted network keeps whatever channel counts the search left (9, 13, 53 …). oneDNN, which runs
PyTorch's CPU convolutions, works on channels in blocks of the vector width (8 float32 lanes with
AVX2, 16 with AVX-512), and in the channels-last layout an output width that is not a multiple of
8 costs more than the next multiple: on this project's 2-core AMD EPYC (AVX2, one thread) a 3×3
convolution 85 → 13 channels at 128² took 6.0 ms and 85 → 16 4.3 ms, 96 → 9 8.0 ms and 96 → 16
5.8 ms. Wider *inputs*, though, cost their share (17 → 32 took 2.0 ms, 24 → 32 2.7 ms), so a
channel space is padded only when that adds at most ``max_growth`` of its width (default 10%:
13 → 16 is not padded, 15 → 16 and 29 → 32 are); measured on the compacted U-Nets, 10% and 25%
were equally fast and padding everything was slower on some.

:func:`align_channels` appends zero channels: a convolution gets zero kernels and zero biases for
its new output channels (exactly 0 after ReLU or none) and zero weights for the new input channels
it reads; sums, resizes and constants carry zeros. Real channels compute the same sums plus exact
zeros, so outputs agree to float rounding (oneDNN may block the sums differently). The network's
input and output keep their widths, and so does every node tied to them by a one-to-one sum or a
resize (padding those would need a channel placement, which costs more than it saves).

It is an execution layout, like channels-last, not an architecture: saved models keep the widths
the search found (FLOPs as searched), and :func:`recon.nets.inference_network` applies both when a
model runs (``recon reconstruct``). Nothing in PyTorch does this for a graph: oneDNN pads inside one
kernel only, and pruning utilities keep the full shapes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from recon.nets.graph import GraphNet, graph_like, node_channels

MAX_GROWTH = 0.1


def aligned_widths(spec: Mapping[str, Any], multiple: int, max_growth: float) -> dict[str, int]:
    """The width of every node after alignment: its channel count rounded up to ``multiple`` where
    that adds at most ``max_growth`` of it, except for the nodes tied to the input or the output node
    (through one-to-one sums and resizes), which keep their width."""
    channels = node_channels(spec)
    parent = {name: name for name in channels}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for node in spec["nodes"]:
        if node["op"] == "upsample":
            parent[root(node["inputs"][0])] = root(node["name"])
        elif node["op"] == "add":
            takes = node.get("take") or [None] * len(node["inputs"])
            tos = node.get("to") or [None] * len(node["inputs"])
            for src, take, to in zip(node["inputs"], takes, tos, strict=True):
                if take is None and to is None:
                    parent[root(src)] = root(node["name"])
    fixed = {root("input"), root(spec["output"])}
    padded = {name: -(-width // multiple) * multiple for name, width in channels.items()}
    return {
        name: width if root(name) in fixed or padded[name] > width * (1 + max_growth) else padded[name]
        for name, width in channels.items()
    }


@torch.no_grad()
def align_channels(net: GraphNet, multiple: int = 8, max_growth: float = MAX_GROWTH) -> GraphNet:
    """``net`` with its free channel counts padded with zero channels up to multiples of
    ``multiple`` where that adds at most ``max_growth`` (the same outputs; see the module docstring)."""
    if multiple < 1 or not max_growth >= 0:
        raise ValueError(f"need multiple >= 1 and max_growth >= 0, got {multiple}, {max_growth}")
    spec = net.spec
    channels = node_channels(spec)
    width = aligned_widths(spec, multiple, max_growth)
    state = net.state_dict()
    new_state: dict[str, Tensor] = {}
    nodes = []
    for node in spec["nodes"]:
        name, op = node["name"], node["op"]
        new = copy.deepcopy(node)
        if op == "conv":
            new["out"] = width[name]
            weight = state[f"convs.{name}.weight"]
            padded = weight.new_zeros(width[name], sum(width[s] for s in node["inputs"]), *weight.shape[2:])
            offset = new_offset = 0
            for src in node["inputs"]:
                padded[: channels[name], new_offset : new_offset + channels[src]] = weight[
                    :, offset : offset + channels[src]
                ]
                offset, new_offset = offset + channels[src], new_offset + width[src]
            new_state[f"convs.{name}.weight"] = padded
            new_state[f"convs.{name}.bias"] = _pad(state[f"convs.{name}.bias"], width[name])
        elif op == "add":
            new["channels"] = width[name]
            if node.get("take") or node.get("to"):
                new["take"], new["to"] = _explicit_maps(node, channels)
            if node.get("offset"):
                new_state[f"offset_{name}"] = _pad(state[f"offset_{name}"], width[name])
        elif op == "const":
            new["values"] = node["values"] + [0.0] * (width[name] - channels[name])
            new_state[f"const_{name}"] = _pad(state[f"const_{name}"], width[name])
        nodes.append(new)
    return graph_like(net, {**spec, "nodes": nodes}, {**state, **new_state})


def _pad(values: Tensor, width: int) -> Tensor:
    return torch.cat([values, values.new_zeros(width - len(values))])


def _explicit_maps(node: Mapping[str, Any], channels: Mapping[str, int]) -> tuple[list, list]:
    """A sum's ``take``/``to`` maps with every half-given map written out: ``None`` meant all the
    channels of the unpadded width. A map ``None`` on both sides stays so: its input and the sum
    are tied to the same padded width, and a one-to-one sum costs no placement."""
    n = len(node["inputs"])
    takes, tos = node.get("take") or [None] * n, node.get("to") or [None] * n
    for i, src in enumerate(node["inputs"]):
        if (takes[i] is None) != (tos[i] is None):
            takes[i] = takes[i] if takes[i] is not None else list(range(channels[src]))
            tos[i] = tos[i] if tos[i] is not None else list(range(channels[node["name"]]))
    return list(takes), list(tos)
