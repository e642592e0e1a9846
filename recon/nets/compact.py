r"""Compaction: rebuild a sparse GraphNet as a smaller dense GraphNet with the same outputs.

1. **Constant channels** (forward pass over the graph). An output channel of a convolution is
   *live* when some non-zero kernel reads a live input channel; otherwise it is spatially constant,
   :math:`c_o = \mathrm{act}(b_o + \sum_i c_i \sum_{u,v} W_{o,i,u,v})` (exact, because reflect padding
   and bilinear resizing keep constants constant). A zero gate makes its input constant 0; a zero
   residual-block gate removes the block.
2. **Used channels** (backward pass). A live channel is kept only if a kept consumer reads it.
3. **Rebuild.** Kept rows and columns are sliced out; constant inputs are folded into the
   consumers' biases (or the offsets of sums); gates on convolution inputs are folded into the
   weights; sums get ``take``/``to`` channel maps where their inputs lost different channels.

The result is a plain :class:`~recon.nets.graph.GraphNet` (loadable from JSON + safetensors).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from recon.nets.graph import GraphNet, flops, graph_like, node_channels


def _gate(net: GraphNet, gate: str | None) -> float:
    return 1.0 if gate is None else float(net.gates[gate].detach())


@torch.no_grad()
def compact(net: GraphNet, tol: float = 0.0) -> GraphNet:
    """A dense GraphNet without the zero groups of ``net`` (weights with ``|w| <= tol`` count as 0)."""
    spec = net.spec
    nodes = spec["nodes"]
    channels = node_channels(spec)
    output = spec["output"]
    params = {k: v.detach().double().cpu() for k, v in net.state_dict().items()}
    live: dict[str, Tensor] = {"input": torch.ones(channels["input"], dtype=torch.bool)}
    value: dict[str, Tensor] = {"input": torch.zeros(channels["input"], dtype=torch.float64)}
    reads: dict[str, Tensor] = {}  # conv: (out, in) "kernel is non-zero"
    folded: dict[str, Tensor] = {}  # conv: bias + contribution of constant inputs (before act)

    def gated_inputs(node: dict[str, Any]) -> list[tuple[str, float]]:
        return [
            (src, _gate(net, g))
            for src, g in zip(node["inputs"], node.get("gates") or [None] * len(node["inputs"]), strict=True)
        ]

    # 1. forward: which channels are live, and the value of the constant ones
    for node in nodes:
        name, op = node["name"], node["op"]
        if op == "conv":
            w, b = params[f"convs.{name}.weight"], params[f"convs.{name}.bias"]
            live_in = torch.cat([live[s] & (g != 0) for s, g in gated_inputs(node)])
            val_in = torch.cat([value[s] * g for s, g in gated_inputs(node)])
            reads[name] = w.abs().amax(dim=(2, 3)) > tol
            folded[name] = b + w.sum(dim=(2, 3)) @ torch.where(live_in, 0.0, val_in)
            live[name] = (reads[name] & live_in[None, :]).any(dim=1)
            value[name] = (
                folded[name].clamp_min(0) if node.get("act", "relu") == "relu" else folded[name].clone()
            )
        elif op == "add":
            width = channels[name]
            lv = torch.zeros(width, dtype=torch.bool)
            val = params.get(f"offset_{name}", torch.zeros(width, dtype=torch.float64)).clone()
            for i, (src, g) in enumerate(gated_inputs(node)):
                take, to = _maps(node, i, channels[src], width)
                lv[to] |= live[src][take] & (g != 0)
                val[to] += torch.where(live[src][take], 0.0, value[src][take] * g)
            live[name], value[name] = lv, val
        elif op == "upsample":
            live[name], value[name] = live[node["inputs"][0]].clone(), value[node["inputs"][0]].clone()
        else:
            live[name] = torch.zeros(channels[name], dtype=torch.bool)
            value[name] = params[f"const_{name}"].clone()

    # 2. backward: which live channels some kept consumer reads
    used = {n: torch.zeros(c, dtype=torch.bool) for n, c in channels.items()}
    used[output][:] = True
    for node in reversed(nodes):
        name, op = node["name"], node["op"]
        keep_out = used[name] & (live[name] | (name == output))
        if op == "conv":
            need = reads[name][keep_out].any(dim=0)
            offset = 0
            for src, g in gated_inputs(node):
                width = channels[src]
                if g != 0:
                    used[src] |= need[offset : offset + width] & live[src]
                offset += width
        elif op == "add":
            for i, (src, g) in enumerate(gated_inputs(node)):
                take, to = _maps(node, i, channels[src], channels[name])
                if g != 0:
                    used[src][take] |= keep_out[to] & live[name][to] & live[src][take]
        elif op == "upsample":
            used[node["inputs"][0]] |= keep_out & live[node["inputs"][0]]

    keep = {n: used[n] & live[n] for n in channels}
    keep["input"] = torch.ones(channels["input"], dtype=torch.bool)
    keep[output] = torch.ones(channels[output], dtype=torch.bool)
    for node in nodes:  # a resize passes on every kept channel of its source
        if node["op"] == "upsample":
            keep[node["name"]] = keep[node["inputs"][0]].clone()

    # 3. rebuild the spec and the weights
    new_nodes: list[dict[str, Any]] = []
    new_params: dict[str, Tensor] = {}
    new_gates: dict[str, float] = {}
    present = {"input"}
    for node in nodes:
        name, op = node["name"], node["op"]
        kept = torch.nonzero(keep[name]).flatten()
        if len(kept) == 0:
            continue
        if op == "conv":
            w = params[f"convs.{name}.weight"]
            columns, sources, offset = [], [], 0
            for src, g in gated_inputs(node):
                width = channels[src]
                if src in present and g != 0 and keep[src].any():
                    idx = torch.nonzero(keep[src]).flatten()
                    columns.append(w[kept][:, offset + idx] * g)
                    sources.append(src)
                offset += width
            bias = folded[name][kept]
            if not sources:  # only constants reach this node (a constant output channel)
                act = bias.clamp_min(0) if node.get("act", "relu") == "relu" else bias
                new_nodes.append({"name": name, "op": "const", "inputs": ["input"], "values": act.tolist()})
                new_params[f"const_{name}"] = act
                present.add(name)
                continue
            new_node = {
                **copy.deepcopy(node),
                "inputs": sources,
                "gates": [None] * len(sources),
                "out": len(kept),
            }
            new_nodes.append(new_node)
            new_params[f"convs.{name}.weight"] = torch.cat(columns, dim=1)
            new_params[f"convs.{name}.bias"] = bias
        elif op == "add":
            position = {int(c): j for j, c in enumerate(kept)}
            inputs, gates, takes, tos = [], [], [], []
            offset = params.get(f"offset_{name}", torch.zeros(channels[name], dtype=torch.float64)).clone()
            for i, (src, g) in enumerate(gated_inputs(node)):
                take, to = _maps(node, i, channels[src], channels[name])
                # constants of this input that land on kept channels become part of the offset
                const_part = torch.where(live[src][take], 0.0, value[src][take] * g)
                offset[to] += torch.where(keep[src][take], 0.0, const_part)
                if src not in present or g == 0:
                    continue
                src_kept = {int(c): j for j, c in enumerate(torch.nonzero(keep[src]).flatten())}
                pairs = [
                    (src_kept[int(t)], position[int(o)])
                    for t, o in zip(take, to, strict=True)
                    if int(t) in src_kept and int(o) in position
                ]
                if not pairs:
                    continue
                inputs.append(src)
                gate = (node.get("gates") or [None] * len(node["inputs"]))[i]
                gates.append(gate)
                if gate is not None:
                    new_gates[gate] = g
                take_new, to_new = (list(t) for t in zip(*pairs, strict=True))
                identity = take_new == list(range(len(src_kept))) and to_new == list(range(len(kept)))
                takes.append(None if identity else take_new)
                tos.append(None if identity else to_new)
            new_node = {"name": name, "op": "add", "inputs": inputs, "gates": gates, "channels": len(kept)}
            if any(t is not None for t in takes) or any(t is not None for t in tos):
                new_node["take"], new_node["to"] = takes, tos
            if bool((offset[kept] != 0).any()):
                new_node["offset"] = True
                new_params[f"offset_{name}"] = offset[kept]
            if not inputs:
                new_nodes.append(
                    {"name": name, "op": "const", "inputs": ["input"], "values": offset[kept].tolist()}
                )
                new_params[f"const_{name}"] = offset[kept]
            else:
                new_nodes.append(new_node)
        elif op == "upsample":
            if any(src not in present for src in node["inputs"]):
                raise NotImplementedError(f"compaction removed the size reference of {name!r}")
            new_nodes.append(copy.deepcopy(node))
        else:
            new_nodes.append({**copy.deepcopy(node), "values": value[name][kept].tolist()})
            new_params[f"const_{name}"] = value[name][kept]
        present.add(name)

    new_spec = {
        **{k: v for k, v in spec.items() if k not in ("nodes", "gates")},
        "gates": new_gates,
        "nodes": new_nodes,
    }
    gates = {f"gates.{name}": torch.tensor(value) for name, value in new_gates.items()}
    return graph_like(net, new_spec, {**new_params, **gates})


def _maps(node: dict[str, Any], i: int, in_width: int, out_width: int) -> tuple[Tensor, Tensor]:
    """Channel maps of input ``i`` of an add node: input channels ``take`` go to output ``to``."""
    take = (node.get("take") or [None] * len(node["inputs"]))[i]
    to = (node.get("to") or [None] * len(node["inputs"]))[i]
    take_t = torch.arange(in_width) if take is None else torch.tensor(take, dtype=torch.long)
    to_t = torch.arange(out_width) if to is None else torch.tensor(to, dtype=torch.long)
    return take_t, to_t


def _weights(net: GraphNet) -> int:
    return sum(net.convs[node["name"]].weight.numel() for node in net.conv_nodes())


def compact_weight_fraction(net: GraphNet) -> float:
    """Weights of ``compact(net)`` over the weights of ``net``: the size of the network that is kept.

    Smaller than the non-zero fraction of ``net`` (:func:`recon.sparsity.density`): a live output
    channel's kernels that read switched-off input channels are non-zero but multiply constants, and
    compaction folds them into biases. With channel groups that is most of them (the bundled
    ``denoise-gauss``: 13.3% non-zero, 3.8% kept)."""
    return _weights(compact(net)) / max(_weights(net), 1)


def compact_flop_fraction(net: GraphNet, size: tuple[int, int] = (256, 256)) -> float:
    """FLOPs of ``compact(net)`` over those of ``net`` on one image of ``size``."""
    return flops(compact(net).spec, size) / max(flops(net.spec, size), 1)


def channel_report(net: GraphNet, tol: float = 0.0) -> dict[str, Any]:
    """Per convolution: non-zero output channels / total; per gate: value; overall weight density."""
    convs = {}
    nonzero = total = 0
    for node in net.conv_nodes():
        w = net.convs[node["name"]].weight.detach()
        rows = int((w.abs().amax(dim=(1, 2, 3)) > tol).sum())
        convs[node["name"]] = {"active": rows, "total": int(w.shape[0])}
        nonzero += int((w.abs() > tol).sum())
        total += w.numel()
    gates = {name: float(p.detach()) for name, p in net.gates.items()}
    return {
        "convs": convs,
        "gates": gates,
        "active_channels": sum(c["active"] for c in convs.values()),
        "total_channels": sum(c["total"] for c in convs.values()),
        "active_gates": sum(1 for v in gates.values() if v != 0),
        "density": nonzero / max(total, 1),
    }
