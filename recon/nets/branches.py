r"""Gated branches, and switching off the ones the search left too thin to pay for their time.

A *gated branch* is the chain of convolutions feeding a gated input of a sum, e.g. a residual block
:math:`h + g\,\mathrm{conv}_2(\mathrm{relu}(\mathrm{conv}_1(h)))`, whose chain is ``conv2 ← conv1``.
Group sparsity often leaves such a branch with a 1–3 channel bottleneck: tiny in FLOPs, but on a CPU
a convolution that thin runs at memory speed (its time follows the activations it reads and
writes, ∝ c·H·W, not its FLOPs, ∝ c²·H·W; ``benchmarks/compact_speed.py``). Measured on the
unshuffled denoisers of BENCHMARKS.md, such branches were a third of a compacted network's time for
a few per cent of its FLOPs. :func:`drop_thin_branches` sets their gates to zero, so that
:func:`~recon.nets.compact.compact` removes them; ``DensityController(prune=...)`` does it when it
freezes the support, and the remaining steps train the network without them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch

from recon.nets.compact import compact
from recon.nets.graph import GraphNet, node_readers


def gated_branches(spec: Mapping[str, Any]) -> dict[str, list[str]]:
    """For each gate on an input of a sum: the convolutions of that input's chain, from the sum
    backwards, each read by the next one only (empty where the gated input is not a convolution,
    e.g. a global residual's gate on ``input``)."""
    nodes = {n["name"]: n for n in spec["nodes"]}
    readers = node_readers(spec)
    branches: dict[str, list[str]] = {}
    for node in spec["nodes"]:
        if node["op"] != "add":
            continue
        for source, gate in zip(node["inputs"], node.get("gates") or [], strict=False):
            if gate is None:
                continue
            chain, current = [], source
            while current in nodes and nodes[current]["op"] == "conv" and readers[current] == 1:
                chain.append(current)
                if len(nodes[current]["inputs"]) != 1:
                    break
                current = nodes[current]["inputs"][0]
            branches[gate] = chain
    return branches


def branch_widths(net: GraphNet) -> dict[str, list[int]]:
    """Per gated branch of ``net``: the output channels of its convolutions after compaction (0 for
    a convolution compaction removes; an empty list for a branch without convolutions)."""
    small = {n["name"]: n for n in compact(net).spec["nodes"]}
    return {
        gate: [int(small[conv]["out"]) if conv in small else 0 for conv in chain]
        for gate, chain in gated_branches(net.spec).items()
    }


@torch.no_grad()
def drop_thin_branches(net: GraphNet, min_width: int) -> list[str]:
    """Zero the gate of every live branch whose compacted convolutions include one with fewer than
    ``min_width`` output channels; returns those gates. ``min_width`` ≤ 1 drops nothing. (A branch
    whose gate is already 0 is not live: compaction removes its convolutions, width 0.)"""
    dropped = [gate for gate, widths in branch_widths(net).items() if widths and 0 < min(widths) < min_width]
    for gate in dropped:
        net.gates[gate].zero_()
    return dropped


def branch_pruner(min_width: int) -> Callable[[GraphNet], list[str]] | None:
    """``drop_thin_branches`` at ``min_width`` as a ``DensityController(prune=)`` (None for ≤ 1)."""
    return partial(drop_thin_branches, min_width=min_width) if min_width > 1 else None
