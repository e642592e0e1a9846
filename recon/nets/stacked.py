r"""Run a GraphNet with ``K`` stacked weight sets at once: grouped convolutions, shared trunk.

``torch.func.vmap`` over stacked convolution weights works, but on a CPU it is slow: every layer
moves the sample dimension into the channels and back (``movedim``/``reshape`` copies), and reflect
padding and channel indexing go through generic batched paths. Measured on the bundled ``mri-4x``
network (2×128×128, two CPU threads, K = 16): ``vmap`` 0.37–0.45 s, a Python loop of K passes
0.21 s, this executor 0.20 s with every weight sampled and 0.10 s with the last layers only.

Every activation that depends on the samples stays in the grouped layout ``(N, K·C, H, W)``
(sample-major channel blocks, channels-last memory) from layer to layer, so that

- a convolution of a shared input with K weight sets is one convolution with K·C_out output
  channels; of grouped inputs, ``conv2d(groups=K)``; a convolution of concatenated inputs is the sum of one
  grouped convolution per input, :math:`W * [a; b] = W_a * a + W_b * b`, with no concatenated copy;
- the ``take``/``to`` channel placement of an addition is a 1×1 grouped convolution with a 0/1
  matrix (exact), which on channels-last tensors beats ``index_select``/``index_add`` several times;
- padding, ReLU, resizing and additions act on the tensor as it is.

Nodes that depend on no stacked weight and no sample-dependent input are computed once for all
samples (the shared trunk of subnetwork sampling), with the same operations as
:meth:`GraphNet.forward`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from recon.nets.graph import GraphNet, upsample


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
    if x.dim() == 5:
        n, c = x.shape[1], x.shape[2]
        start = _Value(x.transpose(0, 1).reshape(n, k * c, *x.shape[-2:]), True, c)
    else:
        start = _Value(x, False, x.shape[1])
    values: dict[str, _Value] = {"input": start}
    for node in net.spec["nodes"]:
        op, name = node["op"], node["name"]
        if op == "conv":
            values[name] = _conv(net, node, params, stacked, values, k)
        elif op == "add":
            values[name] = _add(net, node, params, stacked, values, k)
        elif op == "upsample":
            src = values[node["inputs"][0]]
            like = values[node["inputs"][1]].tensor if len(node["inputs"]) > 1 else None
            values[name] = _Value(upsample(node, src.tensor, like), src.grouped, src.channels)
        else:
            const = net.constant(name, values[node["inputs"][0]].tensor)
            values[name] = _Value(const, False, const.shape[1])
    out = values[net.spec["output"]]
    return out.as_5d(k).transpose(0, 1)


def _gated(
    node: Mapping[str, Any],
    params: Mapping[str, Tensor],
    stacked: set[str],
    values: dict[str, _Value],
    k: int,
) -> list[_Value]:
    """The node's inputs times their gates (a stacked gate makes the input grouped)."""
    out = []
    for src, gate in zip(node["inputs"], node.get("gates") or [None] * len(node["inputs"]), strict=True):
        value = values[src]
        if gate is None:
            out.append(value)
            continue
        g = params[f"gates.{gate}"]
        if f"gates.{gate}" in stacked:
            scaled = value.as_5d(k) * g.view(1, k, 1, 1, 1)
            out.append(_Value(scaled.reshape(scaled.shape[0], -1, *scaled.shape[-2:]), True, value.channels))
        else:
            out.append(_Value(value.tensor * g, value.grouped, value.channels))
    return out


def _conv(
    net: GraphNet,
    node: Mapping[str, Any],
    params: Mapping[str, Tensor],
    stacked: set[str],
    values: dict[str, _Value],
    k: int,
) -> _Value:
    name = node["name"]
    conv = net.convs[name]
    weight, bias = params[f"convs.{name}.weight"], params[f"convs.{name}.bias"]
    inputs = _gated(node, params, stacked, values, k)
    weight_stacked = f"convs.{name}.weight" in stacked or f"convs.{name}.bias" in stacked
    grouped = any(v.grouped for v in inputs)
    mode = conv.padding_mode if conv.padding_mode != "zeros" else "constant"
    pad = (conv.padding[0],) * 4
    if not grouped:
        x = inputs[0].tensor if len(inputs) == 1 else torch.cat([v.tensor for v in inputs], dim=1)
        if weight_stacked:  # one input, K weight sets: one convolution with K·C_out output channels
            weight = _stacked(weight, name, "weight", stacked, k).flatten(0, 1)
            bias = _stacked(bias, name, "bias", stacked, k).flatten()
        y = F.conv2d(F.pad(x, pad, mode=mode), weight, bias, stride=conv.stride)
    else:
        # conv(cat(a, b), W) = conv(a, W_a) + conv(b, W_b): no concatenated copy of the inputs, and
        # several times faster on a CPU than one grouped convolution of the concatenation
        weight = _stacked(weight, name, "weight", stacked, k)
        bias = _stacked(bias, name, "bias", stacked, k).flatten()
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


def _stacked(tensor: Tensor, conv: str, kind: str, stacked: set[str], k: int) -> Tensor:
    """A convolution's weight or bias with its leading sample dimension (broadcast when shared)."""
    return tensor if f"convs.{conv}.{kind}" in stacked else tensor.expand(k, *tensor.shape)


def _add(
    net: GraphNet,
    node: Mapping[str, Any],
    params: Mapping[str, Tensor],
    stacked: set[str],
    values: dict[str, _Value],
    k: int,
) -> _Value:
    inputs = _gated(node, params, stacked, values, k)
    channels = net.channels[node["name"]]
    grouped = any(v.grouped for v in inputs)
    copies = k if grouped else 1  # the channel blocks of the tensors combined below
    tensors = [v.as_grouped(k) if grouped else v.tensor for v in inputs]
    takes = node.get("take") or [None] * len(inputs)
    tos = node.get("to") or [None] * len(inputs)
    out = None
    for value, t, take, to in zip(inputs, tensors, takes, tos, strict=True):
        identity = (take is None or take == list(range(value.channels))) and (
            to is None or to == list(range(channels))
        )
        if not identity:
            # choosing channels and placing them is a 1×1 convolution with a 0/1 matrix (exact): on
            # a channels-last tensor several times faster than index_select / index_add
            t = F.conv2d(t, _placement(take, to, value.channels, channels, copies, t), groups=copies)
        out = t if out is None else out + t
    if node.get("offset"):
        offset = getattr(net, f"offset_{node['name']}").to(out.dtype).repeat(copies)
        out = out + offset.view(1, -1, 1, 1)
    return _Value(out, grouped, channels)


def _placement(
    take: list[int] | None, to: list[int] | None, width: int, channels: int, copies: int, like: Tensor
) -> Tensor:
    """Weights ``(copies·channels, width, 1, 1)`` of the 1×1 convolution that puts input channels
    ``take`` at output channels ``to`` in each of ``copies`` channel blocks."""
    matrix = like.new_zeros(channels, width)
    rows = torch.tensor(to if to is not None else range(channels), device=like.device)
    cols = torch.tensor(take if take is not None else range(width), device=like.device)
    matrix[rows, cols] = 1
    return matrix.repeat(copies, 1)[:, :, None, None]
