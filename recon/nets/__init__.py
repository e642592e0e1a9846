"""Networks described as graphs (GraphNet), search spaces, compaction."""

from recon.nets.align import align_channels
from recon.nets.branches import branch_pruner, drop_thin_branches, gated_branches
from recon.nets.compact import channel_report, compact, compact_flop_fraction, compact_weight_fraction
from recon.nets.fold import fold_into_convs
from recon.nets.graph import GraphNet, flops, load_graph, save_graph
from recon.nets.inference import inference_network
from recon.nets.search_spaces import GLOBAL_RESIDUAL, gated_autoencoder, gated_unet
from recon.nets.stacked import stacked_forward

__all__ = [
    "GLOBAL_RESIDUAL",
    "GraphNet",
    "align_channels",
    "branch_pruner",
    "channel_report",
    "compact",
    "compact_flop_fraction",
    "compact_weight_fraction",
    "drop_thin_branches",
    "flops",
    "fold_into_convs",
    "gated_autoencoder",
    "gated_branches",
    "gated_unet",
    "inference_network",
    "load_graph",
    "save_graph",
    "stacked_forward",
]
