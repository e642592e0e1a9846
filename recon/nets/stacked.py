r"""Run a GraphNet with ``K`` stacked weight sets at once: grouped convolutions, shared trunk.

``torch.func.vmap`` over stacked convolution weights works, but on a CPU it is slow: every layer
moves the sample dimension into the channels and back (``movedim``/``reshape`` copies), and reflect
padding goes through a generic batched path. Measured on the bundled ``mri-4x`` network (2×128×128,
two CPU threads, K = 16, ``benchmarks/batched_inference.py``): ``vmap`` 0.38–0.62 s, a Python loop
of K passes 0.25–0.39 s, this executor 0.31–0.40 s with every weight sampled; with the last 3
layers only, ``vmap`` and this executor 0.07–0.10 s against the loop's 0.26–0.38 s.

Every activation that depends on the samples stays in the grouped layout ``(N, K·C, H, W)``
(sample-major channel blocks, channels-last memory) from layer to layer, so that

- a convolution of a shared input with K weight sets is one convolution with K·C_out output
  channels; of grouped inputs, ``conv2d(groups=K)``; a convolution of concatenated inputs is the sum of one
  grouped convolution per input, :math:`W * [a; b] = W_a * a + W_b * b`, with no concatenated copy;
- additions are :func:`recon.nets.graph.add_node` on the channel blocks (its ``take``/``to``
  placement is a grouped 0/1 1×1 convolution);
- padding, ReLU, resizing and additions act on the tensor as it is.

Nodes that depend on no stacked weight and no sample-dependent input are computed once for all
samples (the shared trunk of subnetwork sampling), with the same operations as
:meth:`GraphNet.forward`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from recon.nets.graph import GraphNet, add_node, from_graph_output, to_graph_input, upsample


class _Value:
    """A node's output: ``(N, C, H, W)`` shared by all samples, or ``(N, K·C, H, W)`` grouped."""

    def __init__(self, tensor: Tensor, grouped: bool, channels: int):
        self.tensor, self.grouped, self.channels = tensor, grouped, channels

    def as_grouped(self, k: int) -> Tensor:
        return self.tensor if self.grouped else self.tensor.repeat(1, k, 1, 1)

    def as_5d(self, k: int) -> Tensor:
        """``(N, K, C, H, W)`` (a view for grouped values, a broadcast for shared ones)."""
        t = self.tensor
        if self.grouped:
            return t.reshape(t.shape[0], k, self.channels, *t.shape[-2:])
        return t.unsqueeze(1).expand(-1, k, -1, -1, -1)


def stacked_forward(
    net: GraphNet, params: Mapping[str, Tensor], stacked: set[str], x: Tensor, k: int
) -> Tensor:
    """Outputs ``(K, N, C_out, H, W)`` of ``net`` under ``K`` weight sets.

    ``params`` maps every parameter name to a tensor; those named in ``stacked`` carry a leading
    sample dimension of size ``k``. ``x`` is ``(N, C, H, W)`` (the same input for every sample) or
    ``(K, N, C, H, W)``."""
    size = x.shape[-2:]
    x = to_graph_input(x, net.unshuffle)
    if x.dim() == 5:
        n, c = x.shape[1], x.shape[2]
        start = _Value(x.transpose(0, 1).reshape(n, k * c, *x.shape[-2:]), True, c)
    else:
        start = _Value(x, False, x.shape[1])
    run = _Run(net, params, stacked, k, {"input": start})
    for node, dead in zip(net.spec["nodes"], net.dead_after, strict=True):
        run.values[node["name"]] = run.node(node)
        for src in dead:  # values no later node reads (GraphNet.dead_after)
            del run.values[src]
    return from_graph_output(run.values[net.spec["output"]].as_5d(k).transpose(0, 1), net.unshuffle, size)


@dataclass
class _Run:
    """One evaluation: the network, its (partly stacked) parameters and the node outputs so far."""

    net: GraphNet
    params: Mapping[str, Tensor]
    stacked: set[str]
    k: int
    values: dict[str, _Value] = field(default_factory=dict)

    def node(self, node: Mapping[str, Any]) -> _Value:
        op, inputs = node["op"], node["inputs"]
        if op == "conv":
            return self.conv(node)
        if op == "add":
            gated = self.gated(node)
            grouped = any(v.grouped for v in gated)
            tensors = [v.as_grouped(self.k) if grouped else v.tensor for v in gated]
            widths = [v.channels for v in gated]
            out = add_node(self.net, node, tensors, widths, copies=self.k if grouped else 1)
            return _Value(out, grouped, self.net.channels[node["name"]])
        if op == "upsample":
            src = self.values[inputs[0]]
            like = self.values[inputs[1]].tensor if len(inputs) > 1 else None
            return _Value(upsample(node, src.tensor, like), src.grouped, src.channels)
        const = self.net.constant(node["name"], self.values[inputs[0]].tensor)
        return _Value(const, False, const.shape[1])

    def gated(self, node: Mapping[str, Any]) -> list[_Value]:
        """The node's inputs times their gates (a stacked gate makes the input grouped)."""
        out = []
        for src, gate in zip(node["inputs"], node.get("gates") or [None] * len(node["inputs"]), strict=True):
            value = self.values[src]
            if gate is None:
                out.append(value)
            elif f"gates.{gate}" in self.stacked:
                scaled = value.as_5d(self.k) * self.params[f"gates.{gate}"].view(1, self.k, 1, 1, 1)
                out.append(_Value(scaled.flatten(1, 2), True, value.channels))
            else:
                out.append(_Value(value.tensor * self.params[f"gates.{gate}"], value.grouped, value.channels))
        return out

    def weight(self, conv: str, kind: str) -> Tensor:
        """A convolution's weight or bias with its leading sample dimension (broadcast when shared)."""
        tensor = self.params[f"convs.{conv}.{kind}"]
        return tensor if f"convs.{conv}.{kind}" in self.stacked else tensor.expand(self.k, *tensor.shape)

    def conv(self, node: Mapping[str, Any]) -> _Value:
        name, k = node["name"], self.k
        conv = self.net.convs[name]
        inputs = self.gated(node)
        weight_stacked = bool({f"convs.{name}.weight", f"convs.{name}.bias"} & self.stacked)
        grouped = any(v.grouped for v in inputs)
        mode = conv.padding_mode if conv.padding_mode != "zeros" else "constant"
        pad = (conv.padding[0],) * 4
        if not grouped:
            x = inputs[0].tensor if len(inputs) == 1 else torch.cat([v.tensor for v in inputs], dim=1)
            weight, bias = self.params[f"convs.{name}.weight"], self.params[f"convs.{name}.bias"]
            if weight_stacked:  # one input, K weight sets: one convolution with K·C_out output channels
                weight, bias = self.weight(name, "weight").flatten(0, 1), self.weight(name, "bias").flatten()
            y = F.conv2d(F.pad(x, pad, mode=mode), weight, bias, stride=conv.stride)
        else:
            # conv(cat(a, b), W) = conv(a, W_a) + conv(b, W_b): no concatenated copy of the inputs,
            # and several times faster on a CPU than one grouped convolution of the concatenation
            weight, bias = self.weight(name, "weight"), self.weight(name, "bias").flatten()
            y, first = None, 0
            for value in inputs:
                x = value.as_grouped(k).contiguous(memory_format=torch.channels_last)
                part_weight = weight[:, :, first : first + value.channels].flatten(0, 1)
                first += value.channels
                part = F.conv2d(
                    F.pad(x, pad, mode=mode),
                    part_weight,
                    bias if y is None else None,
                    stride=conv.stride,
                    groups=k,
                )
                y = part if y is None else y + part
        if node.get("act", "relu") == "relu":
            y = F.relu(y)
        return _Value(y, grouped or weight_stacked, int(node["out"]))
