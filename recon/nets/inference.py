"""The form a network runs in for inference: the same outputs, laid out for speed."""

from __future__ import annotations

import torch
from torch import nn

from recon.nets.align import align_channels
from recon.nets.fold import fold_into_convs
from recon.nets.graph import GraphNet


def inference_network(net: nn.Module) -> nn.Module:
    """The fastest form of ``net`` for inference on its device, with the same outputs (to float
    rounding). On the CPU a GraphNet gets its sums' gates, offsets and placements folded into convolutions
    (:func:`~recon.nets.fold.fold_into_convs`), its channel counts aligned
    (:func:`~recon.nets.align.align_channels`) and the channels-last layout (dense U-Nets run twice
    as fast in it; BENCHMARKS.md, Sparse training). Other networks, and every network on other
    devices (not measured there), are returned as they are."""
    reference = next(iter(net.parameters()), None)
    if not isinstance(net, GraphNet) or reference is None or reference.device.type != "cpu":
        return net
    return align_channels(fold_into_convs(net)).eval().to(memory_format=torch.channels_last)
