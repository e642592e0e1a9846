r"""Fold a sum's per-input work into the convolution that feeds it.

A compacted GraphNet's sums (residual connections) keep two kinds of per-input work: a gate,
:math:`g\,x`, and a channel placement (``take``/``to``: the input's channels land on some of the
sum's channels), which :func:`recon.nets.graph.add_node` runs as a 1×1 convolution with a 0/1
matrix. Both are element-wise passes over a whole activation: in the compacted U-Nets of
BENCHMARKS.md they took a tenth of the time (placements 2.5 ms and gates 0.5 ms of 25 ms).

Where the sum is the only reader of a convolution :math:`c`, both fold into :math:`c` itself:
its output rows are scaled by :math:`g` (exact for ``act`` none, and for ReLU when :math:`g > 0`,
since :math:`\mathrm{relu}(g z) = g\,\mathrm{relu}(z)`) and written straight to the sum's channel
positions (row ``to[j]`` = old row ``take[j]``, the other rows zero, hence 0 after the activation).
The sum then adds whole tensors; a constant ``offset`` of the sum (dead units folded by compaction)
goes into the bias of such a convolution when it has no activation. Outputs agree to float rounding.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from recon.nets.graph import GraphNet, graph_like, node_channels, node_readers


@torch.no_grad()
def fold_into_convs(net: GraphNet) -> GraphNet:
    """``net`` with the gates, channel placements and offsets of sums folded into the convolutions
    that only those sums read (see the module docstring); other nodes are copied as they are."""
    spec = copy.deepcopy(net.spec)
    channels = node_channels(spec)
    readers = node_readers(spec)
    nodes = {node["name"]: node for node in spec["nodes"]}
    state = {k: v.clone() for k, v in net.state_dict().items()}
    gate_values = {name: float(p) for name, p in net.gates.items()}

    def sole_reader_conv(src: str) -> dict[str, Any] | None:
        """The convolution ``src`` when the sum being folded is its only reader."""
        conv = nodes.get(src)
        foldable = conv is not None and conv["op"] == "conv" and readers[src] == 1 and src != spec["output"]
        return conv if foldable else None

    for node in spec["nodes"]:
        if node["op"] != "add":
            continue
        n = len(node["inputs"])
        gates = list(node.get("gates") or [None] * n)
        takes, tos = list(node.get("take") or [None] * n), list(node.get("to") or [None] * n)
        convs = [sole_reader_conv(src) for src in node["inputs"]]
        for i, (src, conv) in enumerate(zip(node["inputs"], convs, strict=True)):
            if conv is None:
                continue
            scale = 1.0 if gates[i] is None else gate_values[gates[i]]
            if gates[i] is not None and (scale > 0 or conv.get("act", "relu") == "none"):
                _scale_rows(state, src, scale)
                gates[i] = None
            if (takes[i] is not None or tos[i] is not None) and _covers(takes[i], channels[src]):
                _place_rows(state, src, takes[i], tos[i], channels[node["name"]])
                conv["out"] = channels[node["name"]]
                takes[i] = tos[i] = None
        node["gates"] = gates
        node.pop("take", None), node.pop("to", None)
        if any(t is not None for t in (*takes, *tos)):
            node["take"], node["to"] = takes, tos
        if node.pop("offset", False):
            _fold_offset(node, convs, state, channels[node["name"]])
    return graph_like(net, spec, state)


def _fold_offset(
    node: dict[str, Any], convs: list[dict[str, Any] | None], state: dict[str, Tensor], width: int
) -> None:
    """A sum's constant offset moved into the bias of an input convolution that only the sum reads,
    covers all its channels one to one (no ``take``/``to`` left), has no gate and no activation
    (exact: the offset is added before nothing else touches it); else the sum keeps it."""
    n = len(node["inputs"])
    takes, tos = node.get("take") or [None] * n, node.get("to") or [None] * n
    for i, (src, conv) in enumerate(zip(node["inputs"], convs, strict=True)):
        if (
            conv is not None
            and conv.get("act", "relu") == "none"
            and conv["out"] == width
            and node["gates"][i] is None
            and takes[i] is None
            and tos[i] is None
        ):
            state[f"convs.{src}.bias"] += state.pop(f"offset_{node['name']}")
            return
    node["offset"] = True


def _covers(take: list[int] | None, width: int) -> bool:
    """Whether a ``take`` map reads every channel of its input once (so the rows can be moved)."""
    return take is None or sorted(take) == list(range(width))


def _scale_rows(state: dict[str, Tensor], conv: str, scale: float) -> None:
    state[f"convs.{conv}.weight"] *= scale
    state[f"convs.{conv}.bias"] *= scale


def _place_rows(
    state: dict[str, Tensor], conv: str, take: list[int] | None, to: list[int] | None, width: int
) -> None:
    """The convolution's output rows ``take`` moved to rows ``to`` of ``width`` (the rest zero)."""
    weight, bias = state[f"convs.{conv}.weight"], state[f"convs.{conv}.bias"]
    take_t = torch.arange(weight.shape[0]) if take is None else torch.tensor(take)
    to_t = torch.arange(width) if to is None else torch.tensor(to)
    placed_w = weight.new_zeros(width, *weight.shape[1:])
    placed_b = bias.new_zeros(width)
    placed_w[to_t], placed_b[to_t] = weight[take_t], bias[take_t]
    state[f"convs.{conv}.weight"], state[f"convs.{conv}.bias"] = placed_w, placed_b
